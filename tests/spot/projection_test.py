"""Cross-model projection: projector shapes, both objectives lower their loss, a projected
library of model A loads as a library of model B, and mismatched models are refused."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spot_jax.spot import commands, library, projected_library, projection, transfer_target
from spot_jax.spot import runs as runs_lib

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
# Model B: the tiny model 1.5x wider.
WIDER = "--gin_bindings=config.T5Config.emb_dim = 12"


def _env():
    # One device per subprocess: the runs share two cores; the conftest jit cache is inherited.
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """Libraries of model A (tiny, emb 8: one run's last and initial prompts) and of model B
    (emb 12: one run)."""
    root = tmp_path_factory.mktemp("projection")
    runs = {"a1": [], "b1": [WIDER]}
    procs = {}
    for name, extra in runs.items():
        cmd = [
            sys.executable, "-m", "spot_jax.cli", "train", "--gin_file=test/tiny_prompt.gin",
            f"--gin.MODEL_DIR={root / name}", "--gin.TRAIN_STEPS=2",
            "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=2", "--gin.EVAL_STEPS=1", *extra,
        ]  # fmt: skip
        procs[name] = subprocess.Popen(
            cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"{name}\n{out[-1000:]}\n{err[-2000:]}"
    lib_a, lib_b = library.Library(root / "lib_a"), library.Library(root / "lib_b")
    lib_a.add(root / "a1")
    lib_a.add(root / "a1", name="a2", checkpoint=0)
    lib_b.add(root / "b1")
    return root, lib_a, lib_b


def _spec(src=(5, 8), tgt=(5, 12), hidden=16):
    def record(shape, fp):
        return {"fingerprint": fp, "prompt_length": shape[0], "emb_dim": shape[1]}

    return projection.ProjectorSpec(record(src, "A"), record(tgt, "B"), hidden=hidden)


def test_projector_shapes_and_per_token_norm():
    spec = _spec(src=(5, 8), tgt=(3, 12))
    params = projection.init_params(spec)
    assert params["down"]["kernel"].shape == (40, 16)
    assert params["up"]["kernel"].shape == (16, 36)
    assert params["norm"]["scale"].shape == (12,)
    prompts = np.random.default_rng(0).normal(size=(4, 5, 8))
    out = projection.project(spec, params, prompts)
    assert out.shape == (4, 3, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)  # each token normalised
    np.testing.assert_allclose(projection.project(spec, params, prompts[1]), out[1], atol=1e-6)
    with pytest.raises(projection.ProjectionError, match="source shape"):
        projection.project(spec, params, np.zeros((5, 9)))
    with pytest.raises(projection.ProjectionError, match="activation"):
        projection.ProjectorSpec(spec.source, spec.target, activation="relu6")


def test_distance_training_lowers_the_distance_and_round_trips(tmp_path):
    spec = _spec()
    rng = np.random.default_rng(1)
    xs, ys = rng.normal(size=(3, 5, 8)), rng.normal(size=(3, 5, 12))
    params, losses = projection.train_distance(spec, xs, ys, steps=60, learning_rate=1e-2)
    assert losses[-1] < 0.5 * losses[0]
    projection.save(tmp_path / "p", spec, params, objective="distance")
    spec2, params2 = projection.load(tmp_path / "p")
    assert spec2 == spec
    np.testing.assert_array_equal(
        projection.project(spec2, params2, xs), projection.project(spec, params, xs)
    )
    with pytest.raises(projection.ProjectionError, match="not a saved projector"):
        projection.load(tmp_path)


def test_task_loss_training_lowers_the_target_models_loss(libs):
    root, lib_a, _ = libs
    target = transfer_target.load_target("b", root / "b1", eval_steps=2)
    record = projection.model_record(
        target.t5_config, target.prompt_length, target.initial_checkpoint_path, target.seed
    )
    assert record["fingerprint"] == runs_lib.run_info(root / "b1")["fingerprint"]
    spec = projection.ProjectorSpec(lib_a.model(), record, hidden=16)
    source = lib_a.get("a1").prompt()
    evaluate = transfer_target.Evaluator(target)
    before = evaluate(projection.project(spec, projection.init_params(spec), source), False)
    params, losses = projection.train_task(spec, [source], [target], steps=12, learning_rate=0.05)
    after = evaluate(projection.project(spec, params, source), False)
    assert len(losses) == 12
    assert after["eval/loss"] < before["eval/loss"]
    wrong = projection.ProjectorSpec(lib_a.model(), lib_a.model(), hidden=16)
    with pytest.raises(projection.ProjectionError, match="one frozen model"):
        projection.train_task(wrong, [source], [target], steps=1)


def test_task_loss_pairs_must_be_of_one_task(libs, tmp_path):
    root, lib_a, _ = libs
    copy = tmp_path / "lib_a"
    shutil.copytree(lib_a.root, copy)
    meta = json.loads((copy / "a1" / "meta.json").read_text())
    (copy / "a1" / "meta.json").write_text(json.dumps({**meta, "task": "spot_glue_rte_v200"}))
    argv = ["train-projector", "--library", str(copy), "--out", str(tmp_path / "proj"),
            "--target", f"a1={root / 'b1'}", "--steps", "1"]  # fmt: skip
    with pytest.raises(projection.ProjectionError, match="trained on spot_glue_rte_v200 but"):
        commands.library_main(argv)
    assert not (tmp_path / "proj").exists()


def test_library_project_cli_makes_a_library_of_the_other_model(libs, tmp_path, capsys):
    root, lib_a, lib_b = libs
    proj, out = tmp_path / "proj", tmp_path / "lib_a_on_b"
    argv = ["train-projector", "--library", str(lib_a.root), "--out", str(proj),
            "--target-library", str(lib_b.root), "--steps", "20", "--hidden", "16"]  # fmt: skip
    assert commands.library_main(argv) == 0
    meta = json.loads((proj / projection.META_FILE).read_text())
    assert meta["objective"] == "distance" and meta["tasks"] == ["synthetic"]
    argv = ["project", "--library", str(lib_a.root), "--projector", str(proj), "--out", str(out),
            "--from-model", str(lib_a.root), "--to-model", str(root / "b1")]  # fmt: skip
    assert commands.library_main(argv) == 0
    projected = library.Library(out)
    assert projected.model()["fingerprint"] == lib_b.model()["fingerprint"]
    assert projected.names() == ["a1", "a2"]
    for entry in projected:
        assert entry.prompt().shape == (5, 12) and entry.embedding().shape == (5, 12)
        assert entry.meta["projected_from"]["fingerprint"] == lib_a.model()["fingerprint"]
        assert entry.meta["projected_from"]["emb_dim"] == 8
        assert entry.meta["projector"] == str(proj)
        assert entry.meta["run_dir"] == str(root / "b1")
    # A run of model B can be added to the projected library, and similarity works on it.
    projected.add(root / "b1")
    capsys.readouterr()
    assert commands.library_main(["similarity", "--library", str(out), "--metric", "c_avg"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == ",a1,a2,b1"


def test_project_refuses_mismatched_models(libs, tmp_path):
    root, lib_a, lib_b = libs
    spec = projection.ProjectorSpec(lib_a.model(), lib_b.model(), hidden=8)
    proj = projection.save(tmp_path / "proj", spec, projection.init_params(spec))
    with pytest.raises(projection.ProjectionError, match="--from-model is model"):
        projected_library.project_library(lib_a, tmp_path / "o1", proj, from_model=str(root / "b1"))
    with pytest.raises(projection.ProjectionError, match="the library is model"):
        projected_library.project_library(lib_b, tmp_path / "o2", proj)
    with pytest.raises(projection.ProjectionError, match="--to-model is model"):
        projected_library.project_library(lib_a, tmp_path / "o3", proj, to_model=str(root / "a1"))
    projected_library.project_library(lib_a, tmp_path / "o4", proj)
    with pytest.raises(projection.ProjectionError, match="already exist"):
        projected_library.project_library(lib_a, tmp_path / "o4", proj)
    with pytest.raises(projection.ProjectionError, match="share no task"):
        projection.paired_prompts(lib_a, library.Library(tmp_path / "empty"))
