"""Bad input through the real `spot-jax train`: one clear line on stderr, a non-zero exit, and
nothing already saved lost (DESIGN.md §4)."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[1]
ERROR_PREFIX = "spot-jax train: error: "


def spot_jax_train(*args):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    env.pop("SPOT_JAX_DEBUG", None)
    return subprocess.run(
        [*cli, "train", "--gin_file=test/tiny_prompt.gin", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def the_error(result) -> str:
    """Asserts a failed run reported exactly one error line, last on stderr; returns it."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    # Progress bars redraw with '\r'; every other line must be free of errors.
    lines = [line.strip() for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, result.stderr[-3000:]
    assert lines[-1] == errors[0] and errors[0].startswith(ERROR_PREFIX), lines[-3:]
    return errors[0][len(ERROR_PREFIX) :]


def snapshot(model_dir: Path) -> dict[str, str]:
    """Digest of every checkpoint file (Orbax and numpy) under MODEL_DIR."""
    files = [p for p in model_dir.rglob("*") if p.is_file() and "checkpoint" in str(p)]
    return {
        str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained to step 10 (Orbax checkpoint 10, numpy prompts 0, 5, 10)."""
    model_dir = tmp_path_factory.mktemp("trained")
    result = spot_jax_train(
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=10",
        "--gin.CHECKPOINT_PERIOD=5",
        "--gin.trainer.train.eval_data=None",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = snapshot(model_dir)
    assert any(name.startswith("checkpoints/10/") for name in files)
    assert "numpy_checkpoints/checkpoint_10/encoder.prompt.prompt.prompt" in files
    return model_dir


def test_missing_required_macro(tmp_path):
    message = the_error(spot_jax_train())
    assert "MODEL_DIR" in message and "--gin.MODEL_DIR=" in message


def test_prompt_file_of_the_wrong_shape(tmp_path):
    prompt = tmp_path / "prompt.npy"
    np.save(prompt, np.ones((6, 8), np.float32))
    model_dir = tmp_path / "run"
    message = the_error(
        spot_jax_train(
            "--gin_file=prompts/from_file.gin",
            f"--gin.PROMPT_FILE={prompt}",
            f"--gin.MODEL_DIR={model_dir}",
        )
    )
    assert "[6, 8]" in message and "[5, 8]" in message and str(prompt) in message
    assert not (model_dir / "checkpoints").exists()  # nothing trained on a wrong prompt


def test_missing_prompt_file(tmp_path):
    message = the_error(
        spot_jax_train(
            "--gin_file=prompts/from_file.gin",
            f"--gin.PROMPT_FILE={tmp_path / 'nowhere.npy'}",
            f"--gin.MODEL_DIR={tmp_path / 'run'}",
        )
    )
    assert "nowhere.npy" in message and "does not exist" in message


def test_model_dir_of_another_model_size(trained):
    before = snapshot(trained)
    original_config = (trained / "config.gin").read_text()
    for override, field in [
        ("--gin.PROMPT_LENGTH=6", "prompt_length"),
        ("--gin.config.T5Config.emb_dim=16", "emb_dim"),
    ]:
        message = the_error(
            spot_jax_train(f"--gin.MODEL_DIR={trained}", "--gin.TRAIN_STEPS=20", override)
        )
        assert field in message and "MODEL_DIR" in message, message
    assert snapshot(trained) == before
    # The refused run's config does not replace the original one without a copy.
    configs = [p.read_text() for p in trained.glob("config.gin*")]
    assert original_config in configs


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(trained):
    before = snapshot(trained)
    # An infinite z-loss coefficient makes the training loss itself non-finite, through the
    # real model and loss; the resumed run must stop at its first log line (step 15).
    message = the_error(
        spot_jax_train(
            f"--gin.MODEL_DIR={trained}",
            "--gin.TRAIN_STEPS=20",
            "--gin.CHECKPOINT_PERIOD=5",
            "--gin.Z_LOSS=1e999",
        )
    )
    assert "non-finite" in message and "(10)" in message and "LEARNING_RATE" in message
    assert snapshot(trained) == before
    assert not (trained / "numpy_checkpoints" / "checkpoint_15").exists()


def test_infinite_learning_rate_is_caught_before_it_reaches_a_checkpoint(trained):
    before = snapshot(trained)
    # Finite loss and gradient at the first step but an infinite update: with a checkpoint
    # every step it must still not be saved.
    message = the_error(
        spot_jax_train(
            f"--gin.MODEL_DIR={trained}",
            "--gin.TRAIN_STEPS=12",
            "--gin.CHECKPOINT_PERIOD=1",
            "--gin.LEARNING_RATE=1e999",
        )
    )
    assert "non-finite" in message and "step 11" in message
    assert snapshot(trained) == before


def test_a_train_checkpoint_as_initial_checkpoint_path_says_what_to_pass(trained, tmp_path):
    before = snapshot(trained)
    result = spot_jax_train(
        f"--gin.MODEL_DIR={tmp_path / 'new'}",
        f"--gin.INITIAL_CHECKPOINT_PATH='{trained / 'checkpoints' / '10'}'",
    )
    error = the_error(result)
    assert "training checkpoint" in error and "INITIAL_CHECKPOINT_PATH" in error
    assert "spot-jax export" in error
    assert snapshot(trained) == before
