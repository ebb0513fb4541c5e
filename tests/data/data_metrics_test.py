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


def _mcc_from_one_hot_covariance(targets, predictions):
    """Gorodkin's MCC as a correlation of one-hot codes: sum_k cov(X_k, Y_k) / sqrt(...)."""
    labels = sorted(set(targets) | set(predictions))
    x = np.array([[t == k for k in labels] for t in targets], float)
    y = np.array([[p == k for k in labels] for p in predictions], float)
    x, y = x - x.mean(0), y - y.mean(0)
    return np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))


def test_matthews_counts_an_invalid_prediction_as_a_third_class():
    # Confusion over {-1, 0, 1}: true 0 -> 0 twice; true 1 -> 1 once and -1 once. Trace 3 of
    # 4; t sums (0, 2, 2), p sums (1, 2, 1): (3*4 - 6) / sqrt((16 - 6) * (16 - 8)) = 6/sqrt(80).
    result = metrics.matthews_corrcoef([1, 1, 0, 0], [1, -1, 0, 0])
    assert result["matthews_corrcoef"] == pytest.approx(100 * 6 / np.sqrt(80))
    # Reading -1 as class 0 (the old behaviour) gives 2/sqrt(12) instead.
    assert result["matthews_corrcoef"] != pytest.approx(100 * 2 / np.sqrt(12))


def test_matthews_matches_the_one_hot_covariance_formula():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 300)
    predictions = np.where(rng.random(300) < 0.3, 1 - targets, targets)
    predictions[rng.random(300) < 0.1] = -1
    expected = 100 * _mcc_from_one_hot_covariance(list(targets), list(predictions))
    got = metrics.matthews_corrcoef(list(targets), list(predictions))["matthews_corrcoef"]
    assert got == pytest.approx(expected)
    # Binary labels only: the textbook tp/tn/fp/fn formula.
    t, p = [1, 1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 1, 0]
    tp, tn, fp, fn = 3, 2, 1, 1
    binary = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corrcoef(t, p)["matthews_corrcoef"] == pytest.approx(100 * binary)
    # Constant predictions leave it undefined: 0, as sklearn returns.
    assert metrics.matthews_corrcoef([0, 1, 1], [1, 1, 1]) == {"matthews_corrcoef": 0.0}
