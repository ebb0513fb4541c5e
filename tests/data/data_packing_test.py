"""The numpy packer: first-fit placement, no split examples, seqio's packed feature layout."""

import numpy as np
import pytest

from spot_jax.data import packing

LENGTHS = {"inputs": 10, "targets": 6}


def _examples(seed=0, n=20):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = int(rng.integers(1, 8)), int(rng.integers(1, 5))
        out.append(
            (
                np.append(rng.integers(3, 100, a - 1), 1).astype(np.int32),
                np.append(rng.integers(3, 100, b - 1), 1).astype(np.int32),
            )
        )
    return out


def test_first_fit_places_each_example_in_the_first_row_with_room():
    rows = packing.first_fit([6, 5, 4, 3, 2], [1, 1, 1, 1, 1], {"inputs": 10, "targets": 9}, 4)
    # 6 -> row 0; 5 does not fit row 0 -> row 1; 4 fits row 0; 3 -> row 1; 2 -> row 1.
    np.testing.assert_array_equal(rows, [0, 1, 0, 1, 1])
    # A segment cap of 1 gives one row per example.
    rows = packing.first_fit([1, 1, 1], [1, 1, 1], LENGTHS, 1)
    np.testing.assert_array_equal(rows, [0, 1, 2])


def test_pack_keeps_every_example_whole_and_in_its_segment():
    examples = _examples()
    features, placement = packing.pack(examples, LENGTHS, max_segments=4)
    assert features["encoder_input_tokens"].shape[0] < len(examples)
    assert features["encoder_input_tokens"].shape[1] == LENGTHS["inputs"]
    for (x, y), (row, seg) in zip(examples, placement, strict=True):
        in_seg = features["encoder_segment_ids"][row] == seg
        out_seg = features["decoder_segment_ids"][row] == seg
        np.testing.assert_array_equal(features["encoder_input_tokens"][row][in_seg], x)
        np.testing.assert_array_equal(features["decoder_target_tokens"][row][out_seg], y)
        np.testing.assert_array_equal(features["encoder_positions"][row][in_seg], range(len(x)))
        np.testing.assert_array_equal(features["decoder_positions"][row][out_seg], range(len(y)))
        # Decoder inputs: the segment's targets shifted right, starting from 0 (BOS).
        np.testing.assert_array_equal(
            features["decoder_input_tokens"][row][out_seg], np.concatenate([[0], y[:-1]])
        )
        np.testing.assert_array_equal(features["decoder_loss_weights"][row][out_seg], 1)
        # Segments are contiguous runs.
        idx = np.flatnonzero(in_seg)
        assert idx[-1] - idx[0] + 1 == len(idx)
    assert placement[:, 1].max() <= 4
    # Padding is zero in every feature and carries no loss.
    pad = features["encoder_segment_ids"] == 0
    assert np.all(features["encoder_input_tokens"][pad] == 0)
    assert np.all(features["decoder_loss_weights"][features["decoder_segment_ids"] == 0] == 0)
    # Every token of every example is somewhere, once.
    total = sum(len(x) for x, _ in examples)
    assert (features["encoder_segment_ids"] > 0).sum() == total


def test_pack_is_deterministic_and_truncates_long_examples():
    examples = _examples(seed=5)
    a, pa = packing.pack(examples, LENGTHS, 3)
    b, pb = packing.pack(examples, LENGTHS, 3)
    np.testing.assert_array_equal(pa, pb)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    long = [(np.arange(3, 20, dtype=np.int32), np.arange(3, 12, dtype=np.int32))]
    features, _ = packing.pack(long, LENGTHS, 2, num_rows=2)
    np.testing.assert_array_equal(features["encoder_input_tokens"][0], np.arange(3, 13))
    assert features["decoder_segment_ids"][0].tolist() == [1] * 6
    assert not features["encoder_input_tokens"][1].any()  # the padding row
    with pytest.raises(ValueError, match="max_segments"):
        packing.pack(long, LENGTHS, 0)


def test_packed_batches_stream_every_example_once_in_fixed_size_batches():
    examples = _examples(seed=2, n=40)
    batches = list(packing.packed_batches(iter(examples), 3, LENGTHS, max_segments=3))
    assert all(b["encoder_input_tokens"].shape == (3, LENGTHS["inputs"]) for b in batches)
    got = []
    for b in batches:
        for row in range(3):
            for seg in range(1, 4):
                m = b["encoder_segment_ids"][row] == seg
                if m.any():
                    got.append(b["encoder_input_tokens"][row][m])
    assert len(got) == len(examples)
    want = sorted(tuple(x) for x, _ in examples)
    assert sorted(tuple(x) for x in got) == want


def test_padded_and_unpadded_examples_round_trip():
    examples = _examples(seed=1, n=5)
    batch = packing.padded(examples, LENGTHS)
    assert batch["decoder_input_tokens"][:, 0].tolist() == [0] * 5
    back = packing.unpadded_examples(batch)
    for (x, y), (bx, by) in zip(examples, back, strict=True):
        np.testing.assert_array_equal(x, bx)
        np.testing.assert_array_equal(y, by)
