"""Rank classification's (example, label) pair batches and choices (numpy, no TF)."""

import numpy as np

from spot_jax.train import ranking


def test_pairs_repeat_each_example_once_per_label():
    batch = {"encoder_input_tokens": np.array([[5, 6, 1], [7, 1, 0]], np.int32)}
    labels = np.array([[9, 1, 0], [4, 8, 1]], np.int32)  # 2 labels, EOS-terminated
    pairs = ranking.candidate_batch(batch, labels)
    np.testing.assert_array_equal(
        pairs["encoder_input_tokens"], [[5, 6, 1], [5, 6, 1], [7, 1, 0], [7, 1, 0]]
    )
    np.testing.assert_array_equal(
        pairs["decoder_target_tokens"], [[9, 1, 0], [4, 8, 1], [9, 1, 0], [4, 8, 1]]
    )
    # Shifted right with BOS 0, as the feature converter builds decoder inputs.
    np.testing.assert_array_equal(
        pairs["decoder_input_tokens"], [[0, 9, 1], [0, 4, 8], [0, 9, 1], [0, 4, 8]]
    )
    np.testing.assert_array_equal(
        pairs["decoder_loss_weights"], [[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]]
    )
    assert all(v.dtype == np.int32 for v in pairs.values())


def test_choices_take_the_likeliest_label_of_each_example():
    scores = np.array([-3.0, -1.0, -0.5, -2.0, -4.0, -4.5])  # 3 examples x 2 labels
    np.testing.assert_array_equal(ranking.choices(scores, 2), [1, 0, 0])
