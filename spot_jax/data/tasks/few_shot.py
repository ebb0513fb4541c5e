"""Few-shot variants: `<task>_<k>shot_seed<s>`, e.g. `spot_glue_rte_v200_32shot_seed0`.

PPT's protocol (Gu et al. 2022), the default: k = 32 training examples and a disjoint
32-example dev set, both drawn (class-balanced, seeded) from the original train split; the
original validation split becomes `test`:

    split        reads
    train        k examples of the original train split (block 0 of a seeded shuffle)
    validation   the next k examples, disjoint from train (block 1)
    test         the original validation split

`register_all()` registers k=32, seeds 0-2 for SPoT's low-resource targets
(`DEFAULT_TASKS`). Any other (task, k, seed) is registered by `register_few_shot(task, k,
seed)`, or by name with `resolve(name)`, which `spot-jax tasks show` calls; a training job
reaches them by importing a module that calls `register_few_shot` (DatasetConfig.module).
"""

from __future__ import annotations

import functools
import re

import seqio

from spot_jax.data import preprocessors
from spot_jax.data.tasks import base, files, glue, super_glue

DEFAULT_K = 32
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_TASKS = (
    glue.task_name("cola"),
    glue.task_name("stsb"),
    glue.task_name("mrpc"),
    glue.task_name("rte"),
    super_glue.task_name("boolq"),
    super_glue.task_name("cb"),
    super_glue.task_name("copa"),
    super_glue.task_name("wic"),
    super_glue.task_name("wsc"),
    files.CR_NAME,
)
_NAME = re.compile(r"^(?P<task>.+)_(?P<k>\d+)shot_seed(?P<seed>\d+)$")


def few_shot_name(task: str, k: int = DEFAULT_K, seed: int = 0) -> str:
    return f"{task}_{k}shot_seed{seed}"


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, spec, k, subset_seed):
    del shuffle_files, seed  # the subset is fixed by subset_seed; the Task shuffles it
    source = base.data_source(spec)
    rows = spec.examples_of or (lambda ds: ds)  # one row per example (RACE: per question)
    if split == "test":
        return rows(source.get_dataset(split="validation", shuffle=False))
    raw = rows(source.get_dataset(split="train", shuffle=False))
    return preprocessors.few_shot(
        raw,
        k=k,
        seed=subset_seed,
        num_classes=len(spec.label_names) if spec.label_names else 1,
        label_key=spec.label_key if spec.label_names else None,
        class_values=spec.few_shot_classes,
        block=0 if split == "train" else 1,
    )


class _SubsetSource(seqio.FunctionDataSource):
    """k-shot train / dev blocks of known size; `test` is the original validation split,
    whose size TFDS knows only once prepared (seqio asks every split for a size)."""

    def num_input_examples(self, split: str) -> int | None:
        return self._num_input_examples.get(split)


def register_few_shot(task: str, k: int = DEFAULT_K, seed: int = 0) -> str:
    """Registers the k-shot variant of a registered SPoT task; returns its name.

    Classes are read from the spec's `label_key` and balanced over its `few_shot_classes`.

    Raises:
        ValueError: if `task` is not one of the TFDS-backed tasks of `spot_jax`, or has no
            train split (k-shot sets are drawn from it) or no validation split (the test).
    """
    if task not in base.SPECS:
        from spot_jax.data import tasks

        tasks.register_all()
    if task not in base.SPECS:
        raise ValueError(
            f"No catalog task {task!r} to subsample; choose one of {sorted(base.SPECS)}."
        )
    spec = base.SPECS[task]
    if "train" not in spec.splits or "validation" not in spec.splits:
        hint = " (for MNLI: spot_glue_mnli_v200, tested on validation_matched)"
        raise ValueError(
            f"Task {task!r} has no train and validation splits to draw k-shot train/dev sets "
            f"from and to test on (its splits: {sorted(spec.splits)}); subsample a task with "
            f"both{hint if 'mnli' in task else ''}."
        )
    name = few_shot_name(task, k, seed)
    if name in seqio.TaskRegistry.names():
        return name
    seqio.TaskRegistry.add(
        name,
        source=_SubsetSource(
            functools.partial(_dataset_fn, spec=spec, k=k, subset_seed=seed),
            splits=("train", "validation", "test"),
            num_input_examples={"train": k, "validation": k},
        ),
        output_features=base.output_features(),
        preprocessors=base.preprocessor_chain(spec, split_rows=False),
        postprocess_fn=spec.postprocess_fn,
        metric_fns=list(spec.metric_fns),
    )
    return name


def source_task(name: str) -> str:
    """The task a few-shot name subsamples (`spot_glue_rte_v200` for `..._32shot_seed0`), or
    `name` itself when it is no few-shot name."""
    match = _NAME.match(name)
    return match["task"] if match else name


def resolve(name: str) -> str | None:
    """Registers `name` if it is a few-shot name of a known task; returns it, else None."""
    match = _NAME.match(name)
    if not match or match["task"] not in base.SPECS:
        return None
    return register_few_shot(match["task"], int(match["k"]), int(match["seed"]))


def register() -> list[str]:
    """Registers the default few-shot variants."""
    return [
        register_few_shot(task, DEFAULT_K, seed) for task in DEFAULT_TASKS for seed in DEFAULT_SEEDS
    ]
