"""PPT's few-shot protocol on the tiny model: 5 seeded runs of a few-shot variant (mock TFDS
data), each evaluated at its best dev step, mean ± std, zero-shot of the starting prompt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
pytest.importorskip("seqio")

from spot_jax.spot import few_shot_protocol  # noqa: E402
from spot_jax.spot import runs as runs_lib  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPM = Path(
    os.environ.get("SPOT_JAX_TEST_SPM")
    or Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
)
TASK = "spot_glue_rte_v200"


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_five_seeds_give_mean_and_std(tmp_path):
    # Its own process: mock data's size is fixed by a process's first use (16 here, so every
    # 4-shot dev set is full), and tasks read the vocabulary when registered.
    start = np.random.default_rng(0).uniform(0, 0.5, (5, 8)).astype(np.float32)
    np.save(tmp_path / "start.npy", start)
    gin_args = [
        "--gin_file=test/tiny_prompt.gin", "--gin_file=models/t5_1_1/t5x_test_tiny.gin",
        "--gin_file=ppt/few_shot_from_pretrained.gin",
        f"--gin.PROMPT_FILE={tmp_path / 'start.npy'}",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", "--gin.TRAIN_STEPS=2",
        "--gin.EVAL_PERIOD=2", "--gin.CHECKPOINT_PERIOD=1",
    ]  # fmt: skip
    out = tmp_path / "protocol"
    argv = ["--task", TASK, "--out", str(out), "--k", "4", "--in-process",
            "--full-data-steps", "2", "--", *gin_args]  # fmt: skip
    env = dict(os.environ, SPOT_JAX_TFDS_MOCK="16", SPOT_JAX_VOCAB=str(SPM))
    done = subprocess.run(
        [sys.executable, "-m", "spot_jax.cli", "few-shot", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert done.stdout.endswith((out / "results.md").read_text())
    runs = report["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2, 3, 4]
    assert len({r["task"] for r in runs}) == 5 and runs[0]["task"] == f"{TASK}_4shot_seed0"
    # RTE's own metric (accuracy, its first) is reported and picks each run's dev step, as
    # `library add` picks 'best'.
    assert report["metric"] == report["select_metric"] == "eval/accuracy"
    values = np.array([r["test"]["eval/accuracy"] for r in runs])
    assert np.all((values >= 0) & (values <= 1))
    assert report["mean"] == pytest.approx(values.mean())
    assert report["std"] == pytest.approx(values.std())
    for run in runs:
        dev = {
            s: m["eval/accuracy"]
            for s, m in runs_lib.read_metrics(run["model_dir"]).items()
            if "eval/accuracy" in m
        }
        # The best dev step (the later one on ties) is the one evaluated.
        assert dev and run["step"] == max(dev, key=lambda s: (dev[s], s))
    # Zero-shot is the starting prompt itself: every run's step 0 is PROMPT_FILE.
    step0 = np.load(runs_lib.prompt_file(runs[3]["model_dir"], 0))
    np.testing.assert_array_equal(step0, start)
    assert set(report["zero_shot"]) >= {"eval/loss", "eval/sequence_accuracy"}
    assert report["test_split"] == "validation"
    # PPT's optimizer (ppt/ppt_adamw.gin) in every few-shot run.
    assert "optim.adamw" in (out / "seed0" / "config.gin").read_text()
    # The full-data run keeps its own periods, not the few-shot epoch (here: only at the end).
    full = report["full_data"]
    assert full["step"] == 2 and runs_lib.numpy_steps(full["model_dir"]) == [0, 2]
    full_evals = [
        s for s, m in runs_lib.read_metrics(full["model_dir"]).items() if "eval/loss" in m
    ]
    assert full_evals == [2]
    table = (out / "results.md").read_text()
    assert table.count("| seed ") == 5 and "mean ± std" in table and "zero-shot" in table
    assert f"{report['mean']:.4f} ± {report['std']:.4f}" in table


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="gin files"):
        few_shot_protocol.few_shot_main(["--task", TASK, "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="sets .*SEED"):
        few_shot_protocol.run_protocol(
            TASK, ["--gin_file=x.gin", "--gin.SEED=3"], tmp_path, runner=None, log=None
        )
    with pytest.raises(ValueError, match="--seeds"):
        few_shot_protocol.few_shot_main(
            ["--task", TASK, "--out", str(tmp_path), "--seeds", "a,b", "--", "--gin_file=x.gin"]
        )
