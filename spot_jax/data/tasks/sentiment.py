"""Sentiment source tasks (SPoT's sentiment family, as far as TFDS has it).

    spot_imdb_reviews_v100           'imdb sentence: <review>' -> negative | positive
                                     (tfds `imdb_reviews/plain_text:1.0.0`)
    spot_yelp_polarity_reviews_v020  'yelp_polarity sentence: <review>' -> negative | positive
                                     (tfds `yelp_polarity_reviews:0.2.0`)
    spot_sentiment140_v100           'sentiment140 sentence: <tweet>' -> negative | neutral |
                                     positive (tfds `sentiment140:1.0.0`, polarity 0/2/4; train
                                     has no neutral tweets, test does)
    spot_goemotions_v010             'goemotions sentence: <comment>' -> the comment's emotions
                                     in GoEmotions' order, ', '-joined ('joy, love')
                                     (tfds `goemotions:0.1.0`, 28 bool features)

IMDB, Yelp and Sentiment140 have no validation split: `validation` (and `test`) read TFDS's
`test`. Texts are kept as TFDS gives them (IMDB's '<br />' markup included). Metrics:
accuracy; GoEmotions exact-set accuracy and per-emotion macro F1. SST-2 is GLUE's
(`spot_glue_sst2_v200`); CR is not in TFDS.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

LABEL_NAMES = ("negative", "positive")
# task -> (tfds name, version, word the input starts with)
TASKS = {
    "imdb_reviews": ("imdb_reviews/plain_text", "1.0.0", "imdb"),
    "yelp_polarity_reviews": ("yelp_polarity_reviews", "0.2.0", "yelp_polarity"),
}
_SPLITS = {"train": "train", "validation": "test", "test": "test"}

SENTIMENT140 = ("sentiment140", "1.0.0")
SENTIMENT140_LABELS = ("negative", "neutral", "positive")
GOEMOTIONS = ("goemotions", "0.1.0")
# tfds goemotions' bool features, in its (the GoEmotions paper's) order.
EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip


def task_name(task: str) -> str:
    return f"spot_{task}_v{TASKS[task][1].replace('.', '')}"


def spec(task: str) -> base.TaskSpec:
    """The TaskSpec of one sentiment task."""
    tfds_name, version, word = TASKS[task]
    return base.TaskSpec(
        name=task_name(task),
        tfds_name=f"{tfds_name}:{version}",
        splits=_SPLITS,
        text_preprocessor=functools.partial(
            preprocessors.text_classification,
            benchmark_name=word,
            label_names=LABEL_NAMES,
            features=(("sentence", "text"),),
        ),
        postprocess_fn=functools.partial(
            postprocessors.string_label_to_class_id, label_classes=LABEL_NAMES
        ),
        metric_fns=[metrics.accuracy],
        label_names=LABEL_NAMES,
    )


def _versioned(name: str, version: str) -> str:
    return f"spot_{name}_v{version.replace('.', '')}"


def sentiment140_preprocessor(dataset):
    """Sentiment140's polarity 0/2/4 as class 0/1/2, then the usual classification text."""

    def to_label(x):
        polarity = tf.cast(x["polarity"], tf.int64)
        known = (polarity >= 0) & (polarity <= 4) & (polarity % 2 == 0)
        # Any other value (none in the real data) is written '<unk>', not an index error.
        return {"text": x["text"], "label": tf.where(known, polarity // 2, -1)}

    dataset = dataset.map(to_label)
    return preprocessors.text_classification(
        dataset,
        benchmark_name="sentiment140",
        label_names=SENTIMENT140_LABELS,
        features=(("sentence", "text"),),
    )


def sentiment140_spec() -> base.TaskSpec:
    name, version = SENTIMENT140
    return base.TaskSpec(
        name=_versioned(name, version),
        tfds_name=f"{name}:{version}",
        splits=_SPLITS,
        text_preprocessor=sentiment140_preprocessor,
        postprocess_fn=functools.partial(
            postprocessors.string_label_to_class_id, label_classes=SENTIMENT140_LABELS
        ),
        metric_fns=[metrics.accuracy],
        label_names=SENTIMENT140_LABELS,
    )


def goemotions_spec() -> base.TaskSpec:
    name, version = GOEMOTIONS
    return base.TaskSpec(
        name=_versioned(name, version),
        tfds_name=f"{name}:{version}",
        splits={"train": "train", "validation": "validation", "test": "test"},
        text_preprocessor=functools.partial(
            preprocessors.multilabel_classification,
            benchmark_name="goemotions",
            text_key="comment_text",
            label_names=EMOTIONS,
        ),
        postprocess_fn=postprocessors.label_set,
        metric_fns=[metrics.accuracy, metrics.mean_label_f1(EMOTIONS)],
    )


def register() -> list[str]:
    """Registers the sentiment tasks (and taskless twins); returns the main task names."""
    return base.register_specs(
        [*(spec(task) for task in TASKS), sentiment140_spec(), goemotions_spec()]
    )
