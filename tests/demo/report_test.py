"""The demo report's statistics and sections on hand-made results (no training)."""

import numpy as np

from spot_jax.demo import report as report_lib


def test_family_recovery_counts_same_and_cross_family_pairs():
    names = ["a1", "a2", "b1", "b2"]
    families = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
    sim = np.array(
        [[1, 0.9, 0.1, 0.2], [0.9, 1, 0.3, 0.1], [0.1, 0.3, 1, 0.25], [0.2, 0.1, 0.25, 1]]
    )
    rec = report_lib.family_recovery(names, families, sim)
    assert np.isclose(rec["same_family"], (0.9 + 0.25) / 2)
    assert np.isclose(rec["cross_family"], (0.1 + 0.2 + 0.3 + 0.1) / 4)
    # b1's nearest is a2 (0.3): 3 of 4 nearest neighbours share the family.
    assert rec["nn_accuracy"] == 0.75


def test_tables_and_gains_use_every_seed():
    per_target = {
        "t1": {"final": {"PromptTuning": [50.0, 60.0], "SPoT": [70.0, 60.0]}},
        "t2": {"final": {"PromptTuning": [10.0, 20.0], "SPoT": [10.0, 40.0]}},
    }
    table = report_lib.results_table(per_target, ["PromptTuning", "SPoT"])
    assert "| t1 | 55.0 ± 7.1 | 65.0 ± 7.1 |" in table
    # The average is taken per seed first (seed 0: 40, seed 1: 50), then mean ± std.
    assert "| **average** | 35.0 ± 7.1 | 45.0 ± 7.1 |" in table
    diff, text = report_lib.gains(per_target, "SPoT")
    np.testing.assert_allclose(diff, [10.0, 10.0])
    assert text == "+10.0 points (per seed: +10.0, +10.0)"


def test_later_sections_append_to_the_report(tmp_path):
    report = report_lib.Report("T")
    report.add("One", "first\n")
    report.add("Two", "second")
    text = report.write(tmp_path)
    assert text == "# T\n\n## One\n\nfirst\n\n## Two\n\nsecond\n"
    assert (tmp_path / report_lib.REPORT_FILE).read_text() == text
