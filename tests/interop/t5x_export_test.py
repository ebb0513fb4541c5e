"""spot_jax -> T5X checkpoint: the real fixture converted and written back, read independently
(plain msgpack + hand-gunzipped zarr, and flax's msgpack_restore as T5X reads it)."""

import os
import subprocess
import sys
from pathlib import Path

import flax.serialization
import ml_dtypes
import msgpack
import numpy as np
import pytest
from t5x_test import read_zarr, reference_read

from spot_jax.interop import t5x, t5x_export
from spot_jax.models.prompted import PROMPT_PATH
from spot_jax.train.checkpoints import CheckpointError

PT_TINY = (
    Path(os.environ["SPOT_JAX_TEST_SHARED"])
    / "fixtures/t5x/prompt_tuning_test_t5_1_1_tiny/checkpoint_3"
)
needs_fixtures = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")
CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[2]


def cli(*args, ok=True):
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    result = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert (result.returncode == 0) == ok, f"{args}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def keys(tree, prefix=""):
    if isinstance(tree, dict) and "driver" not in tree:
        return {k for name, v in tree.items() for k in keys(v, f"{prefix}/{name}".lstrip("/"))}
    return {prefix}


@needs_fixtures
def test_the_fixture_written_back_is_the_fixture_plus_the_prompt(tmp_path):
    cli("convert", "--from", "t5x", "--input", PT_TINY, "--output", tmp_path / "frozen")
    prompt = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "prompt.npy", prompt)
    out = tmp_path / "t5x"
    result = cli(
        "export", "--to", "t5x", "--input", tmp_path / "frozen", "--output", out,
        "--prompt", tmp_path / "prompt.npy",
    )  # fmt: skip
    ckpt = out / "checkpoint_3"  # the fixture's global step travels through the conversion
    assert f"wrote T5X checkpoint {ckpt}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_3"]  # no .tmp- dir left

    want = reference_read(PT_TINY / "checkpoint")
    got = reference_read(ckpt / "checkpoint")
    assert set(got) == set(want) | {PROMPT_PATH}
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    np.testing.assert_array_equal(got[PROMPT_PATH], prompt)

    # What T5X's Checkpointer.restore does first: flax's msgpack_restore of the file.
    root = flax.serialization.msgpack_restore((ckpt / "checkpoint").read_bytes())
    assert root["version"] == 3 and set(root["optimizer"]) == {"target", "state"}
    assert int(root["optimizer"]["state"]["step"]) == 3
    assert root["optimizer"]["state"]["step"].dtype == np.int32
    fixture = msgpack.unpackb(
        (PT_TINY / "checkpoint").read_bytes(), ext_hook=lambda c, d: None, strict_map_key=False
    )
    assert keys(root["optimizer"]["target"]) == keys(fixture["optimizer"]["target"]) | {PROMPT_PATH}
    spec = root["optimizer"]["target"]["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    # Relative to the checkpoint dir (portable): T5X's spec for a local dir, as tensorstore's
    # Spec.to_json writes it (a directory path ends in "/").
    assert spec["kvstore"]["driver"] == "file"
    assert spec["kvstore"]["path"].rstrip("/") == "target.encoder.layers_0.mlp.wi_0.kernel"
    assert spec["driver"] == "zarr" and spec["metadata"]["compressor"]["id"] == "gzip"

    # And our own T5X reader takes it back as a model.
    again = t5x.T5XCheckpoint(ckpt)
    assert again.step() == 3

    # --step names T5X's global step; bad requests are refused before anything is written.
    cli("export", "--to", "t5x", "--input", tmp_path / "frozen", "--output", out / "s", "--step", 7)
    assert t5x.T5XCheckpoint(out / "s" / "checkpoint_7").step() == 7
    for bad, says in ((["--step", "-1"], "--step -1"), (["--vocabulary", PT_TINY], "--to hf")):
        args = ["--input", tmp_path / "frozen", "--output", tmp_path / "bad", *bad]
        assert says in cli("export", "--to", "t5x", *args, ok=False).stderr
        assert not (tmp_path / "bad").exists()


def test_bfloat16_export_and_chunking(tmp_path):
    rng = np.random.default_rng(1)
    values = {"a/kernel": rng.normal(size=(12, 8)).astype(np.float32), "b/scale": np.ones(5)}
    shapes = {k: v.shape for k, v in values.items()}
    ckpt = t5x_export.write(values.__getitem__, shapes, tmp_path, 7, "bfloat16", log=print)
    array = read_zarr(Path(ckpt) / "target.a.kernel")
    assert array.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(array, values["a/kernel"].astype(ml_dtypes.bfloat16))
    # T5X's rule: the largest chunk dim steps down through its divisors (first on ties).
    assert t5x_export.chunk_shape((12, 8), 10) == [3, 2]
    assert t5x_export.chunk_shape((32128, 4), 16 << 20) == [32128, 4]
    assert t5x_export.chunk_shape((32128, 4096), (64 << 20) // 4) == [4016, 4096]
    for shape, limit in (((12, 8), 10), ((7, 9, 10), 20), ((1,), 1)):
        chunks = t5x_export.chunk_shape(shape, limit)
        assert all(n % c == 0 for n, c in zip(shape, chunks, strict=True))


def test_refusals_leave_nothing_behind(tmp_path):
    good = {"a/kernel": np.ones((2, 3), np.float32)}
    nan = {"a/kernel": np.ones((2, 3), np.float32), "b/kernel": np.full((2,), np.nan)}
    with pytest.raises(CheckpointError, match="b/kernel holds NaN"):
        t5x_export.write(nan.__getitem__, {k: v.shape for k, v in nan.items()}, tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"has shape \[2, 3\], the model needs \[3, 2\]"):
        t5x_export.write(good.__getitem__, {"a/kernel": (3, 2)}, tmp_path, 1)
    assert list(tmp_path.iterdir()) == []
    t5x_export.write(good.__getitem__, {"a/kernel": (2, 3)}, tmp_path, 1, log=print)
    with pytest.raises(CheckpointError, match="already holds a T5X checkpoint"):
        t5x_export.write(good.__getitem__, {"a/kernel": (2, 3)}, tmp_path, 1)
    with pytest.raises(CheckpointError, match="dtype 'float16'"):
        t5x_export.write(good.__getitem__, {"a/kernel": (2, 3)}, tmp_path, 2, "float16")


def test_param_states_are_written_as_t5x_multioptimizer_saves_them(tmp_path):
    values = {"a/kernel": np.ones((2, 3), np.float32), "b/scale": np.full((3,), 2.0, np.float32)}
    shapes = {k: v.shape for k, v in values.items()}
    v = np.arange(6, dtype=np.float32).reshape(2, 3)
    states = {"a/kernel": {"v": v, "v_row": np.zeros(1), "v_col": np.zeros(1), "m": np.zeros(1)}}
    ckpt = t5x_export.write(values.__getitem__, shapes, tmp_path, 5, param_states=states, log=print)
    root = flax.serialization.msgpack_restore((Path(ckpt) / "checkpoint").read_bytes())
    param_states = root["optimizer"]["state"]["param_states"]
    assert param_states["b"]["scale"] is None  # not trained: MultiOptimizer's None
    kernel = param_states["a"]["kernel"]
    assert set(kernel) == {"v", "v_row", "v_col", "m"}
    np.testing.assert_array_equal(kernel["v_row"], np.zeros(1))  # inline, like T5X's
    assert kernel["v"]["kvstore"]["path"].rstrip("/") == "state.param_states.a.kernel.v"
    np.testing.assert_array_equal(read_zarr(Path(ckpt) / "state.param_states.a.kernel.v"), v)
    with pytest.raises(CheckpointError, match="not in the model"):
        t5x_export.write(values.__getitem__, shapes, tmp_path / "x", 5, param_states={"c": {}})


def trained_run(run_dir: Path, trainable: dict):
    """A run's train checkpoint after two Adafactor steps on `trainable`; its state."""
    from spot_jax.train import checkpoints, optim
    from spot_jax.train import state as state_lib

    rng = np.random.default_rng(1)
    optimizer = optim.adafactor()
    state = state_lib.create(trainable, optimizer)
    for _ in range(2):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in trainable.items()}
        _, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        state = state.replace(opt_state=opt_state, step=state.step + 1)
    saver = checkpoints.TrainCheckpointer(run_dir)
    saver.save(2, state, meta={})
    saver.close()
    return state, optimizer


def factored_states(opt_state):
    import jax
    import optax

    is_factored = lambda n: isinstance(n, optax.FactoredState)  # noqa: E731
    return [n for n in jax.tree.leaves(opt_state, is_leaf=is_factored) if is_factored(n)][0]


@pytest.mark.parametrize("scanned", [False, True], ids=["layers", "stacked"])
def test_a_runs_adafactor_states_go_to_t5x_and_come_back(tmp_path, scanned):
    """Ours -> T5X -> ours: a run's factored and unfactored moments, exported by
    `read_adafactor_states` + `write`, restore (`restore_t5x_states`) to the same state; a
    scanned run's stacked params as T5X's `layers_<i>`, one layer's moments each."""
    from spot_jax.interop import run_weights, t5x_states
    from spot_jax.models.prompted import unstack_flat
    from spot_jax.train import optimizer_states
    from spot_jax.train import state as state_lib

    rng = np.random.default_rng(0)
    wi, norm = "mlp/wi_0/kernel", "pre_mlp_layer_norm/scale"
    if scanned:  # factored (both dims >= 128, the layer axis kept), and never factored
        shapes = {f"encoder/layers/{wi}": (2, 256, 160), f"encoder/layers/{norm}": (2, 300)}
    else:
        shapes = {f"encoder/layers_0/{wi}": (256, 160), "decoder/decoder_norm/scale": (300,)}
    trainable = {k: rng.normal(size=v).astype(np.float32) for k, v in shapes.items()}
    state, optimizer = trained_run(tmp_path / "run", trainable)

    states = run_weights.read_adafactor_states(tmp_path / "run")
    factored = states[f"encoder/layers_{int(scanned)}/{wi}"]
    assert {factored["v_row"].shape, factored["v_col"].shape} == {(256,), (160,)}
    assert factored["v"].shape == (1,)  # factored: the full moment is T5X's placeholder
    per_layer = unstack_flat(trainable)
    assert set(states) == set(per_layer)
    ckpt = t5x_export.write(
        per_layer.__getitem__,
        {k: v.shape for k, v in per_layer.items()},
        tmp_path / "t5x",
        2,
        param_states=states,
    )
    fresh = state_lib.create(trainable, optimizer).opt_state
    back = optimizer_states.restore_t5x_states(fresh, shapes, t5x_states.T5XParamStates(ckpt))
    want, got = factored_states(state.opt_state), factored_states(back)
    matrix, vector = sorted(trainable, key=lambda k: "scale" in k)
    assert np.asarray(want.v_row[matrix]).min() > 0 and np.asarray(want.v[vector]).min() > 0
    for slot in ("v_row", "v_col", "v"):
        for name in trainable:
            np.testing.assert_array_equal(
                getattr(got, slot)[name], getattr(want, slot)[name], err_msg=(slot, name)
            )


def test_a_stack_factored_over_its_layers_exports_no_states(tmp_path):
    from spot_jax.interop import run_weights

    # 200 layers of [256, 64]: optax factors the stack over (layers, 256), so no layer's
    # moments are there to write.
    trainable = {"encoder/layers/mlp/wo/kernel": np.ones((200, 256, 64), np.float32)}
    trained_run(tmp_path / "run", trainable)
    logged = []
    assert run_weights.read_adafactor_states(tmp_path / "run", log=logged.append) is None
    assert "factored over its layer axis" in logged[-1]
