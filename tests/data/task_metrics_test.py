"""Benchmark metric fns and postprocessors against hand-computed values (no TF needed)."""

import math

import pytest

from spot_jax.data import metrics, postprocessors


def test_binary_f1_counts_invalid_predictions_as_wrong():
    # The -1 becomes 1 (wrong for target 0): tp=1, fp=2, fn=1 -> 2/(2+2+1).
    assert metrics.f1_with_invalid([1, 1, 0, 0], [1, 0, 1, -1])["f1"] == pytest.approx(40.0)


def test_cb_mean_f1_averages_per_class_f1():
    # Class F1s: 1.0, 0.0, 2/(2+1+1) = 0.5.
    fn = metrics.mean_multiclass_f1(num_classes=3)
    assert fn([0, 1, 2, 2], [0, 2, 2, 1]) == {"mean_3class_f1": pytest.approx(50.0)}


def test_matthews_correlation():
    # tp=1 tn=2 fp=0 fn=1: (1*2 - 0) / sqrt(1*2*2*3).
    value = metrics.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0])["matthews_corrcoef"]
    assert value == pytest.approx(100 * 2 / math.sqrt(12))
    assert metrics.matthews_corrcoef([1, 0], [1, 1])["matthews_corrcoef"] == 0.0


def test_pearson_and_spearman_with_ties():
    assert metrics.pearson_corrcoef([1, 2, 3], [2, 4, 7])["pearson_corrcoef"] == pytest.approx(
        100 * 5 / math.sqrt(2 * 114 / 9)
    )
    # Ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5).
    rho = metrics.spearman_corrcoef([1, 2, 2, 3], [1, 3, 2, 4])["spearman_corrcoef"]
    assert rho == pytest.approx(100 * 4.5 / math.sqrt(22.5))


def test_squad_normalises_and_takes_the_best_answer():
    result = metrics.squad([["The Cat", "dog"], ["big red ball"]], ["cat.", "red ball"])
    # Second: precision 1, recall 2/3 -> F1 0.8.
    assert result == {"em": pytest.approx(50.0), "f1": pytest.approx(90.0)}
    assert metrics.normalize_squad("  The  Big, RED ball! ") == "big red ball"


def test_record_keeps_one_copy_per_query():
    targets = [
        {"value": ["A", "B"], "group": (0, 0)},
        {"value": ["A", "B"], "group": (0, 0)},  # a duplicate (second answer's copy)
        {"value": ["C"], "group": (0, 1)},
    ]
    predictions = [{"value": "b"}, {"value": "x"}, {"value": "d"}]
    assert metrics.record(targets, predictions) == {"em": 50.0, "f1": 50.0}


def test_multirc_exact_match_over_questions_and_f1_over_answers():
    targets = [{"value": 1, "group": 0}, {"value": 0, "group": 0}, {"value": 1, "group": 1}]
    predictions = [{"value": 1}, {"value": 0}, {"value": 0}]
    result = metrics.multirc(targets, predictions)
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * 2 / 3)


def test_benchmark_averages_average_two_metric_tasks_first():
    glue = {
        "cola": {"matthews_corrcoef": 50},
        "sst2": {"accuracy": 90},
        "mrpc": {"f1": 80, "accuracy": 70},
        "qqp": {"f1": 60, "accuracy": 80},
        "stsb": {"pearson_corrcoef": 80, "spearman_corrcoef": 90},
        "mnli": {"accuracy": 80},
        "qnli": {"accuracy": 90},
        "rte": {"accuracy": 70},
    }
    assert metrics.glue_average(glue) == pytest.approx(610 / 8)
    super_glue = {
        "boolq": {"accuracy": 80},
        "cb": {"mean_3class_f1": 60, "accuracy": 80},
        "copa": {"accuracy": 60},
        "multirc": {"f1": 70, "exact_match": 30},
        "record": {"f1": 90, "em": 80},
        "rte": {"accuracy": 70},
        "wic": {"accuracy": 60},
        "wsc": {"accuracy": 65},
    }
    assert metrics.super_glue_average(super_glue) == pytest.approx(540 / 8)
    with pytest.raises(ValueError, match="rte"):
        metrics.glue_average({k: v for k, v in glue.items() if k != "rte"})


def test_postprocessors_map_strings_back_to_labels():
    labels = ("entailment", "not_entailment")
    assert postprocessors.string_label_to_class_id(b"not_entailment", label_classes=labels) == 1
    assert postprocessors.string_label_to_class_id("maybe", label_classes=labels) == -1
    assert postprocessors.string_to_float("3.4") == 3.4
    assert postprocessors.string_to_float("high") == -1.0
    example = {"idx/question": 7}
    assert postprocessors.multirc("True", example, is_target=True) == {"value": 1, "group": 7}
    assert postprocessors.multirc("Nope") == {"value": -1}
    record_example = {"answers": [b"Paris", b"paris"], "idx/passage": 1, "idx/query": 2}
    assert postprocessors.record("x", record_example, is_target=True) == {
        "value": ["Paris", "paris"],
        "group": (1, 2),
    }
    assert postprocessors.record(b"Rome", record_example) == {"value": "Rome"}
