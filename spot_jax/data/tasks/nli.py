"""NLI source tasks in SPoT's format: SNLI, ANLI r1-r3, DocNLI.

    spot_snli_v110       'snli hypothesis: <h> premise: <p>' -> entailment | neutral | contradiction
                         (tfds `snli:1.1.0`; pairs without a gold label (-1) are dropped)
    spot_anli_r1_v010    'anli_r1 hypothesis: <h> context: <c>' -> the same three labels
                         (tfds `anli/r1:0.1.0`; likewise r2, r3, each named by its round)
    spot_doc_nli_v100    'doc_nli hypothesis: <h> premise: <document>' -> not_entailment |
                         entailment (tfds `doc_nli:1.0.0`)

As in SPoT's `spot/data/nli.py` (and T5's MNLI) the hypothesis comes first; ANLI keeps its
TFDS feature name `context` for the premise. SPoT writes each dataset's own name as the task
word (`task_name=dataset`, so 'anli_r1', not 'anli') and joins with T5's `_string_join`, which
collapses whitespace runs (DocNLI's multi-line documents become one line). Metric: accuracy.
"""

from __future__ import annotations

import functools

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

LABEL_NAMES = ("entailment", "neutral", "contradiction")
SNLI_VERSION = "1.1.0"
ANLI_VERSION = "0.1.0"
ANLI_ROUNDS = ("r1", "r2", "r3")
DOC_NLI_VERSION = "1.0.0"
# DocNLI's two classes, in its TFDS ClassLabel order (SPoT's `spot/data/nli.py` too).
DOC_NLI_LABELS = ("not_entailment", "entailment")
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def _version(version: str) -> str:
    return version.replace(".", "")


def snli_task_name() -> str:
    return f"spot_snli_v{_version(SNLI_VERSION)}"


def anli_task_name(round_: str) -> str:
    return f"spot_anli_{round_}_v{_version(ANLI_VERSION)}"


def doc_nli_task_name() -> str:
    return f"spot_doc_nli_v{_version(DOC_NLI_VERSION)}"


def _spec(
    name: str,
    tfds_name: str,
    benchmark: str,
    premise_key: str,
    skip_unlabeled: bool,
    label_names=LABEL_NAMES,
):
    return base.TaskSpec(
        name=name,
        tfds_name=tfds_name,
        splits=_SPLITS,
        text_preprocessor=functools.partial(
            preprocessors.text_classification,
            benchmark_name=benchmark,
            label_names=label_names,
            features=(("hypothesis", "hypothesis"), (premise_key, premise_key)),
            skip_unlabeled=skip_unlabeled,
        ),
        postprocess_fn=functools.partial(
            postprocessors.string_label_to_class_id, label_classes=label_names
        ),
        metric_fns=[metrics.accuracy],
        label_names=label_names,
    )


def snli_spec() -> base.TaskSpec:
    return _spec(snli_task_name(), f"snli:{SNLI_VERSION}", "snli", "premise", True)


def anli_spec(round_: str) -> base.TaskSpec:
    return _spec(
        anli_task_name(round_), f"anli/{round_}:{ANLI_VERSION}", f"anli_{round_}", "context", False
    )


def doc_nli_spec() -> base.TaskSpec:
    return _spec(
        doc_nli_task_name(),
        f"doc_nli:{DOC_NLI_VERSION}",
        "doc_nli",
        "premise",
        False,
        label_names=DOC_NLI_LABELS,
    )


def register() -> list[str]:
    """Registers SNLI, ANLI r1-r3 and DocNLI (and taskless twins); returns the main names."""
    return base.register_specs([snli_spec(), *(anli_spec(r) for r in ANLI_ROUNDS), doc_nli_spec()])
