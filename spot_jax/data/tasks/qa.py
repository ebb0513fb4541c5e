"""Extractive QA: `spot_squad_v11_v300` (tfds `squad/v1.1:3.0.0`).

    spot_squad_v11_v300   'squad question: <q> context: <c>' -> the first answer

T5's SQuAD strings (punctuation padded with spaces) behind a leading task word, like every
SPoT task (SPoT's MRQA tasks write one too); the `_taskless` twin reads exactly T5's
'question: <q> context: <c>'. The example keeps all answers: `postprocessors.qa` hands them
to `metrics.squad`, which scores EM and F1 against the best of them.
"""

from __future__ import annotations

import functools

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

SQUAD_TFDS = "squad/v1.1:3.0.0"
SQUAD_NAME = "spot_squad_v11_v300"
_SPLITS = {"train": "train", "validation": "validation"}


def squad_spec() -> base.TaskSpec:
    return base.TaskSpec(
        name=SQUAD_NAME,
        tfds_name=SQUAD_TFDS,
        splits=_SPLITS,
        text_preprocessor=functools.partial(preprocessors.squad, benchmark_name="squad"),
        postprocess_fn=postprocessors.qa,
        metric_fns=[metrics.squad],
    )


def register() -> list[str]:
    """Registers SQuAD v1.1 (and its taskless twin); returns the main task name."""
    base.register_spec(squad_spec())
    return [SQUAD_NAME]
