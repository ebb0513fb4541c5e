"""Sentiment source tasks: `spot_imdb_reviews_v100`, `spot_yelp_polarity_reviews_v020`.

    spot_imdb_reviews_v100           'imdb sentence: <review>' -> negative | positive
                                     (tfds `imdb_reviews/plain_text:1.0.0`)
    spot_yelp_polarity_reviews_v020  'yelp_polarity sentence: <review>' -> negative | positive
                                     (tfds `yelp_polarity_reviews:0.2.0`)

Neither TFDS builder has a validation split: `validation` (and `test`) read TFDS's `test`.
The review text is kept as TFDS gives it (IMDB's '<br />' markup included). Metric: accuracy.
"""

from __future__ import annotations

import functools

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

LABEL_NAMES = ("negative", "positive")
# task -> (tfds name, version, word the input starts with)
TASKS = {
    "imdb_reviews": ("imdb_reviews/plain_text", "1.0.0", "imdb"),
    "yelp_polarity_reviews": ("yelp_polarity_reviews", "0.2.0", "yelp_polarity"),
}
_SPLITS = {"train": "train", "validation": "test", "test": "test"}


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


def register() -> list[str]:
    """Registers the sentiment tasks (and taskless twins); returns the main task names."""
    for task in TASKS:
        base.register_spec(spec(task))
    return [task_name(task) for task in TASKS]
