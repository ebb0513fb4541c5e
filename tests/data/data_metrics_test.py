"""Metric fns of the SeqIO tasks (no TensorFlow needed)."""

import numpy as np
import pytest

from spot_jax.data import metrics


def test_accuracy_is_a_percentage_of_equal_labels():
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == {"accuracy": 75.0}
    assert metrics.accuracy([0, 1], [1, 0]) == {"accuracy": 0.0}


def test_sequence_accuracy_needs_whole_sequences_to_match():
    targets = [np.array([5, 6, 1]), [7, 1], "yes", np.array([4, 1])]
    # Second: a prefix only (length differs); fourth: one token wrong.
    predictions = [[5, 6, 1], np.array([7]), "yes", np.array([4, 2])]
    assert metrics.sequence_accuracy(targets, predictions) == {"sequence_accuracy": 50.0}


@pytest.mark.parametrize("fn", [metrics.accuracy, metrics.sequence_accuracy])
def test_mismatched_or_empty_inputs_are_refused(fn):
    with pytest.raises(ValueError, match="predictions"):
        fn(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="zero examples"):
        fn([], [])
