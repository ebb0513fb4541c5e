"""GEM generation tasks of SPoT's list (tfds `gem/<config>:1.1.0`), in SPoT's format.

    spot_gem_<config>_v110   '<config> [<prefix>] <source>' -> the reference `target`

    config                   input                                            splits (TFDS)
    common_gen               'common_gen c1 \\n c2 \\n c3' (the concepts)     train/validation/test
    dart                     'dart s1 p1 o1 \\n s2 p2 o2' (each triple as     train/validation/test
                             TFDS flattens it, space-joined)
    e2e_nlg                  'e2e_nlg name[X], food[Y], ...' (the MR)         train/validation/test
    schema_guided_dialog     'schema_guided_dialog prompt: p context: t1 \\n  train/validation/test
                             t2 ...' (the user turn, then the dialog so far)
    web_nlg_en               'web_nlg_en s | p | o \\n s | p | o'             train/validation/test
    wiki_auto_asset_turk     'wiki_auto_asset_turk simplify: <sentence>'      train/validation/
                                                                              test_asset/test_turk
    xsum                     'xsum summarize: <document>' (GEM's 23k subset)  train/validation/test
    wiki_lingua_english_en   'wiki_lingua_english_en summarize: <article>'    train/validation/test

As SPoT writes them (prompt-tuning fbfab63: `spot/data/gem.py`, `preprocess_text_generation`
with `source_segment` and `preprocess_gem_schema_guided_dialog`, checked against the golden
strings of its `preprocessors_test.py`): the dataset's name as the task word, list sources
joined by ' \\n ' (a literal backslash-n between spaces, as those tests spell it), single
sources after the task word (and prefix) with whitespace runs collapsed (T5's `_string_join`).
The published registration does not run as is (six TFDS names lack `gem/`; WikiAuto is read
from 'input', GEM's XSum from TFDS `xsum`, whose features differ; its separator literal has two
backslashes where its tests expect one, the one SGD and GoEmotions use; later versions of
prompt-tuning drop `source_segment` and these tasks); the features here are those of TFDS's
`gem` builder.
WikiLingua is SPoT's English config, `gem/wiki_lingua_english_en` (`source` and `target` are
its English article and summary, what SPoT reads from `source_aligned['en']` and
`target_aligned['en']`). SGD's input is SPoT's (prompt and context), not GEM's dialog acts.

Targets are the single `target`: GEM's validation and test sets also list `references`
(several for CommonGen, DART, WebNLG, ASSET), which these metrics do not use; CommonGen's test
split has no targets (''). Metrics, as SPoT: ROUGE-1/2/Lsum and corpus BLEU (`metrics.rouge`,
`metrics.bleu`).
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

VERSION = "1.1.0"
# SPoT's separator of list sources: space, backslash, 'n', space (not a newline).
SEGMENT = " \\n "
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_ASSET_TURK_SPLITS = {
    "train": "train",
    "validation": "validation",
    "test_asset": "test_asset",
    "test_turk": "test_turk",
}
# config -> (source feature, prefix after the task word, source is a list)
TASKS = {
    "common_gen": ("concepts", None, True),
    "dart": ("tripleset", None, True),
    "e2e_nlg": ("meaning_representation", None, False),
    "schema_guided_dialog": ("context", None, True),  # after 'prompt: <prompt>'
    "web_nlg_en": ("input", None, True),
    "wiki_auto_asset_turk": ("source", "simplify:", False),
    "xsum": ("document", "summarize:", False),
    "wiki_lingua_english_en": ("source", "summarize:", False),
}
# Train examples of the TFDS catalog (gem 1.1.0), for mixture rates before any download.
TRAIN_SIZES = {
    "common_gen": 67_389,
    "dart": 62_659,
    "e2e_nlg": 33_525,
    "schema_guided_dialog": 164_982,
    "web_nlg_en": 35_426,
    "wiki_auto_asset_turk": 483_801,
    "xsum": 23_206,
    "wiki_lingua_english_en": 99_020,
}


@seqio.map_over_dataset
def text_generation(
    x: dict, *, benchmark_name: str, source_key: str, prefix: str | None, segmented: bool
) -> dict:
    """'<benchmark> [<prefix>] <source>' -> `target` (SPoT's `preprocess_text_generation`).

    A list source (`segmented`) is joined by ' \\n ' after the collapsed head; a single source
    is joined with the head, every whitespace run then one space. SGD puts 'prompt: <prompt>
    context:' before its list of turns (SPoT's `preprocess_gem_schema_guided_dialog`).
    """
    head = [benchmark_name] + ([prefix] if prefix else [])
    if benchmark_name == "schema_guided_dialog":
        head += ["prompt:", x["prompt"], "context:"]
    if segmented:
        turns = tf.strings.reduce_join(x[source_key], separator=SEGMENT)
        inputs = tf.strings.join([preprocessors.join_collapsing_whitespace(head), " ", turns])
    else:
        inputs = preprocessors.join_collapsing_whitespace([*head, x[source_key]])
    return {"inputs": inputs, "targets": x["target"]}


def task_name(config: str) -> str:
    return f"spot_gem_{config}_v{VERSION.replace('.', '')}"


def spec(config: str) -> base.TaskSpec:
    """The TaskSpec of one GEM config."""
    source_key, prefix, segmented = TASKS[config]
    return base.TaskSpec(
        name=task_name(config),
        tfds_name=f"gem/{config}:{VERSION}",
        splits=_ASSET_TURK_SPLITS if config == "wiki_auto_asset_turk" else _SPLITS,
        text_preprocessor=functools.partial(
            text_generation,
            benchmark_name=config,
            source_key=source_key,
            prefix=prefix,
            segmented=segmented,
        ),
        postprocess_fn=postprocessors.text,
        metric_fns=[metrics.rouge, metrics.bleu],
    )


def register() -> list[str]:
    """Registers the GEM tasks (and taskless twins); returns the main task names."""
    for config, size in TRAIN_SIZES.items():
        base.KNOWN_TRAIN_SIZES.setdefault(task_name(config), size)
    return base.register_specs(spec(config) for config in TASKS)
