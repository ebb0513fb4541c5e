"""C4 unsupervised sources: `spot_c4_span_corruption_v310`, `spot_c4_prefix_lm_v310`.

    spot_c4_span_corruption_v310  C4 text -> T5 span corruption (15% noise, mean span 3):
                                  'Thank you <extra_id_0> me to your party <extra_id_1>' ->
                                  '<extra_id_0> for inviting <extra_id_1> last week.'
    spot_c4_prefix_lm_v310        C4 text -> a random prefix in, the rest out (SPoT's "C4 prefix
                                  LM" source; T5's `c4_v220_prefix_lm` on a newer C4)

Both read tfds `c4/en:3.1.0` (its `text`), as T5's C4 tasks do: the text is tokenized first
and the objective runs on token ids, after the cache point. They have no task word, so no
taskless twin. Metric: none (pretraining objectives; eval reports loss and token accuracy).
Span corruption needs TASK_FEATURE_LENGTHS targets >= `denoising.span_corruption_lengths`
(114 for inputs 512).
"""

from __future__ import annotations

import functools

import seqio

from spot_jax.data import denoising
from spot_jax.data.tasks import base

C4_TFDS = "c4/en:3.1.0"
_VERSION = "v310"
SPAN_CORRUPTION_NAME = f"spot_c4_span_corruption_{_VERSION}"
PREFIX_LM_NAME = f"spot_c4_prefix_lm_{_VERSION}"
_SPLITS = {"train": "train", "validation": "validation"}
# tfds c4/en 3.1.0 documents (the catalog's count), for mixture rates before any download.
C4_TRAIN_DOCUMENTS = 364_868_892

OBJECTIVES = {
    SPAN_CORRUPTION_NAME: denoising.span_corruption,
    PREFIX_LM_NAME: denoising.prefix_lm,
}


def _chain(objective) -> list:
    return [
        functools.partial(seqio.preprocessors.rekey, key_map={"inputs": None, "targets": "text"}),
        seqio.preprocessors.tokenize,
        seqio.CacheDatasetPlaceholder(),
        objective,
        seqio.preprocessors.append_eos_after_trim,
    ]


def register() -> list[str]:
    """Registers both C4 objectives once; returns their names."""
    for name, objective in OBJECTIVES.items():
        base.KNOWN_TRAIN_SIZES.setdefault(name, C4_TRAIN_DOCUMENTS)
        if name in seqio.TaskRegistry.names():
            continue
        seqio.TaskRegistry.add(
            name,
            source=base.TfdsSource(tfds_name=C4_TFDS, splits=dict(_SPLITS)),
            output_features=base.output_features(),
            preprocessors=_chain(objective),
            metric_fns=[],
        )
    return list(OBJECTIVES)
