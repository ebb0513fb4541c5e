"""Extractive QA: SQuAD v1.1 and the MRQA shared-task sets TFDS has.

    spot_squad_v11_v300       'squad question: <q> context: <c>' -> the first answer
                              (tfds `squad/v1.1:3.0.0`)
    spot_mrqa_<subset>_v100   '<subset> question: <q> context: <c>' -> the first answer
                              (tfds `mrqa/<subset>:1.0.0`)

T5's SQuAD strings (punctuation padded with spaces) behind a leading task word, as SPoT's
`mrqa` preprocessor writes them; the `_taskless` twin of SQuAD reads exactly T5's
'question: <q> context: <c>'. Examples keep all answers: `postprocessors.qa` hands them to
`metrics.squad`, which scores EM and F1 against the best of them.

MRQA's six in-domain sets (SPoT's MRQA family: squad, news_qa, trivia_qa, search_qa,
hotpot_qa, natural_questions) have train and validation splits. The six out-of-domain sets
(bio_asq, drop, duo_rc, race, relation_extraction, textbook_qa) exist in TFDS only as a test
split, so they are eval-only targets: `validation` and `test` both read it.
"""

from __future__ import annotations

import functools

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

SQUAD_TFDS = "squad/v1.1:3.0.0"
SQUAD_NAME = "spot_squad_v11_v300"
_SPLITS = {"train": "train", "validation": "validation"}

MRQA_VERSION = "1.0.0"
MRQA_IN_DOMAIN = (
    "squad", "news_qa", "trivia_qa", "search_qa", "hotpot_qa", "natural_questions",
)  # fmt: skip
MRQA_OUT_OF_DOMAIN = ("bio_asq", "drop", "duo_rc", "race", "relation_extraction", "textbook_qa")
_TEST_ONLY_SPLITS = {"validation": "test", "test": "test"}


def squad_spec() -> base.TaskSpec:
    return base.TaskSpec(
        name=SQUAD_NAME,
        tfds_name=SQUAD_TFDS,
        splits=_SPLITS,
        text_preprocessor=functools.partial(preprocessors.squad, benchmark_name="squad"),
        postprocess_fn=postprocessors.qa,
        metric_fns=[metrics.squad],
    )


def mrqa_task_name(subset: str) -> str:
    return f"spot_mrqa_{subset}_v{MRQA_VERSION.replace('.', '')}"


def mrqa_spec(subset: str) -> base.TaskSpec:
    """The TaskSpec of one MRQA subset (in-domain: train/validation; else test only)."""
    return base.TaskSpec(
        name=mrqa_task_name(subset),
        tfds_name=f"mrqa/{subset}:{MRQA_VERSION}",
        splits=_SPLITS if subset in MRQA_IN_DOMAIN else _TEST_ONLY_SPLITS,
        text_preprocessor=functools.partial(preprocessors.mrqa, benchmark_name=subset),
        postprocess_fn=postprocessors.qa,
        metric_fns=[metrics.squad],
    )


def register() -> list[str]:
    """Registers SQuAD v1.1 and the MRQA sets (and taskless twins); returns the main names."""
    specs = [squad_spec(), *(mrqa_spec(s) for s in MRQA_IN_DOMAIN + MRQA_OUT_OF_DOMAIN)]
    for spec in specs:
        base.register_spec(spec)
    return [spec.name for spec in specs]
