"""The prompt library on real tiny runs, end to end through `spot-jax`: add / list / show /
remove, refusal of other models' prompts, similarity and retrieval, and a target run whose
initial prompt is the library's top-k weighted average."""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_runs import snapshot  # tests/spot is on sys.path under pytest

from spot_jax.spot import commands, library, similarity, transfer

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "spot-jax"
PROMPT = "numpy_checkpoints/checkpoint_{}/encoder.prompt.prompt.prompt"
TIMEOUT = 300


def _env():
    # One device per subprocess: three runs share two cores; the conftest jit cache is inherited.
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}


def _cli(*args):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    return [*cli, *args]


def _train(model_dir, *extra, gin_files=("test/tiny_prompt.gin",)):
    files = [f"--gin_file={f}" for f in gin_files]
    return _cli("train", *files, f"--gin.MODEL_DIR={model_dir}", *extra)


def _check(proc, cmd):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"{cmd}\n{out[-2000:]}\n{err[-3000:]}"
    return out


def _run(cmd):
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    return _check(proc, cmd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs trained at once: two of one frozen model (different learning rates and
    prompt inits, so their prompts differ), and one with another prompt length."""
    root = tmp_path_factory.mktemp("runs")
    cmds = {
        "a": _train(root / "a"),
        "b": _train(
            root / "b", "--gin.LEARNING_RATE=0.3", "--gin.prompts.random_uniform.minval=-1.0"
        ),
        "p6": _train(root / "p6", "--gin.PROMPT_LENGTH=6"),
    }
    procs = {
        k: subprocess.Popen(
            c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO
        )
        for k, c in cmds.items()
    }
    for k, p in procs.items():
        _check(p, cmds[k])
    return {k: root / k for k in cmds}


def _load(path):
    return np.load(path).astype(np.float32)


def test_add_list_show_remove_round_trip(runs, tmp_path, capsys):
    lib_dir = tmp_path / "lib"
    lib = library.Library(lib_dir)
    assert commands.library_main(["add", "--library", str(lib_dir), str(runs["a"])]) == 0
    commands.library_main(
        ["add", "--library", str(lib_dir), str(runs["b"]), "--name", "b", "--checkpoint", "latest"]
    )
    assert lib.names() == ["a", "b"]
    a, b = lib.get("a"), lib.get("b")
    # 'best' is the lowest eval/loss among the evaluated checkpoints (steps 10 and 20): the
    # synthetic task has no metric fns, so there is no task metric to choose by.
    assert a.meta["selection"]["metric"] == "eval/loss" and a.meta["selection"]["fallback"]
    evals = {}
    for line in (runs["a"] / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval/loss" in record:
            evals[record["step"]] = record["eval/loss"]
    best = min(evals, key=lambda s: (evals[s], -s))
    assert a.meta["step"] == best and a.meta["validation"]["eval/loss"] == evals[best]
    assert b.meta["step"] == 20
    np.testing.assert_array_equal(a.prompt(), _load(runs["a"] / PROMPT.format(best)))
    # The task embedding is the earliest non-zero checkpoint.
    assert a.meta["embedding_step"] == 10
    np.testing.assert_array_equal(a.embedding(), _load(runs["a"] / PROMPT.format(10)))
    assert a.meta["task"] == "synthetic" and a.meta["frozen"] == "seeded-init:0"
    assert a.meta["prompt_length"] == 5 and a.meta["model"]["emb_dim"] == 8
    assert a.meta["fingerprint"] == b.meta["fingerprint"]
    assert a.meta["train_steps"] == 20 and a.meta["run_dir"] == str(runs["a"])
    assert a.meta["created"]

    capsys.readouterr()
    commands.library_main(["list", "--library", str(lib_dir)])
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("name,") and [r.split(",")[0] for r in listing[1:]] == ["a", "b"]
    commands.library_main(["show", "--library", str(lib_dir), "b"])
    assert json.loads(capsys.readouterr().out)["step"] == 20

    with pytest.raises(library.LibraryError, match="already exists"):
        lib.add(runs["a"])
    commands.library_main(["remove", "--library", str(lib_dir), "a"])
    assert lib.names() == ["b"]
    assert not any(p.name.startswith(".") for p in lib_dir.iterdir() if p.name != "library.json")
    with pytest.raises(library.LibraryError, match="no entry 'a'"):
        lib.get("a")


def test_prompts_of_other_models_are_refused_and_nothing_changes(runs, tmp_path):
    lib_dir = tmp_path / "lib"
    lib = library.Library(lib_dir)
    lib.add(runs["a"])
    before = snapshot(lib_dir)
    with pytest.raises(library.LibraryError, match="prompt_length 6 .new. vs 5"):
        lib.add(runs["p6"])
    assert snapshot(lib_dir) == before
    # Same shape, other frozen model: a seeded init with another SEED.
    other = tmp_path / "other_seed"
    shutil.copytree(runs["a"], other, ignore=shutil.ignore_patterns("checkpoints"))
    config = (other / "config.gin").read_text()
    (other / "config.gin").write_text(re.sub(r"(?m)^SEED = 0$", "SEED = 1", config))
    with pytest.raises(library.LibraryError, match="fingerprint"):
        lib.add(other)
    assert snapshot(lib_dir) == before
    # A run that trained per-layer prompts: its input prompt alone is not what it learned.
    per_layer = tmp_path / "per_layer"
    shutil.copytree(runs["a"], per_layer, ignore=shutil.ignore_patterns("checkpoints"))
    record = json.loads((per_layer / "model.json").read_text())
    (per_layer / "model.json").write_text(json.dumps({**record, "per_layer_prompt": "add"}))
    with pytest.raises(library.LibraryError, match="per_layer_prompt='none'"):
        lib.add(per_layer)
    assert snapshot(lib_dir) == before
    # Through the CLI: one line, exit 1.
    result = subprocess.run(
        _cli("library", "add", "--library", str(lib_dir), str(runs["p6"])),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "another model" in result.stderr
    assert snapshot(lib_dir) == before


def test_concurrent_adds_keep_the_library_whole(runs, tmp_path):
    lib = library.Library(tmp_path / "lib")
    names = [f"e{i}" for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: lib.add(runs["a" if n < "e3" else "b"], name=n), names))
    assert lib.names() == names
    assert all(e.prompt().shape == (5, 8) for e in lib)
    assert sorted(p.name for p in lib.root.iterdir()) == sorted(["library.json", *names])


def test_cli_library_similarity_retrieve_and_weighted_average_target_run(runs, tmp_path):
    lib_dir, out = tmp_path / "lib", tmp_path / "out"
    out.mkdir()
    for name in ("a", "b"):
        _run(_cli("library", "add", "--library", str(lib_dir), str(runs[name])))
    lib = library.Library(lib_dir)
    emb = {n: _load(runs[n] / PROMPT.format(10)) for n in ("a", "b")}

    # Every metric: matrix CSV (header of names, a row per entry) equal to the pairwise metric.
    for metric in similarity.METRICS:
        csv = out / f"{metric}.csv"
        args = ["similarity", "--library", str(lib_dir), "--metric", metric, "--out", str(csv)]
        if metric == "avg_tokens":
            args += ["--plot", str(out / "heatmap.png")]
        commands.library_main(args)
        rows = [r.split(",") for r in csv.read_text().splitlines()]
        assert rows[0] == ["", "a", "b"] and [r[0] for r in rows[1:]] == ["a", "b"]
        m = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
        np.testing.assert_allclose(m, m.T)
        want = similarity.get(metric)(emb["a"], emb["b"])
        assert m[0, 1] == pytest.approx(want, rel=1e-6)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # ON on the run's own frozen model (rebuilt from its config.gin and SEED).
    commands.library_main(
        ["similarity", "--library", str(lib_dir), "--metric", "on", "--out", str(out / "on.csv")]
    )
    rows = [r.split(",") for r in (out / "on.csv").read_text().splitlines()]
    on = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(np.diag(on), 1.0)
    assert on[0, 1] == on[1, 0] and 0.0 <= on[0, 1] <= 1.0

    # Ranking against a target prompt file, then retrieval from the real CLI.
    commands.library_main(
        ["similarity", "--library", str(lib_dir), "--metric", "e_avg", "--target",
         str(runs["b"] / PROMPT.format(10)), "--out", str(out / "rank.csv")]
    )  # fmt: skip
    assert (out / "rank.csv").read_text().splitlines()[:2][1].split(",")[0] == "b"
    text = _run(
        _cli("library", "retrieve", "--library", str(lib_dir), "--target", str(runs["a"]),
             "--k", "2", "--metric", "e_avg")
    )  # fmt: skip
    lines = text.strip().splitlines()
    assert lines[0] == "name,score" and [ln.split(",")[0] for ln in lines[1:]] == ["a", "b"]

    # A target run initialised by the top-2 weighted average (by e_avg, always positive).
    target = tmp_path / "target"
    _run(
        _train(
            target,
            f"--gin.LIBRARY_DIR={lib_dir}",
            f"--gin.TARGET_EMBEDDING={runs['a']}",
            "--gin.TOP_K=2",
            "--gin.SIMILARITY_METRIC=e_avg",
            "--gin.TRAIN_STEPS=1",
            gin_files=("test/tiny_prompt.gin", "spot/target_from_library.gin"),
        )
    )
    sims = np.array([similarity.e_avg(emb[n], emb["a"]) for n in ("a", "b")], np.float64)
    alphas = sims / sims.sum()
    want = alphas[0] * lib.get("a").prompt() + alphas[1] * lib.get("b").prompt()
    np.testing.assert_allclose(_load(target / PROMPT.format(0)), want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(want, lib.get("a").prompt())  # both sources contribute
    prompt, weights = transfer.weighted_average(lib, runs["a"], k=2, metric="e_avg")
    assert [n for n, _ in weights] == ["a", "b"]
    np.testing.assert_allclose(prompt, want, rtol=1e-6)
