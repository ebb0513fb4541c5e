"""`spot-jax convert | export | import-prompt` through the real CLI (subprocesses)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[2]
PT_TINY = (
    Path(os.environ["SPOT_JAX_TEST_SHARED"])
    / "fixtures/t5x/prompt_tuning_test_t5_1_1_tiny/checkpoint_3"
)
needs_fixtures = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")


def spot_jax(*args, ok=True, cwd=REPO):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    result = subprocess.run(
        [*cli, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
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


def test_relative_paths_are_taken_from_the_working_directory(tmp_path, make_hf_model):
    peft = pytest.importorskip("peft")
    import json

    make_hf_model(tmp_path / "hf")
    np.save(tmp_path / "prompt.npy", np.ones((3, 8), np.float32))
    spot_jax("convert", "--from", "hf", "--input", "hf", "--output", "f", cwd=tmp_path)
    assert (tmp_path / "f" / "spot_model.json").exists()
    spot_jax(
        "export", "--to", "hf", "--input", "f", "--output", "out", "--prompt", "prompt.npy",
        cwd=tmp_path,
    )  # fmt: skip
    adapter = tmp_path / "out" / "prompt_adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tmp_path / "out")
    # PEFT finds the base model from anywhere (a relative path would be read as a Hub id).
    model = peft.AutoPeftModelForSeq2SeqLM.from_pretrained(str(adapter))
    assert model.peft_config["default"].num_virtual_tokens == 3
    spot_jax(
        "import-prompt", "--from", "peft", "out/prompt_adapter", "--output", "back.npy",
        cwd=tmp_path,
    )  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), np.ones((3, 8)))
    # A frozen checkpoint named relative to the cwd restores (INITIAL_CHECKPOINT_PATH).
    import os

    from spot_jax.train import checkpoints, frozen_checkpoint

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert checkpoints.absolute_path("f") == tmp_path / "f"
        assert frozen_checkpoint.read_frozen_config("f")["emb_dim"] == 8
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_convert_leaves_nothing_and_the_rerun_works(
    tmp_path, make_hf_model, monkeypatch, existed
):
    from spot_jax.interop import commands, t5x

    make_hf_model(tmp_path / "hf")
    out = tmp_path / "f"
    if existed:
        out.mkdir()
    save_frozen = t5x.save_frozen

    def interrupted(path, *args, **kwargs):
        # What Orbax leaves when a save dies half way.
        (path / "params.orbax-checkpoint-tmp").mkdir(parents=True)
        raise OSError("no space left on device")

    monkeypatch.setattr(t5x, "save_frozen", interrupted)
    args = ["--from", "hf", "--input", str(tmp_path / "hf"), "--output", str(out)]
    with pytest.raises(OSError):
        commands.convert_main(args)
    assert out.exists() == existed and (not existed or not any(out.iterdir()))
    monkeypatch.setattr(t5x, "save_frozen", save_frozen)
    assert commands.convert_main(args) == 0 and (out / "spot_model.json").exists()


def test_export_and_import_prompt_refusals(tmp_path, make_hf_model):
    missing = spot_jax(
        "export", "--to", "hf", "--input", tmp_path / "nope", "--output", tmp_path / "o", ok=False
    )
    assert "--input" in missing.stderr and "INITIAL_CHECKPOINT_PATH" not in missing.stderr
    assert not (tmp_path / "o").exists()
    make_hf_model(tmp_path / "hf")
    spot_jax("convert", "--from", "hf", "--input", tmp_path / "hf", "--output", tmp_path / "f")
    np.save(tmp_path / "prompt.npy", np.ones((3, 8), np.float32))
    spot_jax(
        "export", "--to", "hf", "--input", tmp_path / "f", "--output", tmp_path / "out",
        "--prompt", tmp_path / "prompt.npy",
    )  # fmt: skip
    existing = tmp_path / "existing.npy"
    np.save(existing, np.zeros((2, 2), np.float32))
    before = existing.read_bytes()
    refused = spot_jax(
        "import-prompt", "--from", "peft", tmp_path / "out" / "prompt_adapter",
        "--output", existing, ok=False,
    )  # fmt: skip
    assert "exists" in refused.stderr and existing.read_bytes() == before
