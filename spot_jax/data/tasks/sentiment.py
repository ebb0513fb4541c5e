"""Sentiment source tasks (SPoT's sentiment family, as far as TFDS has it).

    spot_imdb_reviews_v100           'imdb_reviews text: <review>' -> negative | positive
                                     (tfds `imdb_reviews/plain_text:1.0.0`)
    spot_yelp_polarity_reviews_v020  'yelp_polarity_reviews text: <review>' -> negative |
                                     positive (tfds `yelp_polarity_reviews:0.2.0`)
    spot_sentiment140_v100           'sentiment140 text: <tweet>' -> negative | neutral |
                                     positive (tfds `sentiment140:1.0.0`, polarity 0/2/4; train
                                     has no neutral tweets, test does)
    spot_goemotions_v010             'goemotions comment: <comment>' -> the comment's emotions
                                     in TFDS feature order, ' \\n '-joined ('joy \\n love')
                                     (tfds `goemotions:0.1.0`, 28 bool features)

The strings are those of SPoT's published sentiment code (google-research/prompt-tuning
fbfab63, `spot/data/sentiment.py` and `spot/data/preprocessors.py`): the task word is the TFDS
dataset name, the key is the TFDS feature name ('comment' for GoEmotions), and inputs are
joined with T5's `_string_join` (whitespace runs collapsed; IMDB's '<br />' markup stays).
One deliberate difference: that commit's `preprocess_text_classification` also appended
'None:' to single-text inputs (`f'{text_b_key}:'` with no second text), which its own tests
contradict and the repository's later version removed; we write no 'None:'.

IMDB, Yelp and Sentiment140 have no validation split: `validation` (and `test`) read TFDS's
`test`. Metrics: accuracy; GoEmotions exact-set accuracy and per-emotion macro F1. SST-2 is
GLUE's (`spot_glue_sst2_v200`); CR is read from SentEval's files (`files`).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

LABEL_NAMES = ("negative", "positive")
# task -> (tfds name, version, word the input starts with)
TASKS = {
    "imdb_reviews": ("imdb_reviews/plain_text", "1.0.0", "imdb_reviews"),
    "yelp_polarity_reviews": ("yelp_polarity_reviews", "0.2.0", "yelp_polarity_reviews"),
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
            features=(("text", "text"),),
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
        features=(("text", "text"),),
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
        label_key="polarity",
        # Polarity 0 (negative) and 4 (positive): the train split has no neutral (2) tweets.
        few_shot_classes=(0, 4),
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
            text_word="comment",
        ),
        postprocess_fn=postprocessors.label_set,
        metric_fns=[metrics.accuracy, metrics.mean_label_f1(EMOTIONS)],
    )


def register() -> list[str]:
    """Registers the sentiment tasks (and taskless twins); returns the main task names."""
    return base.register_specs(
        [*(spec(task) for task in TASKS), sentiment140_spec(), goemotions_spec()]
    )
