"""`spot-jax train` (2 steps) and `spot-jax eval` on catalog tasks with mock TFDS data: each
family trains, and eval writes the task's own metrics to metrics.jsonl."""

import json

import numpy as np
import pytest
from catalog_env import SPM, run_script

pytest.importorskip("seqio")
pytestmark = [
    pytest.mark.tf,
    pytest.mark.slow,
    pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available"),
]

MIXTURE = "spot_mix__spot_glue_rte_v200__spot_super_glue_boolq_v102"
# One task per family and metric kind -> the task metrics its evals must report. (Plain
# accuracy tasks train in glue_tasks_test; scoring_test and catalog_sources_test check metric
# values, GoEmotions' too; glue_tasks_test and catalog_sources_test show every task.)
TASK_METRICS = {
    # Rank classification on too: the likeliest label's metrics as eval/rank_*.
    "spot_glue_cola_v200": {"matthews_corrcoef", "rank_matthews_corrcoef"},
    "spot_super_glue_multirc_v102": {"f1", "exact_match"},
    "spot_mrqa_news_qa_v100": {"em", "f1"},
    "spot_samsum_v100": {"rouge1", "rouge2", "rougeLsum"},
    "spot_c4_span_corruption_v310": set(),
    # A mixture: each of its tasks evaluated on its own (T5X's per-task metrics), pooled
    # loss and accuracies beside them.
    MIXTURE: {
        f"{task}/{metric}"
        for task in ("spot_glue_rte_v200", "spot_super_glue_boolq_v102")
        for metric in ("loss", "token_accuracy", "sequence_accuracy", "accuracy")
    },
}
BASE_METRICS = {"eval/loss", "eval/token_accuracy", "eval/sequence_accuracy"}

# Every job runs through the CLI's entry point in one process, so the tiny model compiles once.
_JOBS_SCRIPT = """
import sys
import time

import gin
from spot_jax import cli

root, tasks = sys.argv[1], sys.argv[2:]
for task in tasks:
    common = [
        f"--gin.MODEL_DIR={root}/{task}",
        f"--gin.MIXTURE_OR_TASK_NAME={task}",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
        "--gin.BATCH_SIZE=4",
    ]
    model = "--gin_file=models/t5_1_1/t5x_test_tiny.gin"
    train = ["train", "--gin_file=test/tiny_prompt.gin", model, "--gin.TRAIN_STEPS=2"]
    evaluate = ["eval", "--gin_file=test/tiny_eval.gin", model]
    jobs = [train, evaluate]
    if task == "spot_glue_cola_v200":
        train.append("--gin.trainer.train.rank_classification=True")
        evaluate.append("--gin.inference.evaluate_job.rank_classification=True")
    if task == "spot_glue_cola_v200" or task.startswith("spot_mix__"):
        jobs.append(["infer", "--gin_file=test/tiny_eval.gin", model])
    for argv in jobs:
        start = time.time()
        code = cli.main(argv + common)
        gin.clear_config()
        print(f"{argv[0]} {task}: {time.time() - start:.1f}s", file=sys.stderr)
        if code:
            sys.exit(f"{argv[0]} failed on {task}")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    run_script(_JOBS_SCRIPT, str(root), *TASK_METRICS)
    return root


def _records(model_dir):
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task", list(TASK_METRICS))
def test_train_and_eval_report_the_tasks_metrics(runs, task):
    model_dir = runs / task
    assert (model_dir / "numpy_checkpoints" / "checkpoint_2").is_dir()
    train_record, eval_record = _records(model_dir)
    expected = BASE_METRICS | {f"eval/{k}" for k in TASK_METRICS[task]}
    # The periodic eval at the last train step, and the eval job on the saved prompt.
    assert train_record["step"] == 2 and set(train_record) >= expected
    assert {k for k in train_record if k.startswith("eval/")} == expected
    assert eval_record["job"] == "eval" and eval_record["task"] == task
    assert eval_record["prompt"].endswith("checkpoint_2/encoder.prompt.prompt.prompt")
    assert {k for k in eval_record if k.startswith("eval/")} == expected
    for key in expected - BASE_METRICS:
        assert -100.0 <= eval_record[key] <= 100.0 and np.isfinite(eval_record[key]), key
    saved = json.loads((model_dir / "eval_metrics.json").read_text())
    assert saved == {k: v for k, v in eval_record.items() if k.startswith("eval/")}


def test_infer_writes_the_decoded_text(runs):
    rows = [json.loads(line) for line in (runs / "spot_glue_cola_v200" / "inference.jsonl").open()]
    assert len(rows) == 4  # the mock validation split
    for row in rows:
        assert row["task"] == "spot_glue_cola_v200"
        assert row["inputs_text"].startswith("cola sentence: ")
        assert row["targets_text"] in ("unacceptable", "acceptable")
        assert isinstance(row["prediction_text"], str)


def test_infer_on_a_mixture_decodes_each_task(runs):
    rows = [json.loads(line) for line in (runs / MIXTURE / "inference.jsonl").open()]
    tasks = [row["task"] for row in rows]
    # Task by task, every example of each mock split (a mixture's own epoch would stop at
    # its first exhausted task).
    assert tasks == ["spot_glue_rte_v200"] * 4 + ["spot_super_glue_boolq_v102"] * 4
    assert all(r["inputs_text"].startswith(("rte ", "boolq ")) for r in rows)
