"""`spot-jax convert | export | import-prompt` through the real CLI (subprocesses)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[2]
PT_TINY = REPO.parent / "shared/fixtures/t5x/prompt_tuning_test_t5_1_1_tiny/checkpoint_3"
needs_fixtures = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")


def spot_jax(*args, ok=True):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    result = subprocess.run(
        [*cli, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert (result.returncode == 0) == ok, f"{args}\n{result.stdout}\n{result.stderr[-3000:]}"
    if not ok:
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


@needs_fixtures
def test_convert_t5x_and_refusals(tmp_path):
    out = tmp_path / "frozen"
    result = spot_jax("convert", "--from", "t5x", "--input", PT_TINY, "--output", out)
    assert "emb 4, 2 heads x 2" in result.stdout and (out / "spot_model.json").exists()
    again = spot_jax("convert", "--from", "t5x", "--input", PT_TINY, "--output", out, ok=False)
    assert "not empty" in again.stderr
    wrong = spot_jax(
        "convert", "--from", "t5x", "--input", PT_TINY, "--output", tmp_path / "x",
        "--config", "t5x_test_tiny", ok=False,
    )  # fmt: skip
    assert "token_embedder/embedding has shape [32128, 4]" in wrong.stderr
    assert "[32128, 8]" in wrong.stderr
    unknown = spot_jax(
        "convert", "--from", "t5x", "--input", tmp_path, "--output", tmp_path / "y", ok=False
    )
    assert "not a T5X checkpoint" in unknown.stderr


def test_hf_convert_export_import_prompt(tmp_path, make_hf_model):
    pytest.importorskip("peft")
    from safetensors.numpy import load_file

    make_hf_model(tmp_path / "hf")
    spot_jax("convert", "--from", "hf", "--input", tmp_path / "hf", "--output", tmp_path / "f")
    prompt = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    np.save(tmp_path / "prompt.npy", prompt)
    bad = np.zeros((4, 5), np.float32)
    np.save(tmp_path / "bad.npy", bad)
    wrong = spot_jax(
        "export", "--to", "hf", "--input", tmp_path / "f", "--output", tmp_path / "bad",
        "--prompt", tmp_path / "bad.npy", ok=False,
    )  # fmt: skip
    assert "[4, 5]" in wrong.stderr and not (tmp_path / "bad").exists()
    spot_jax(
        "export", "--to", "hf", "--input", tmp_path / "f", "--output", tmp_path / "out",
        "--prompt", tmp_path / "prompt.npy",
    )  # fmt: skip
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    for k, v in exported.items():
        np.testing.assert_array_equal(v, original[k], err_msg=k)
    spot_jax(
        "import-prompt", "--from", "peft", tmp_path / "out" / "prompt_adapter",
        "--output", tmp_path / "back.npy",
    )  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), prompt)
