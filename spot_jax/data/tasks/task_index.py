"""Task-index variants of tasks, for multi-task prompts (prompt-tuning's `task_index_*` tasks).

A multi-task prompt (`models.multi_task_prompt`) picks each example's task prompt by the
example's first input token, task i's sentinel `<extra_id_i>` (id 32099 - i, as prompt-tuning's
`add_sentinel_to_beginning(field='inputs', offset=i)` adds it after tokenizing). Here any
registered task gets such a variant, and any tasks a mixture of them, by name alone, so a run's
config.gin reproduces its data:

    task_index_<i>__<task>               <task> with `<extra_id_i>` leading every input
    spot_multitask__<task0>__<task1>...  the examples-proportional mixture (SPoT's, as
                                         `spot_mix__`) of task_index_0__<task0>,
                                         task_index_1__<task1>, ...: train a NUM_TASKS = n
                                         multi-task prompt on it, evaluate task i alone on
                                         task_index_<i>__<task i>

The data pipeline registers both kinds on first use (`resolve`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import seqio
import tensorflow as tf

from spot_jax.data import config

PREFIX = config.TASK_INDEX_PREFIX
MIXTURE_PREFIX = config.MULTITASK_PREFIX
MAX_TASKS = 100  # T5's sentinels
_NAME = re.compile(rf"^{PREFIX}(?P<index>\d+)__(?P<task>.+)$")


def task_index_name(index: int, task: str) -> str:
    return f"{PREFIX}{index}__{task}"


def multitask_mixture_name(task_names: Sequence[str]) -> str:
    if any("__" in t for t in task_names):
        raise ValueError(f"task names with '__' cannot be named in a mixture: {task_names}")
    return MIXTURE_PREFIX + "__".join(task_names)


def source_task(name: str) -> str:
    """The task a task-index variant reads (`<task>` of `task_index_<i>__<task>`), or `name`."""
    match = _NAME.match(name)
    return match["task"] if match else name


def task_token(index: int) -> int:
    """Task `index`'s sentinel id, `<extra_id_index>`."""
    return config.TASK_INDEX_VOCAB - 1 - index


def add_task_index(dataset: tf.data.Dataset, index: int) -> tf.data.Dataset:
    """Token preprocessor: `<extra_id_index>` first in every example's (tokenized) inputs."""

    @seqio.map_over_dataset
    def add(example):
        inputs = example["inputs"]
        first = tf.constant([task_token(index)], dtype=inputs.dtype)
        return {**example, "inputs": tf.concat([first, inputs], axis=0)}

    return add(dataset)


def register_task_index(index: int, task_name: str) -> str:
    """Registers `task_index_<index>__<task_name>` (once); returns its name.

    Raises:
      ValueError: `index` is not one of T5's 100 sentinels, `task_name` names no registered
        task (a mixture: index its tasks one by one), or its preprocessors never tokenize.
    """
    if not 0 <= index < MAX_TASKS:
        raise ValueError(f"task index {index}: T5's sentinels index tasks 0..{MAX_TASKS - 1}")
    name = task_index_name(index, task_name)
    if name in seqio.TaskRegistry.names():
        return name
    _ensure_registered(task_name)
    if task_name not in seqio.TaskRegistry.names():
        raise ValueError(
            f"No SeqIO task {task_name!r} to index (a mixture's tasks are indexed one by one: "
            f"name them in a {MIXTURE_PREFIX}<task>__<task> mixture)"
        )
    task = seqio.TaskRegistry.get(task_name)
    chain = list(task.preprocessors)
    tokenizers = (seqio.preprocessors.tokenize, seqio.preprocessors.tokenize_and_append_eos)
    after = [i for i, p in enumerate(chain) if p in tokenizers]
    if not after:
        raise ValueError(
            f"task {task_name!r} has no seqio tokenize step to put its task index after"
        )
    chain.insert(after[0] + 1, functools.partial(add_task_index, index=index))
    seqio.TaskRegistry.add_provider(name, task.replace(name=name, preprocessors=chain))
    return name


def register_multitask_mixture(task_names: Sequence[str]) -> str:
    """Registers `spot_multitask__<task0>__...`: task i's index variant at index i, mixed
    examples-proportionally (SPoT's cap); returns its name."""
    from spot_jax.data import mixtures

    if len(task_names) > MAX_TASKS:
        raise ValueError(f"{len(task_names)} tasks: T5's sentinels index {MAX_TASKS}")
    name = multitask_mixture_name(task_names)
    indexed = [register_task_index(i, t) for i, t in enumerate(task_names)]
    mixtures.register_mixture(name, indexed)
    return name


def resolve(name: str) -> str | None:
    """Registers a task-index variant or multi-task mixture named by `name`; None for other
    names."""
    match = _NAME.match(name)
    if match:
        return register_task_index(int(match["index"]), match["task"])
    if name.startswith(MIXTURE_PREFIX):
        return register_multitask_mixture(name[len(MIXTURE_PREFIX) :].split("__"))
    return None


def _ensure_registered(task_name: str) -> None:
    """Few-shot variants are registered on first use, as the pipeline does."""
    if task_name not in seqio.TaskRegistry.names():
        from spot_jax.data.tasks import few_shot

        few_shot.resolve(task_name)
