"""Summarization tasks of SPoT's list that TFDS has, in SPoT's text-generation format.

    spot_<name>_v<version>   '<name> summarize: <source>' -> the reference summary

    task                 tfds                 source -> target          splits (TFDS)
    aeslc                aeslc:1.0.0          email_body -> subject_line  train/validation/test
    billsum              billsum:3.0.0        text -> summary           train/test (+ca_test)
    cnn_dailymail        cnn_dailymail:3.4.0  article -> highlights     train/validation/test
    gigaword             gigaword:1.2.0       document -> summary       train/validation/test
    multi_news           multi_news:2.1.0     document -> summary       train/validation/test
    newsroom             newsroom:1.0.0       text -> summary           (manual download)
    samsum               samsum:1.0.0         dialogue -> summary       (manual download)
    xsum                 xsum:1.1.0           document -> summary       (manual download)

SPoT's code pins cnn_dailymail 3.2.0 and multi_news 1.0.0; TFDS 4.9 builds 3.4.0 and 2.1.0,
whose texts are the same articles (the newer versions fix encodings and add ids). BillSum has
no validation split: `validation` reads TFDS's `test`. WikiLingua is not in TFDS.
Metric: ROUGE-1/2/L F-measure (`metrics.rouge`).
"""

from __future__ import annotations

import functools

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

# name -> (tfds version, source feature, target feature)
TASKS = {
    "aeslc": ("1.0.0", "email_body", "subject_line"),
    "billsum": ("3.0.0", "text", "summary"),
    "cnn_dailymail": ("3.4.0", "article", "highlights"),
    "gigaword": ("1.2.0", "document", "summary"),
    "multi_news": ("2.1.0", "document", "summary"),
    "newsroom": ("1.0.0", "text", "summary"),
    "samsum": ("1.0.0", "dialogue", "summary"),
    "xsum": ("1.1.0", "document", "summary"),
}
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_NO_VALIDATION = {"train": "train", "validation": "test", "test": "test"}


def task_name(name: str) -> str:
    return f"spot_{name}_v{TASKS[name][0].replace('.', '')}"


def spec(name: str) -> base.TaskSpec:
    """The TaskSpec of one summarization task."""
    version, source_key, target_key = TASKS[name]
    return base.TaskSpec(
        name=task_name(name),
        tfds_name=f"{name}:{version}",
        splits=_NO_VALIDATION if name == "billsum" else _SPLITS,
        text_preprocessor=functools.partial(
            preprocessors.summarization,
            benchmark_name=name,
            source_key=source_key,
            target_key=target_key,
        ),
        postprocess_fn=postprocessors.text,
        metric_fns=[metrics.rouge],
    )


def register() -> list[str]:
    """Registers the summarization tasks (and taskless twins); returns the main task names."""
    return base.register_specs(spec(name) for name in TASKS)
