"""Multi-task prompts (prompt-tuning's extended multitask_prompts.py): one prompt shared by every
task, combined with a prompt of each task's own.

Each example names its task by its first input token, a T5 sentinel: task i is `<extra_id_i>`,
id `TASK_INDEX_VOCAB - 1 - i` (prompt-tuning's `sentinel_to_task` with vocab_size 32100, and the
`task_index_*` SeqIO tasks that prepend it, `data.tasks.task_index`). The encoder drops that
token and puts the example's combined prompt where a single-task model puts its prompt.

Params, at prompt-tuning's names: `encoder/prompt/prompt/shared_prompt` [P_s, H] and
`encoder/prompt/prompt/task_prompts/embedding` [num_tasks, P_t * H] (one flattened row a task).
How they combine into the [P, H] prompt an example gets:

    'add'     P_s = P_t = P; the shared prompt plus the task's (AddMultiTaskPrompt)
    'concat'  P = P_s + P_t; the shared rows, then the task's (ConcatMultiTaskPrompt)
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import axes
from spot_jax.data import config as data_config

Array = jax.Array
COMBINES = ("add", "concat")
# T5's SentencePiece vocabulary: 32000 pieces + 100 sentinels, `<extra_id_0>` = 32099.
TASK_INDEX_VOCAB = data_config.TASK_INDEX_VOCAB


@dataclasses.dataclass(frozen=True)
class MultiTask:
    """How a model's prompt splits into shared and per-task parts.

    Args:
      num_tasks: how many task prompts (task indices 0 .. num_tasks - 1).
      combine: 'add' or 'concat' (`COMBINES`).
      task_length: P_t, the task prompts' rows for 'concat' (the shared prompt has the rest of
        the model's prompt length); 'add' uses the whole length for both.
    """

    num_tasks: int
    combine: str = "add"
    task_length: int = 0

    def check(self, prompt_length: int) -> "MultiTask":
        if self.num_tasks < 1:
            raise ValueError(f"a multi-task prompt needs NUM_TASKS >= 1, got {self.num_tasks}")
        if self.num_tasks > TASK_INDEX_VOCAB - 32000:
            raise ValueError(f"NUM_TASKS {self.num_tasks}: T5's 100 sentinels index 100 tasks")
        if self.combine not in COMBINES:
            raise ValueError(f"multi_task_prompt {self.combine!r}: expected one of {COMBINES}")
        if self.combine == "concat" and not 0 < self.task_length < prompt_length:
            raise ValueError(
                f"'concat' multi-task prompts need 0 < TASK_PROMPT_LENGTH < PROMPT_LENGTH "
                f"({prompt_length}), got {self.task_length}: the shared prompt has the rest"
            )
        if self.combine == "add" and self.task_length not in (0, prompt_length):
            raise ValueError(
                f"'add' multi-task prompts are PROMPT_LENGTH ({prompt_length}) rows each; "
                f"TASK_PROMPT_LENGTH {self.task_length} is for 'concat'"
            )
        return self

    def shapes(self, prompt_length: int, embed_dim: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(shared [P_s, H], task prompts [num_tasks, P_t * H]) for a model's prompt [P, H]."""
        task_rows = prompt_length if self.combine == "add" else self.task_length
        shared_rows = prompt_length if self.combine == "add" else prompt_length - task_rows
        return (shared_rows, embed_dim), (self.num_tasks, task_rows * embed_dim)

    def combined(self, shared: Array, task_rows: Array) -> Array:
        """shared [P_s, H] and task rows [..., P_t * H] -> the prompts [..., P, H]."""
        h = shared.shape[-1]
        tasks = task_rows.reshape(task_rows.shape[:-1] + (-1, h))
        shared = jnp.broadcast_to(shared, tasks.shape[:-2] + shared.shape)
        if self.combine == "add":
            return shared + tasks
        return jnp.concatenate([shared, tasks], axis=-2)


def task_index(first_tokens: Array) -> Array:
    """[B] first input tokens (`<extra_id_i>`) -> task indices i."""
    return TASK_INDEX_VOCAB - 1 - first_tokens


class MultiTaskPrompt(nn.Module):
    """The shared and per-task prompt params; returns each example's combined prompt [B, P, H].

    A row of no known task (a padding row of an eval batch: its first token is 0) gets zero
    task rows rather than another task's; `check_task_tokens` refuses real such rows on the
    host before a step."""

    length: int
    multi_task: MultiTask
    initializer: Any  # the shared prompt's (the task prompts: prompt-tuning's U[0, 0.5))
    task_initializer: Any
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, task_ids: Array, embed_dim: int) -> Array:
        shared_shape, tasks_shape = self.multi_task.shapes(self.length, embed_dim)
        shared = self.param(
            "shared_prompt",
            nn.with_logical_partitioning(self.initializer, (axes.PROMPT, axes.PROMPT_EMBED)),
            shared_shape,
            self.param_dtype,
        )
        table = TaskPrompts(
            tasks_shape, self.task_initializer, self.param_dtype, name="task_prompts"
        )()
        known = (task_ids >= 0) & (task_ids < self.multi_task.num_tasks)
        rows = jnp.take(table, jnp.clip(task_ids, 0, self.multi_task.num_tasks - 1), axis=0)
        rows = jnp.where(known[:, None], rows, 0.0)
        return self.multi_task.combined(shared, rows)


class TaskPrompts(nn.Module):
    """The task prompt table at `task_prompts/embedding`, prompt-tuning's name (an Embed)."""

    shape: tuple[int, int]
    initializer: Any
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        return self.param(
            "embedding",
            nn.with_logical_partitioning(self.initializer, (axes.TASKS, axes.TASK_PROMPT)),
            self.shape,
            self.param_dtype,
        )


def check_task_tokens(encoder_input_tokens, multi_task: MultiTask | None) -> None:
    """Refuses (on the host, before the step) inputs that do not lead with one of a multi-task
    model's task sentinels: in the step their rows would get no task prompt."""
    if multi_task is None:
        return
    tokens = np.asarray(encoder_input_tokens)
    first = tokens[np.any(tokens != 0, axis=1), 0]  # padding rows (all 0) are no example
    tasks = TASK_INDEX_VOCAB - 1 - first
    bad = sorted(set(first[(tasks < 0) | (tasks >= multi_task.num_tasks)].tolist()))
    if bad:
        raise ValueError(
            f"inputs leading with token ids {bad[:5]} name no task of this multi-task prompt "
            f"(NUM_TASKS {multi_task.num_tasks}: task i leads with id {TASK_INDEX_VOCAB - 1} - "
            "i, `<extra_id_i>`); train on `task_index_<i>__<task>` tasks or a "
            "`spot_multitask__...` mixture, or raise NUM_TASKS"
        )
