"""T5's unsupervised objectives on token ids: chunking, noise masks, sentinels (TF inside).

The seqio preprocessors `span_corruption` and `prefix_lm` (T5's C4 objectives), and the pieces
they are built from, following the definitions of Raffel et al. (2020) and T5's C4 tasks:

    document tokens -> one random chunk of <= 65536 tokens
                    -> (span corruption) chunks of 128 documents concatenated
                    -> segments of a fixed length
                    -> a noise mask per segment -> inputs / targets

Span corruption: the mask alternates non-noise and noise spans, starting with non-noise and
ending with noise; round(n * density) noise tokens form round(noise / mean_span) spans, both
partitions drawn uniformly at random. Each noise span becomes one sentinel in the inputs
(`<extra_id_0>`, `<extra_id_1>`, ... = vocab_size - 1, vocab_size - 2, ...), and the targets are
each sentinel followed by the span it hides. Prefix LM: the inputs are a prefix of uniformly
random length in [1, n - 1], the targets the rest.

All randomness is stateless, seeded through `seqio.map_over_dataset(num_seeds=...)`, so a task
read with a fixed seed yields the same examples every time (resume relies on that).
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

# T5 takes one random chunk of at most this many tokens from each C4 document.
MAX_CHUNK_TOKENS = 65536
# Documents concatenated before splitting, so short ones do not leave segments mostly empty.
CONCAT_DOCUMENTS = 128


def span_corruption_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """The segment length whose corrupted inputs (with EOS) just fit `inputs_length`.

    Args:
        inputs_length: the task's encoder length T, EOS included.
        noise_density: fraction of tokens hidden.
        mean_noise_span_length: mean tokens per hidden span.

    Returns:
        (tokens per segment, targets length with sentinels and EOS); e.g. T=512 gives
        (568, 114) for T5's 0.15 / 3.
    """

    def corrupted_lengths(tokens: int) -> tuple[int, int]:
        noise = int(round(tokens * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        # Inputs: kept tokens + one sentinel a span + EOS; targets: hidden + sentinels + EOS.
        return tokens - noise + spans + 1, noise + spans + 1

    tokens = max(inputs_length - 1, 1)
    while corrupted_lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    return tokens, corrupted_lengths(tokens)[1]


def select_random_chunk(
    dataset: tf.data.Dataset, feature_key: str, max_length: int = MAX_CHUNK_TOKENS
) -> tf.data.Dataset:
    """Keeps one random aligned chunk of <= `max_length` tokens a document; drops empty ones.

    Only `feature_key` survives (the other C4 fields are text the objectives do not read).
    """
    dataset = dataset.filter(lambda x: tf.size(x[feature_key]) > 0)

    @seqio.map_over_dataset(num_seeds=1)
    def chunk(x, seed):
        tokens = x[feature_key]
        n = tf.size(tokens)
        num_chunks = (n + max_length - 1) // max_length
        start = max_length * tf.random.stateless_uniform(
            [], seed=seed, minval=0, maxval=num_chunks, dtype=tf.int32
        )
        return {feature_key: tokens[start : tf.minimum(start + max_length, n)]}

    return chunk(dataset)


def concat_documents(
    dataset: tf.data.Dataset, feature_key: str, documents: int = CONCAT_DOCUMENTS
) -> tf.data.Dataset:
    """Concatenates the tokens of every `documents` consecutive examples into one."""
    dataset = dataset.map(lambda x: {feature_key: x[feature_key]})
    dataset = dataset.padded_batch(documents, padded_shapes={feature_key: [-1]})

    def join(x):
        tokens = tf.reshape(x[feature_key], [-1])
        # 0 is padding: real token ids start at 1 (EOS) in every T5 vocabulary.
        return {feature_key: tf.boolean_mask(tokens, tokens != 0)}

    return dataset.map(join, num_parallel_calls=tf.data.AUTOTUNE)


def split_tokens(dataset: tf.data.Dataset, feature_key: str, length: int) -> tf.data.Dataset:
    """Splits each example into consecutive segments of `length` tokens (the last shorter)."""

    def split(x):
        tokens = x[feature_key]
        n = tf.size(tokens)
        segments = (n + length - 1) // length
        padded = tf.pad(tokens, [[0, segments * length - n]])
        sizes = tf.concat([tf.fill([segments - 1], length), [n - (segments - 1) * length]], 0)
        return tf.data.Dataset.from_tensor_slices(
            {"tokens": tf.reshape(padded, [-1, length]), "size": sizes}
        )

    dataset = dataset.filter(lambda x: tf.size(x[feature_key]) > 0).flat_map(split)
    return dataset.map(lambda x: {feature_key: x["tokens"][: x["size"]]})


def _stateless_shuffle(values: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(values), seed=seed))
    return tf.gather(values, order)


def _random_partition(num_items: tf.Tensor, num_parts: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`[num_parts]` positive part sizes summing to num_items, uniform over all such lists."""
    # Choose num_parts - 1 of the num_items - 1 gaps between items as part boundaries.
    is_boundary = tf.cast(tf.range(num_items - 1) < num_parts - 1, tf.int32)
    starts = tf.pad(_stateless_shuffle(is_boundary, seed), [[1, 0]])
    part_of_item = tf.cumsum(starts)
    return tf.math.unsorted_segment_sum(tf.ones_like(part_of_item), part_of_item, num_parts)


def random_spans_noise_mask(
    length: tf.Tensor,
    seeds: tf.Tensor,
    noise_density: float,
    mean_noise_span_length: float,
) -> tf.Tensor:
    """`[length]` bool, True on hidden tokens: alternating spans, non-noise first.

    round(length * density) tokens (at least 1, at most length - 1) are hidden, in
    max(1, round(noise / mean_span)) spans. Lengths below 2 are masked as length 2 and cut.

    Args:
        length: tokens in the segment (scalar int).
        seeds: `[2, 2]` stateless seeds (noise span sizes, then non-noise span sizes).
        noise_density: fraction hidden.
        mean_noise_span_length: mean tokens a hidden span.
    """
    original_length = length
    length = tf.maximum(length, 2)
    as_float = tf.cast(length, tf.float32)
    num_noise = tf.cast(tf.round(as_float * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    noise_sizes = _random_partition(num_noise, num_spans, seeds[0])
    kept_sizes = _random_partition(length - num_noise, num_spans, seeds[1])
    # Span lengths in order: kept_0, noise_0, kept_1, noise_1, ...
    interleaved = tf.reshape(tf.stack([kept_sizes, noise_sizes], axis=1), [-1])
    span_starts = tf.cumsum(interleaved)[:-1]
    starts = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    span_index = tf.cumsum(starts)
    return tf.equal(span_index % 2, 1)[:original_length]


def random_prefix_mask(length: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`[length]` bool, True on a prefix of uniformly random length in [1, length - 1].

    A one-token segment keeps its token in the prefix (there is nothing to split).
    """
    upper = tf.maximum(length - 1, 1)
    prefix = tf.random.stateless_uniform([], seed=seed, minval=1, maxval=upper + 1, dtype=tf.int32)
    return tf.range(length) < prefix


def replace_spans_with_sentinels(
    tokens: tf.Tensor, mask: tf.Tensor, vocabulary: seqio.Vocabulary
) -> tf.Tensor:
    """Each run of masked tokens becomes one sentinel: the k-th is vocab_size - 1 - k.

    Args:
        tokens: `[n]` token ids.
        mask: `[n]` bool, True on the tokens to replace.
        vocabulary: whose last ids are the sentinels (`<extra_id_0>` = vocab_size - 1).

    Returns:
        `[n - masked + runs]` ids: unmasked tokens kept, each masked run one sentinel.
    """
    previous = tf.pad(mask[:-1], [[1, 0]])
    first_in_run = mask & ~previous
    later_in_run = mask & previous
    sentinels = vocabulary.vocab_size - tf.cumsum(tf.cast(first_in_run, tokens.dtype))
    tokens = tf.where(first_in_run, sentinels, tokens)
    return tf.boolean_mask(tokens, ~later_in_run)


def corrupt_spans(
    dataset: tf.data.Dataset,
    vocabulary: seqio.Vocabulary,
    noise_density: float,
    mean_noise_span_length: float,
    feature_key: str = "targets",
) -> tf.data.Dataset:
    """Segments -> T5 span corruption: sentinels over hidden spans, targets the spans."""

    @seqio.map_over_dataset(num_seeds=2)
    def corrupt(x, seeds):
        tokens = x[feature_key]
        mask = random_spans_noise_mask(
            tf.size(tokens), seeds, noise_density, mean_noise_span_length
        )
        return {
            "inputs": replace_spans_with_sentinels(tokens, mask, vocabulary),
            "targets": replace_spans_with_sentinels(tokens, ~mask, vocabulary),
        }

    return corrupt(dataset)


def split_prefix(dataset: tf.data.Dataset, feature_key: str = "targets") -> tf.data.Dataset:
    """Segments -> prefix LM: inputs a random prefix, targets the rest."""

    @seqio.map_over_dataset(num_seeds=1)
    def split(x, seed):
        tokens = x[feature_key]
        prefix = random_prefix_mask(tf.size(tokens), seed)
        return {
            "inputs": tf.boolean_mask(tokens, prefix),
            "targets": tf.boolean_mask(tokens, ~prefix),
        }

    return split(dataset)


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    merge_examples: bool = True,
) -> tf.data.Dataset:
    """T5's span corruption over tokenized `targets` (C4's text), as a seqio preprocessor.

    Segments are sized so the corrupted inputs plus EOS fill `sequence_length['inputs']`
    exactly (568 tokens for 512); the targets need `span_corruption_lengths(...)[1]`
    (114 for 512). Sentinels count down from the vocabulary's last id. See `denoising`.

    Args:
        dataset: examples with token ids `[n]` under 'targets'.
        sequence_length: the task feature lengths, 'inputs' and 'targets'.
        output_features: the task's features; the sentinels are the 'targets' vocabulary's.
        noise_density: fraction of tokens hidden.
        mean_noise_span_length: mean tokens per hidden span.
        merge_examples: concatenate 128 documents before splitting (T5's default).

    Raises:
        ValueError: when the targets length cannot hold the hidden spans.
    """
    segment, needed = span_corruption_lengths(
        _feature_length(sequence_length, "inputs"), noise_density, mean_noise_span_length
    )
    if _feature_length(sequence_length, "targets") < needed:
        raise ValueError(
            f"Span corruption with inputs length {sequence_length['inputs']} needs targets "
            f"length >= {needed}; raise TASK_FEATURE_LENGTHS['targets'] to {needed}."
        )
    dataset = select_random_chunk(dataset, "targets")
    if merge_examples:
        dataset = concat_documents(dataset, "targets")
    dataset = split_tokens(dataset, "targets", segment)
    vocabulary = output_features["targets"].vocabulary
    return corrupt_spans(dataset, vocabulary, noise_density, mean_noise_span_length)


def prefix_lm(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
) -> tf.data.Dataset:
    """T5's prefix LM over tokenized `targets`: a random prefix in, the rest out.

    Documents are cut into segments of `sequence_length['inputs'] - 1` tokens (room for EOS);
    each is split at a uniformly random point. Targets longer than
    `sequence_length['targets']` are trimmed by `append_eos_after_trim`, as in T5.
    """
    del output_features
    dataset = select_random_chunk(dataset, "targets")
    length = max(_feature_length(sequence_length, "inputs") - 1, 1)
    dataset = split_tokens(dataset, "targets", length)
    return split_prefix(dataset)


def _feature_length(sequence_length: Mapping[str, int] | None, key: str) -> int:
    if not sequence_length or sequence_length.get(key) is None:
        raise ValueError(
            f"The C4 objectives need a fixed {key!r} length; pass sequence_length (e.g. "
            "TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 114})."
        )
    return int(sequence_length[key])
