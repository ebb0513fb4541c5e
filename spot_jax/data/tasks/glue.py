"""GLUE tasks in T5's text-to-text format: `spot_glue_<task>_v200` (tfds `glue/<task>:2.0.0`).

    spot_glue_rte_v200     'rte sentence1: <s1> sentence2: <s2>' -> entailment | not_entailment
    spot_glue_stsb_v200    'stsb sentence1: <s1> sentence2: <s2>' -> '3.4' (nearest 0.2)
    spot_glue_mnli_v200    'mnli hypothesis: <h> premise: <p>'; splits train, validation
                           (= validation_matched), validation_mismatched, test_matched, ...
    spot_glue_mnli_mismatched_v200   validation = validation_mismatched (T5's eval twin)

SPoT's own MNLI names (prompt-tuning `spot/data/glue.py`) are registered too, with its
semantics, so SPoT gin configs that name them run: the same MNLI strings, one split each,

    spot_glue_mnli_train_v200                   train only
    spot_glue_mnli_validation_matched_v200      validation = validation_matched
    spot_glue_mnli_validation_mismatched_v200   validation = validation_mismatched

and the mixture `spot_glue_mnli_and_dev_v200` of the three (`mixtures.py`): it trains on
MNLI's train split and evaluates on both validation sets.

Inputs list the text features sorted by name after the task word; labels are TFDS's
`label_classes`, '<unk>' for the unlabeled test split. WNLI is registered although SPoT
leaves it out of GLUE averages.
"""

from __future__ import annotations

import functools

import tensorflow_datasets as tfds

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

VERSION = "2.0.0"
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_MNLI_SPLITS = {
    "train": "train",
    "validation": "validation_matched",
    "validation_matched": "validation_matched",
    "validation_mismatched": "validation_mismatched",
    "test": "test_matched",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}
_MNLI_MISMATCHED_SPLITS = {"validation": "validation_mismatched", "test": "test_mismatched"}


def task_name(task: str) -> str:
    return f"spot_glue_{task}_v{VERSION.replace('.', '')}"


def _metric_fns(task: str) -> list:
    if task == "cola":
        return [metrics.matthews_corrcoef]
    if task in ("mrpc", "qqp"):
        return [metrics.f1_with_invalid, metrics.accuracy]
    if task == "stsb":
        return [metrics.pearson_corrcoef, metrics.spearman_corrcoef]
    return [metrics.accuracy]


def spec(task: str, name: str | None = None, splits=None) -> base.TaskSpec:
    """The TaskSpec of one GLUE task (label names from the TFDS builder config)."""
    config = tfds.text.glue.Glue.builder_configs[task]
    if task == "stsb":
        text_pp = preprocessors.stsb
        postprocess = postprocessors.string_to_float
        label_names = None
    else:
        label_names = tuple(config.label_classes)
        text_pp = functools.partial(
            preprocessors.glue, benchmark_name=task, label_names=label_names
        )
        postprocess = functools.partial(
            postprocessors.string_label_to_class_id, label_classes=label_names
        )
    return base.TaskSpec(
        name=name or task_name(task),
        tfds_name=f"glue/{task}:{VERSION}",
        splits=splits or (_MNLI_SPLITS if task == "mnli" else _SPLITS),
        text_preprocessor=text_pp,
        postprocess_fn=postprocess,
        metric_fns=_metric_fns(task),
        label_names=label_names,
    )


# SPoT's one-split MNLI tasks: name -> splits.
SPOT_MNLI_TASKS = {
    "spot_glue_mnli_train_v200": {"train": "train"},
    "spot_glue_mnli_validation_matched_v200": {"validation": "validation_matched"},
    "spot_glue_mnli_validation_mismatched_v200": {"validation": "validation_mismatched"},
}


def register() -> list[str]:
    """Registers the GLUE tasks (and taskless twins); returns the main task names."""
    mismatched = spec("mnli", name="spot_glue_mnli_mismatched_v200", splits=_MNLI_MISMATCHED_SPLITS)
    spot_mnli = [spec("mnli", name=n, splits=splits) for n, splits in SPOT_MNLI_TASKS.items()]
    return base.register_specs([*(spec(task) for task in TASKS), mismatched, *spot_mnli])
