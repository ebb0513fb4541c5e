"""Zero-shot transfer on two tiny runs of one frozen model (same SEED, different
LEARNING_RATE): the matrix's diagonal is each run's own evaluation, relative mode divides it
out, and gin-file targets read the same task as the runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spot_jax.spot import commands, library, transfer_target, zero_shot
from spot_jax.spot import runs as runs_lib

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "spot-jax"
TIMEOUT = 300


def _env():
    # One device per subprocess: the runs share two cores; the conftest jit cache is inherited.
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Two tiny runs trained at once through the CLI, added to a library at their last step."""
    root = tmp_path_factory.mktemp("zero_shot")
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    cmds = {
        name: [*cli, "train", "--gin_file=test/tiny_prompt.gin", f"--gin.MODEL_DIR={root / name}",
               "--gin.SEED=0", f"--gin.LEARNING_RATE={lr}"]
        for name, lr in (("a", 0.003), ("b", 0.3))
    }  # fmt: skip
    procs = {
        k: subprocess.Popen(
            c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO
        )
        for k, c in cmds.items()
    }
    for k, proc in procs.items():
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"{cmds[k]}\n{out[-2000:]}\n{err[-3000:]}"
    lib_dir = root / "lib"
    for name in cmds:
        commands.library_main(
            ["add", "--library", str(lib_dir), str(root / name), "--checkpoint", "latest"]
        )
    return library.Library(lib_dir), {k: root / k for k in cmds}


def _own_eval(run: Path, metric: str) -> float:
    """The run's own evaluation of its final prompt, as training logged it."""
    metrics = runs_lib.read_metrics(run)
    return metrics[max(metrics)][metric]


def test_diagonal_is_each_runs_own_evaluation(lib):
    lib_, runs = lib
    result = zero_shot.zero_shot(lib_, metric="eval/loss", log=None)
    assert result.sources == ["a", "b"] and result.targets == ["a", "b"]
    assert result.scores.shape == (2, 2)
    for i, name in enumerate(["a", "b"]):
        assert result.scores[i, i] == pytest.approx(_own_eval(runs[name], "eval/loss"), rel=1e-5)
        assert result.own[i] == result.scores[i, i]
        # Every metric evaluate returns is kept (no decoding for a loss).
        assert "eval/token_accuracy" in result.metrics[(name, name)]
    # The prompts differ, so their rows do; both targets are the same synthetic task.
    assert result.scores[0, 0] != pytest.approx(result.scores[1, 0], rel=1e-6)
    np.testing.assert_allclose(result.scores[:, 0], result.scores[:, 1], rtol=1e-5)
    np.testing.assert_allclose(np.diag(result.relative()), 1.0)


def test_cli_relative_with_run_and_gin_targets(lib, tmp_path, capsys):
    lib_, runs = lib
    out, png = tmp_path / "m.csv", tmp_path / "heat.png"
    argv = ["zero-shot", "--library", str(lib_.root), "--metric", "eval/loss",
            "--target", f"a={runs['a']}", "--target", f"b={runs['b']}",
            "--target", "g=test/tiny_prompt.gin", "--own", "g=a",
            "--relative", "--out", str(out), "--plot", str(png)]  # fmt: skip
    assert commands.library_main(argv) == 0
    rows, cols, values = zero_shot.read_csv(out)
    assert rows == ["a", "b"] and cols == ["a", "b", "g"]
    np.testing.assert_allclose(np.diag(values[:, :2]), 1.0, rtol=1e-6)
    # The gin file describes the same task, frozen model and eval batches as run a.
    np.testing.assert_allclose(values[:, 2], values[:, 0], rtol=1e-5)
    assert png.exists() and png.stat().st_size > 0
    assert "own prompt entry a" in capsys.readouterr().err


def test_relative_needs_a_nonzero_own_score():
    r = zero_shot.Result(["x"], ["t"], "eval/sequence_accuracy", np.ones((1, 1)), np.zeros(1), {})
    with pytest.raises(ValueError, match="relative scores are undefined"):
        r.relative()
    r.own = np.array([np.nan])
    with pytest.raises(ValueError, match="--own"):
        r.to_csv(relative=True)
    r.own = np.array([2.0])
    assert r.to_csv(relative=True) == "source,t\nx,0.5\n"


def test_target_specs():
    assert transfer_target.parse_target_spec("t=/x/run") == ("t", "/x/run")
    assert transfer_target.parse_target_spec("/x/run/") == ("run", "/x/run/")
    assert transfer_target.parse_target_spec("test/tiny_prompt.gin") == (
        "tiny_prompt",
        "test/tiny_prompt.gin",
    )
    with pytest.raises(ValueError, match="neither a run directory nor a gin file"):
        transfer_target.load_target("t", "/no/such/thing")


def test_a_multi_task_config_is_no_transfer_target():
    multi = ["MODEL_DIR = '/tmp/unused'", "MULTI_TASK_PROMPT = 'add'", "NUM_TASKS = 2"]
    with pytest.raises(ValueError, match="multi-task prompt .* plain MIXTURE_OR_TASK_NAME"):
        transfer_target.load_target("t", "test/tiny_prompt.gin", bindings=multi)
    plain = transfer_target.load_target("t", "test/tiny_prompt.gin", ["MODEL_DIR = '/tmp/x'"])
    assert plain.prompt_length == 5
