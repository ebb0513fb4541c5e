"""Translation sources of SPoT's family (WMT, as T5 formats it).

    spot_wmt14_ende_v100   'translate English to German: <en>' -> <de>
                           (tfds `wmt14_translate/de-en:1.0.0`)
    spot_wmt15_enfr_v100   'translate English to French: <en>' -> <fr>
                           (tfds `wmt15_translate/fr-en:1.0.0`)
    spot_wmt16_enro_v100   'translate English to Romanian: <en>' -> <ro>
                           (tfds `wmt16_translate/ro-en:1.0.0`)

T5's `preprocessors.translate` strings from English into the pair's other language, as T5's
`wmt14_ende_v003`, `wmt15_enfr_v003` and `wmt16_enro_v003` tasks read them. The format has no
separate task word, so the `_taskless` twins (registered for every TFDS task) only drop the
word 'translate'. Metric: corpus BLEU with T5's sacreBLEU settings (`metrics.bleu`).
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from spot_jax.data import metrics, postprocessors
from spot_jax.data.tasks import base

VERSION = "1.0.0"
# (WMT year, target language) -> the target language's English name; English is the source.
PAIRS = {("14", "de"): "German", ("15", "fr"): "French", ("16", "ro"): "Romanian"}
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
# Train sentence pairs of the TFDS catalog, for mixture rates before any download.
TRAIN_SIZES = {("14", "de"): 4_508_785, ("15", "fr"): 40_853_298, ("16", "ro"): 610_320}


def task_name(pair: tuple[str, str]) -> str:
    year, target = pair
    return f"spot_wmt{year}_en{target}_v{VERSION.replace('.', '')}"


@seqio.map_over_dataset
def english_to(x: dict, target: str, target_name: str) -> dict:
    """T5's `translate`: 'translate English to <Language>: <en>' -> the translation."""
    prefix = f"translate English to {target_name}: "
    return {"inputs": tf.strings.join([prefix, x["en"]]), "targets": x[target]}


def spec(pair: tuple[str, str]) -> base.TaskSpec:
    """The TaskSpec of one WMT pair, English -> the pair's other language."""
    year, target = pair
    return base.TaskSpec(
        name=task_name(pair),
        tfds_name=f"wmt{year}_translate/{target}-en:{VERSION}",
        splits=_SPLITS,
        text_preprocessor=functools.partial(english_to, target=target, target_name=PAIRS[pair]),
        postprocess_fn=postprocessors.text,
        metric_fns=[metrics.bleu],
    )


def register() -> list[str]:
    """Registers the WMT tasks (and taskless twins); returns the main task names."""
    for pair, size in TRAIN_SIZES.items():
        base.KNOWN_TRAIN_SIZES.setdefault(task_name(pair), size)
    return base.register_specs(spec(pair) for pair in PAIRS)
