"""Multi-task prompts (prompt-tuning's extended multitask_prompts.py): one prompt shared by every
task, combined with a prompt of each task's own.

Each example names its task by its first input token, a T5 sentinel: task i is `<extra_id_i>`,
id `TASK_INDEX_VOCAB - 1 - i` (prompt-tuning's `sentinel_to_task` with vocab_size 32100, and the
`task_index_*` SeqIO tasks that prepend it, `data.tasks.task_index`). The encoder drops that
token and puts the example's combined prompt where a single-task model puts its prompt.

Params, at prompt-tuning's names: `encoder/prompt/prompt/shared_prompt` [P_s, H] and
`encoder/prompt/prompt/task_prompts/embedding` [num_tasks, T] (one flattened row a task).
How they combine into the [P, H] prompt an example gets (prompt-tuning's classes):

    'add'              the shared [P, H] plus the task's (AddMultiTaskPrompt)
    'concat'           the shared [P - P_t, H] rows, then the task's P_t (ConcatMultiTaskPrompt)
    'concat_features'  the shared [P, H_s] columns, then the task's H - H_s
                       (ConcatFeaturesMultiTaskPrompt)
    'project'          the shared [P, H_s] through the task's affine map to [P, H]
                       (ProjectMultiTaskPrompt: a task row is a [H_s, H] kernel and an [H] bias)
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
COMBINES = ("add", "concat", "concat_features", "project")
# T5's SentencePiece vocabulary: 32000 pieces + 100 sentinels, `<extra_id_0>` = 32099.
TASK_INDEX_VOCAB = data_config.TASK_INDEX_VOCAB


@dataclasses.dataclass(frozen=True)
class MultiTask:
    """How a model's prompt [P, H] splits into shared and per-task parts.

    Args:
      num_tasks: how many task prompts (task indices 0 .. num_tasks - 1).
      combine: one of `COMBINES`.
      task_length: P_t, the task prompts' rows for 'concat' (the shared prompt has the rest).
      shared_features: H_s, the shared prompt's width for 'concat_features' (the task prompts
        have the rest of H) and 'project' (0: H).
    """

    num_tasks: int
    combine: str = "add"
    task_length: int = 0
    shared_features: int = 0

    def check(self, prompt_length: int, embed_dim: int) -> "MultiTask":
        """Refuses a split that does not fit a [prompt_length, embed_dim] prompt."""
        if self.num_tasks < 1:
            raise ValueError(f"a multi-task prompt needs NUM_TASKS >= 1, got {self.num_tasks}")
        if self.num_tasks > TASK_INDEX_VOCAB - 32000:
            raise ValueError(f"NUM_TASKS {self.num_tasks}: T5's 100 sentinels index 100 tasks")
        if self.combine not in COMBINES:
            raise ValueError(f"multi_task_prompt {self.combine!r}: expected one of {COMBINES}")
        is_concat, h_s = self.combine == "concat", self.shared_features
        if is_concat and not 0 < self.task_length < prompt_length:
            raise ValueError(
                f"'concat' multi-task prompts need 0 < TASK_PROMPT_LENGTH < PROMPT_LENGTH "
                f"({prompt_length}), got {self.task_length}: the shared prompt has the rest"
            )
        if not is_concat and self.task_length:
            raise ValueError(f"TASK_PROMPT_LENGTH {self.task_length} is for 'concat' prompts")
        if self.combine == "concat_features" and not 0 < h_s < embed_dim:
            raise ValueError(
                f"'concat_features' multi-task prompts need 0 < SHARED_PROMPT_FEATURES < emb_dim "
                f"({embed_dim}), got {h_s}: the task prompts have the rest"
            )
        if self.combine in ("add", "concat") and h_s or h_s < 0:
            raise ValueError(
                f"SHARED_PROMPT_FEATURES {h_s} is for 'concat_features' and 'project' prompts"
            )
        return self

    def shapes(self, prompt_length: int, embed_dim: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(shared [P_s, H_s], task prompts [num_tasks, flat size]) for a prompt [P, H]."""
        p, h, h_s = prompt_length, embed_dim, self.shared_features or embed_dim
        shared, task = {
            "add": ((p, h), p * h),
            "concat": ((p - self.task_length, h), self.task_length * h),
            "concat_features": ((p, h_s), p * (h - h_s)),
            "project": ((p, h_s), h_s * h + h),  # a task's [H_s, H] kernel and [H] bias
        }[self.combine]
        return shared, (self.num_tasks, task)

    def combined(self, shared: Array, task_rows: Array) -> Array:
        """shared [P_s, H_s] and task rows [..., flat size] -> the prompts [..., P, H], as
        prompt-tuning's add_, concat_, concat_features_shared_and_tasks and
        project_shared_with_tasks make them."""
        lead, (p, h_s) = task_rows.shape[:-1], shared.shape
        if self.combine == "project":
            h = task_rows.shape[-1] // (h_s + 1)
            kernel = task_rows[..., : h_s * h].reshape(lead + (h_s, h))
            bias = task_rows[..., h_s * h :]
            return jnp.einsum("ps,...sh->...ph", shared, kernel) + bias[..., None, :]
        if self.combine == "concat_features":
            tasks = task_rows.reshape(lead + (p, -1))
            return jnp.concatenate([jnp.broadcast_to(shared, lead + shared.shape), tasks], -1)
        tasks = task_rows.reshape(lead + (-1, h_s))
        shared = jnp.broadcast_to(shared, lead + shared.shape)
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
