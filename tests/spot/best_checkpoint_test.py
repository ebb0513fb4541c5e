"""`library add`'s 'best' checkpoint is SPoT's: the best validation score of the task's metric
(higher is better), eval/loss (lower is better) only when the run recorded no task metric;
`--best-metric` names another, and a metric the run never recorded is refused."""

import pytest
from fake_runs import fake_run, snapshot  # tests/spot is on sys.path under pytest

from spot_jax.spot import commands, library
from spot_jax.spot import runs as runs_lib

# As the trainer writes an eval: the Evaluator's own metrics first, then the task's metric fns
# in order (here MRPC's: f1, then accuracy), then rank classification's.
_OWN = ("eval/loss", "eval/token_accuracy", "eval/sequence_accuracy")
CLASSIFIER = {
    10: dict(zip(_OWN, (1.0, 0.9, 70.0), strict=True), **{"eval/f1": 60.0, "eval/accuracy": 90.0}),
    20: dict(zip(_OWN, (2.0, 0.5, 10.0), strict=True), **{"eval/f1": 80.0, "eval/accuracy": 50.0}),
}
for record in CLASSIFIER.values():
    record["eval/rank_f1"] = 100.0 - record["eval/f1"]


def _add(lib_dir, run, *extra):
    argv = ["add", "--library", str(lib_dir), str(run), *extra]
    assert commands.library_main(argv) == 0
    return library.Library(lib_dir).get(run.name)


def test_best_is_the_tasks_first_metric_at_its_highest_not_the_lowest_loss(tmp_path, capsys):
    run = fake_run(tmp_path / "runs", "mrpc", "glue_mrpc_v002", 0, evals=CLASSIFIER)
    entry = _add(tmp_path / "lib", run)
    # eval/loss (and eval/accuracy, the second metric) would pick step 10; eval/f1 picks 20.
    assert entry.meta["step"] == 20
    assert entry.meta["validation"]["eval/f1"] == 80.0
    assert entry.meta["selection"] == {
        "checkpoint": "best",
        "metric": "eval/f1",
        "mode": "max",
        "rule": runs_lib.TASK_METRIC_RULE,
        "value": 80.0,
        "averaged": [],
        "fallback": False,
    }
    assert entry.meta["selected"].startswith("best eval/f1=80, max; the task's metric")
    out = capsys.readouterr()
    assert "step 20 (best eval/f1=80, max; the task's" in out.out and "note:" not in out.err


def test_a_mixture_run_is_chosen_by_the_mean_of_each_tasks_first_metric(tmp_path):
    evals = {
        10: {"eval/loss": 1.0, "eval/a/loss": 1.0, "eval/a/accuracy": 90.0,
             "eval/b/loss": 1.0, "eval/b/f1": 20.0, "eval/b/accuracy": 99.0},
        20: {"eval/loss": 2.0, "eval/a/loss": 2.0, "eval/a/accuracy": 60.0,
             "eval/b/loss": 2.0, "eval/b/f1": 60.0, "eval/b/accuracy": 10.0},
    }  # fmt: skip
    run = fake_run(tmp_path / "runs", "mix", "spot_mix__a__b", 0, evals=evals)
    selection = runs_lib.select_checkpoint(run)
    assert selection.step == 20 and selection.value == 60.0  # means 55 and 60
    assert selection.metric == "mean(eval/a/accuracy, eval/b/f1)" and selection.mode == "max"
    assert selection.averaged == ("eval/a/accuracy", "eval/b/f1")
    assert selection.rule == runs_lib.MIXTURE_METRIC_RULE
    # One task's metric, named, picks by itself.
    assert runs_lib.select_step(run, "best", "eval/a/accuracy")[0] == 10


def test_without_a_task_metric_best_falls_back_to_the_lowest_loss(tmp_path, capsys):
    # A task without metric fns: the Evaluator's own metrics only (sequence_accuracy is best at
    # step 20, but it is not the task's metric).
    evals = {
        10: dict(zip(_OWN, (2.0, 0.1, 10.0), strict=True)),
        20: dict(zip(_OWN, (3.0, 0.9, 50.0), strict=True)),
    }
    run = fake_run(tmp_path / "runs", "plain", "synthetic", 0, evals=evals)
    entry = _add(tmp_path / "lib", run)
    assert entry.meta["step"] == 10
    selection = entry.meta["selection"]
    assert selection["metric"] == "eval/loss" and selection["mode"] == "min"
    assert selection["fallback"] is True
    assert selection["rule"] == (
        "fallback: the run recorded no task metric "
        "(only eval/loss, eval/token_accuracy, eval/sequence_accuracy)"
    )
    err = capsys.readouterr().err
    assert "note: plain's best checkpoint is by eval/loss, not a task metric" in err
    # fake_run's default metrics (eval/loss only) fall back the same way.
    assert runs_lib.select_checkpoint(fake_run(tmp_path, "d", "d", 0, losses=(3.0, 2.0))).step == 20


def test_a_run_never_evaluated_takes_its_latest_checkpoint(tmp_path):
    run = fake_run(tmp_path, "noeval", "t", 0, evals={})
    selection = runs_lib.select_checkpoint(run)
    assert (selection.step, selection.reason) == (20, "latest (the run recorded no eval metrics)")
    with pytest.raises(library.LibraryError, match="recorded no eval metrics .* 'latest'"):
        runs_lib.select_checkpoint(run, "best", "eval/loss")


def test_best_metric_names_the_metric_and_its_direction(tmp_path):
    run = fake_run(tmp_path / "runs", "mrpc", "glue_mrpc_v002", 0, evals=CLASSIFIER)
    lib_dir = tmp_path / "lib"
    entry = _add(lib_dir, run, "--best-metric", "eval/loss")
    assert entry.meta["step"] == 10
    want = {"metric": "eval/loss", "mode": "min", "rule": "named by best_metric"}
    assert {k: entry.meta["selection"][k] for k in want} == want
    assert runs_lib.select_step(run, "best", "eval/accuracy")[0] == 10  # max
    assert runs_lib.select_step(run, "best", "eval/f1:min")[0] == 10
    assert runs_lib.select_step(run, "best", "eval/loss:max")[0] == 20
    assert runs_lib.select_step(run, "best", "eval/rank_f1")[0] == 10
    # The direction comes from the metric's own name, not its task's.
    assert runs_lib.metric_mode("eval/lossy_task/accuracy") == "max"
    assert runs_lib.metric_mode("eval/lossy_task/loss") == "min"
    # --checkpoint latest / STEP record no metric.
    latest = library.Library(lib_dir).add(run, "latest", "latest").meta
    assert latest["step"] == 20 and latest["selection"]["metric"] is None


def test_a_mistyped_best_metric_is_refused_with_the_recorded_ones(tmp_path):
    run = fake_run(tmp_path / "runs", "mrpc", "glue_mrpc_v002", 0, evals=CLASSIFIER)
    lib_dir = tmp_path / "lib"
    library.Library(lib_dir).add(run, "first")
    before = snapshot(lib_dir)
    recorded = ", ".join([*_OWN, "eval/f1", "eval/accuracy", "eval/rank_f1"])
    with pytest.raises(library.LibraryError) as e:
        _add(lib_dir, run, "--name", "second", "--best-metric", "eval/acuracy")
    assert "recorded no eval metric 'eval/acuracy' (did you mean eval/accuracy?)" in str(e.value)
    assert f"its metrics.jsonl records: {recorded}" in str(e.value)
    with pytest.raises(library.LibraryError, match="no eval metric 'accuracy'"):
        library.Library(lib_dir).add(run, "third", best_metric="accuracy")
    assert snapshot(lib_dir) == before
