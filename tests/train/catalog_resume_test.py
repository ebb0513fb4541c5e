"""Resume after SIGKILL on a real catalog task (spot_glue_rte_v200, mock TFDS data): the rerun
reads the batches an uninterrupted job reads from the checkpoint's data position on."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from catalog_env import SPM, mock_catalog_env

pytest.importorskip("seqio")
REPO = Path(__file__).resolve().parents[2]
PROMPT = "encoder.prompt.prompt.prompt"
TASK = "spot_glue_rte_v200"
MOCK_EXAMPLES = 24
LENGTHS = {"inputs": 64, "targets": 16}
pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available"),
]


def _train_cmd(model_dir, steps):
    return [
        sys.executable, "-m", "spot_jax.cli", "train",
        "--gin_file=test/tiny_prompt.gin", "--gin_file=models/t5_1_1/t5x_test_tiny.gin",
        f"--gin.MODEL_DIR={model_dir}", f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
        f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}", "--gin.BATCH_SIZE=4",
        f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=10", "--gin.EVAL_PERIOD=1000",
        # No dropout and float32, so equal batches give equal prompts to float rounding.
        "--gin.DROPOUT_RATE=0.0", "--gin.ACTIVATION_DTYPE='float32'",
    ]  # fmt: skip


def _start(model_dir, steps):
    return subprocess.Popen(
        _train_cmd(model_dir, steps),
        cwd=REPO,
        env=mock_catalog_env(MOCK_EXAMPLES),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc):
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    return out


def _prompt(model_dir, step):
    return np.load(Path(model_dir) / "numpy_checkpoints" / f"checkpoint_{step}" / PROMPT)


@pytest.mark.slow
def test_rerun_after_sigkill_continues_the_uninterrupted_run(tmp_path, sigkill_at_marker):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # Both start at once (two cores): the reference runs 40 steps, the other is killed -9
    # right after its step-10 checkpoint.
    reference_proc = _start(reference, 40)
    proc = _start(killed, 1000)
    sigkill_at_marker(proc, killed / "numpy_checkpoints" / "checkpoint_10" / PROMPT, 400)
    assert not (killed / "numpy_checkpoints" / "checkpoint_40").exists(), "killed too late"

    rerun = _finish(_start(killed, 40))
    _finish(reference_proc)
    assert "Resuming" in rerun
    np.testing.assert_allclose(_prompt(killed, 40), _prompt(reference, 40), rtol=1e-5, atol=1e-7)
    # The prompt moved after step 10, so agreeing at step 40 says something about the data.
    assert not np.allclose(_prompt(reference, 10), _prompt(reference, 40), rtol=1e-4)


def test_catalog_task_stream_restarts_at_the_same_batch(monkeypatch):
    """What the rerun relies on: batch k of a resumed stream is batch k of the whole stream."""
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    from spot_jax import data
    from spot_jax.data import tasks as spot_tasks
    from spot_jax.data.tasks import base

    spot_tasks.enable_mock_data(MOCK_EXAMPLES)
    spot_tasks.register_all()
    import seqio

    seqio.TaskRegistry.remove(TASK)
    base.register_spec(base.SPECS[TASK])
    cfg = data.DatasetConfig(TASK, LENGTHS, batch_size=4, seed=3)
    stream = data.make_train_iterator(cfg)
    whole = [next(stream) for _ in range(9)]
    resumed = data.make_train_iterator(cfg, start_step=7)
    for want in whole[7:]:
        got = next(resumed)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value)
    # Past one epoch (24 examples = 6 batches) the order is reshuffled, not repeated.
    assert not np.array_equal(whole[0]["encoder_input_tokens"], whole[6]["encoder_input_tokens"])
