"""Span corruption and prefix LM: lengths, noise fraction, spans, sentinels, reconstruction."""

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from spot_jax.data import denoising  # noqa: E402

VOCAB_SIZE = 1000  # sentinels are 999, 998, ...; document tokens stay below 900
VOCAB = seqio.PassThroughVocabulary(size=VOCAB_SIZE)
FEATURES = {"inputs": seqio.Feature(VOCAB), "targets": seqio.Feature(VOCAB)}


def _documents(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 900, size=n, dtype=np.int32) for n in lengths]


def _dataset(docs):
    return tf.data.Dataset.from_generator(
        lambda: ({"targets": d, "text": b"raw"} for d in docs),
        output_signature={
            "targets": tf.TensorSpec([None], tf.int32),
            "text": tf.TensorSpec([], tf.string),
        },
    )


def _span_corrupt(docs, seed=7, lengths=None, **kwargs):
    lengths = lengths or {"inputs": 64, "targets": 16}
    with seqio.utils.map_seed_manager(seed):
        ds = denoising.span_corruption(_dataset(docs), lengths, FEATURES, **kwargs)
    return [(x["inputs"], x["targets"]) for x in ds.as_numpy_iterator()]


def _is_sentinel(ids):
    return np.asarray(ids) >= 900


def _reconstruct(inputs, targets):
    """Puts each hidden span (after its sentinel in the targets) back in place of the sentinel."""
    spans, current = {}, None
    for t in targets:
        if t >= 900:
            current = spans.setdefault(int(t), [])
        else:
            current.append(int(t))
    out = []
    for t in inputs:
        out.extend(spans[int(t)] if t >= 900 else [int(t)])
    return out


def test_segment_length_fills_the_inputs_exactly():
    # T5's numbers for its 512-token span corruption: 568-token segments, 114-token targets.
    assert denoising.span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
    # By hand for 64: 70 tokens -> 10 hidden (round(10.5) = 10) in 3 spans -> 60 + 3 + 1 = 64.
    assert denoising.span_corruption_lengths(64, 0.15, 3.0) == (70, 14)


@pytest.mark.parametrize("length", [2, 10, 70, 101, 568])
def test_noise_mask_fraction_and_spans(length):
    noise = max(1, min(round(length * 0.15), length - 1))
    spans = max(1, round(noise / 3))
    for seed in range(5):
        seeds = tf.constant([[seed, 1], [seed, 2]])
        mask = denoising.random_spans_noise_mask(tf.constant(length), seeds, 0.15, 3.0).numpy()
        assert mask.shape == (length,) and mask.sum() == noise
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == spans
        assert not mask[0] and mask[-1]  # non-noise first, noise last


def test_sentinels_count_down_from_the_vocabulary_end():
    tokens = tf.constant([5, 6, 7, 8, 9, 10, 11], tf.int32)
    mask = tf.constant([False, True, True, False, True, False, False])
    assert denoising.replace_spans_with_sentinels(tokens, mask, VOCAB).numpy().tolist() == [
        5, 999, 8, 998, 10, 11,
    ]  # fmt: skip
    assert denoising.replace_spans_with_sentinels(tokens, ~mask, VOCAB).numpy().tolist() == [
        999, 6, 7, 998, 9, 997,
    ]  # fmt: skip


def test_span_corruption_layout_and_reconstruction():
    docs = _documents([40, 300, 7, 1, 155, 90])
    examples = _span_corrupt(docs)
    total = sum(len(d) for d in docs)
    assert len(examples) == -(-total // 70)  # documents concatenated, then 70-token segments
    rebuilt = []
    for i, (inputs, targets) in enumerate(examples):
        segment = _reconstruct(inputs, targets)
        rebuilt.extend(segment)
        n = len(segment)
        noise = int(round(n * 0.15))
        spans = max(1, round(noise / 3))
        full = i < len(examples) - 1
        if full:
            assert n == 70 and len(inputs) == 63 and len(targets) == 13  # + EOS: 64, 14
        input_sentinels = inputs[_is_sentinel(inputs)].tolist()
        target_sentinels = targets[_is_sentinel(targets)].tolist()
        assert input_sentinels == target_sentinels == list(range(999, 999 - spans, -1))
        assert _is_sentinel(targets[:1]).all() and not _is_sentinel(targets[-1:]).all()
        assert len(targets) - spans == max(1, min(noise, n - 1))  # hidden tokens
    assert rebuilt == np.concatenate(docs).tolist()


def test_span_corruption_is_seeded():
    docs = _documents([500])
    first, again, other = _span_corrupt(docs, 3), _span_corrupt(docs, 3), _span_corrupt(docs, 4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_span_corruption_refuses_a_short_targets_length():
    with pytest.raises(ValueError, match="needs targets length >= 14"):
        _span_corrupt(_documents([10]), lengths={"inputs": 64, "targets": 8})


def test_prefix_lm_splits_each_segment_once():
    docs = _documents([200, 5, 63, 2])
    with seqio.utils.map_seed_manager(1):
        ds = denoising.prefix_lm(_dataset(docs), {"inputs": 64, "targets": 64}, FEATURES)
    examples = list(ds.as_numpy_iterator())
    # No concatenation: each document is cut into 63-token segments on its own.
    assert len(examples) == 4 + 1 + 1 + 1
    rebuilt, prefix_lengths = [], []
    for x in examples:
        segment = np.concatenate([x["inputs"], x["targets"]])
        assert 1 <= len(x["inputs"]) <= max(len(segment) - 1, 1) and len(segment) <= 63
        rebuilt.extend(segment.tolist())
        prefix_lengths.append(len(x["inputs"]))
    assert rebuilt == np.concatenate(docs).tolist()
    assert len(set(prefix_lengths)) > 2  # the split point is random
