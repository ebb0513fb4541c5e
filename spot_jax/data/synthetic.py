"""A deterministic, learnable text-to-text source in pure numpy, for tests and benchmarks.

Nothing here imports TensorFlow or SeqIO, so the training core can be exercised (and
benchmarked) on machines without them, e.g. the GPU hosts.

The task: an input is a random run of n tokens from [3, vocab_size) followed by EOS; its
target is the input's first min(n, L-1) tokens in reverse order, followed by EOS. A model
can lower the loss quickly (target tokens are always copies of input tokens) and keep
improving by learning the order, so a falling loss shows that training works.

Example i of a split is a pure function of (seed, split, i). A global batch at step s holds
examples s*B ... s*B+B-1 and shard k takes rows [k*b, (k+1)*b) of it, so any host can start
at any step without replaying the stream.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator, Mapping

import numpy as np

PAD_ID = 0
EOS_ID = 1
# Ids 0, 1, 2 are pad, EOS and UNK in every T5 vocabulary; real tokens start after them.
FIRST_TOKEN_ID = 3
TRAIN_SPLIT = "train"
# Every split other than train is finite and this small, so eval passes stay cheap.
EVAL_SPLIT_SIZE = 64


def _split_key(split: str) -> int:
    # A stable hash: Python's hash() of a str changes with PYTHONHASHSEED between processes.
    return zlib.crc32(split.encode("utf-8"))


def split_size(split: str) -> int | None:
    """Number of examples in `split`; None for the infinite train split."""
    return None if split == TRAIN_SPLIT else EVAL_SPLIT_SIZE


def example(
    index: int,
    *,
    split: str,
    seed: int,
    inputs_length: int,
    targets_length: int,
    vocab_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds example `index` of `split`, unpadded.

    Args:
        index: example number within the split (>= 0).
        split: split name; different splits give different examples.
        seed: dataset seed.
        inputs_length: T; the input including its EOS has at most T tokens.
        targets_length: L; the target including its EOS has at most L tokens.
        vocab_size: token ids are drawn from [3, vocab_size).

    Returns:
        `(inputs [n+1], targets [k+1])` int32, each ending with EOS.
    """
    rng = np.random.default_rng((seed, _split_key(split), index))
    n = int(rng.integers(1, max(inputs_length - 1, 1) + 1))
    tokens = rng.integers(FIRST_TOKEN_ID, vocab_size, size=n, dtype=np.int64)
    k = min(n, targets_length - 1)
    inputs = np.append(tokens, EOS_ID)[:inputs_length]
    targets = np.append(tokens[:k][::-1], EOS_ID)
    return inputs.astype(np.int32), targets.astype(np.int32)


def model_features(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Turns padded task features into EncDecFeatureConverter(pack=False) model features.

    Args:
        inputs: `[b, T]` int32 input ids, EOS-terminated, 0-padded.
        targets: `[b, L]` int32 target ids, EOS-terminated, 0-padded.

    Returns:
        `encoder_input_tokens [b, T]`, `decoder_target_tokens [b, L]`,
        `decoder_input_tokens [b, L]` (targets shifted right, BOS 0 first) and
        `decoder_loss_weights [b, L]` (1 where the target is not padding), all int32.
    """
    inputs = np.asarray(inputs, np.int32)
    targets = np.asarray(targets, np.int32)
    decoder_inputs = np.zeros_like(targets)
    decoder_inputs[:, 1:] = targets[:, :-1]
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets != PAD_ID).astype(np.int32),
    }


def _batch_of(
    indices: np.ndarray,
    *,
    split: str,
    seed: int,
    task_feature_lengths: Mapping[str, int],
    vocab_size: int,
    valid: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Model features for the examples `indices`; rows with valid=False stay all zero."""
    inputs_length = int(task_feature_lengths["inputs"])
    targets_length = int(task_feature_lengths["targets"])
    inputs = np.zeros((len(indices), inputs_length), np.int32)
    targets = np.zeros((len(indices), targets_length), np.int32)
    for row, index in enumerate(indices):
        if valid is not None and not valid[row]:
            continue
        x, y = example(
            int(index),
            split=split,
            seed=seed,
            inputs_length=inputs_length,
            targets_length=targets_length,
            vocab_size=vocab_size,
        )
        inputs[row, : len(x)] = x
        targets[row, : len(y)] = y
    # Skipped rows are all-zero inputs and targets, so every derived feature is zero too.
    return model_features(inputs, targets)


def _check_vocab_size(vocab_size: int | None) -> int:
    if vocab_size is None or vocab_size <= FIRST_TOKEN_ID:
        raise ValueError(
            f"The synthetic source needs DatasetConfig.vocab_size > {FIRST_TOKEN_ID} "
            f"(token ids are drawn from [{FIRST_TOKEN_ID}, vocab_size)); got {vocab_size}."
        )
    return int(vocab_size)


def train_batches(
    *,
    split: str,
    seed: int,
    task_feature_lengths: Mapping[str, int],
    vocab_size: int | None,
    batch_size: int,
    shard_index: int = 0,
    num_shards: int = 1,
    start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite stream of this shard's rows of global batches `start_step, start_step+1, ...`.

    Args:
        split: split to draw from; finite splits are cycled through.
        seed: dataset seed.
        task_feature_lengths: `{'inputs': T, 'targets': L}`.
        vocab_size: token ids lie in [3, vocab_size).
        batch_size: GLOBAL batch size B; must be divisible by `num_shards`.
        shard_index: which host slice, in [0, num_shards).
        num_shards: number of host slices; each yields b = B // num_shards rows.
        start_step: first global batch to produce (resume point).

    Returns:
        An iterator of dicts of `[b, T]` / `[b, L]` int32 arrays (see `model_features`).
    """
    vocab_size = _check_vocab_size(vocab_size)
    b = batch_size // num_shards
    size = split_size(split)

    def indices(step: int) -> np.ndarray:
        rows = step * batch_size + shard_index * b + np.arange(b)
        # Finite splits repeat, as SeqIO's num_epochs=None does.
        return rows if size is None else rows % size

    # A generator expression, not a generator function: bad arguments fail on this call.
    return (
        _batch_of(
            indices(step),
            split=split,
            seed=seed,
            task_feature_lengths=task_feature_lengths,
            vocab_size=vocab_size,
        )
        for step in itertools.count(start_step)
    )


def eval_batches(
    *,
    split: str,
    seed: int,
    task_feature_lengths: Mapping[str, int],
    vocab_size: int | None,
    batch_size: int,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One in-order pass over a finite split; the last global batch is padded with zero rows.

    Every shard yields the same number of batches, ceil(split size / B), so hosts stay in
    lock step even when the last batch is mostly padding.

    Raises:
        ValueError: for the infinite train split.
    """
    vocab_size = _check_vocab_size(vocab_size)
    size = split_size(split)
    if size is None:
        raise ValueError(
            f"The synthetic {split!r} split is infinite and cannot be evaluated in one pass; "
            "use split='validation'."
        )
    b = batch_size // num_shards
    num_batches = -(-size // batch_size)
    starts = [step * batch_size + shard_index * b for step in range(num_batches)]
    return (
        _batch_of(
            start + np.arange(b),
            split=split,
            seed=seed,
            task_feature_lengths=task_feature_lengths,
            vocab_size=vocab_size,
            valid=start + np.arange(b) < size,
        )
        for start in starts
    )


def make_batch(
    batch_size: int,
    task_feature_lengths: Mapping[str, int],
    vocab_size: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The first train batch of the synthetic source, for benchmarks and tests.

    Returns:
        `encoder_input_tokens [batch_size, T]` and the decoder features `[batch_size, L]`.
    """
    return next(
        train_batches(
            split=TRAIN_SPLIT,
            seed=seed,
            task_feature_lengths=task_feature_lengths,
            vocab_size=vocab_size,
            batch_size=batch_size,
        )
    )
