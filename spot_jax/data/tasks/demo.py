"""`spot_demo_copy_v1`: the foundation's smoke-test SeqIO task.

A tiny, in-memory task that exercises the real SeqIO path (source -> tokenize ->
append EOS -> feature converter -> numpy) with nothing to download: the examples are
generated here, and the ByteVocabulary needs no SentencePiece file (ids < 259).

    inputs:  'copy: plum kiwi fig'      targets: 'plum'

It is not one of SPoT's tasks; the GLUE/SuperGLUE/... catalog lives in its own modules.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from spot_jax.data import metrics, vocab

TASK_NAME = "spot_demo_copy_v1"
SPLIT_SIZES = {"train": 384, "validation": 64}
# Short words keep an input (prefix + up to 5 words) under 48 bytes.
WORDS = (
    'apple', 'pear', 'plum', 'fig', 'kiwi', 'lime', 'date', 'grape',
    'melon', 'peach', 'mango', 'cherry', 'lemon', 'guava', 'olive', 'berry',
)  # fmt: skip
PREFIX = "copy:"
MIN_WORDS, MAX_WORDS = 2, 5
# Fixed so that the examples (and their split membership) never change between runs.
_GENERATOR_SEED = 20220522


def examples(split: str) -> list[tuple[str, str]]:
    """All `(inputs, targets)` string pairs of `split`, in a fixed order.

    Train and validation are drawn from one stream of distinct inputs, so the two splits
    never share an example.

    Raises:
        ValueError: for an unknown split.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"{TASK_NAME} has splits {list(SPLIT_SIZES)}, not {split!r}.")
    rng = np.random.default_rng(_GENERATOR_SEED)
    seen: dict[str, None] = {}  # insertion-ordered set
    total = sum(SPLIT_SIZES.values())
    while len(seen) < total:
        n = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n)]
        seen.setdefault(" ".join([PREFIX, *words]))
    inputs = list(seen)
    start = 0 if split == "train" else SPLIT_SIZES["train"]
    chosen = inputs[start : start + SPLIT_SIZES[split]]
    return [(text, text.split()[1]) for text in chosen]


def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    """SeqIO FunctionDataSource callback: the split as a dataset of string features.

    `shuffle_files` and `seed` are unused: there are no files, and the Task's shuffle
    buffer (larger than the split) does the shuffling, seeded by the caller.

    Returns:
        A dataset of `{'inputs': tf.string, 'targets': tf.string}`.
    """
    del shuffle_files, seed
    pairs = examples(split)
    return tf.data.Dataset.from_tensor_slices(
        {"inputs": [x for x, _ in pairs], "targets": [y for _, y in pairs]}
    )


def normalize_text(text: str | bytes, example=None, is_target: bool = False) -> str:
    """Postprocessor: decoded text, stripped and lower-cased, so case slips don't count."""
    del example, is_target
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text.strip().lower()


def register() -> seqio.Task:
    """Registers the task once; later calls return the registered one (imports may repeat)."""
    if TASK_NAME in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(TASK_NAME)
    features = {
        "inputs": seqio.Feature(vocab.byte_vocabulary(), add_eos=True),
        "targets": seqio.Feature(vocab.byte_vocabulary(), add_eos=True),
    }
    return seqio.TaskRegistry.add(
        TASK_NAME,
        source=seqio.FunctionDataSource(
            dataset_fn, splits=tuple(SPLIT_SIZES), num_input_examples=dict(SPLIT_SIZES)
        ),
        output_features=features,
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos_after_trim,
        ],
        postprocess_fn=normalize_text,
        # Not T5's sequence_accuracy too: its key would replace the Evaluator's own exact-match
        # fraction (eval/sequence_accuracy) with a percent; for one-word targets it equals this.
        metric_fns=[metrics.accuracy],
        # Covers the whole train split, so the shuffle mixes all of it, not a window.
        shuffle_buffer_size=max(SPLIT_SIZES.values()),
    )
