"""A T5X checkpoint's Adafactor states restored into our optimizer state, on the real fixture
(its `param_states` read here with plain msgpack) and in a model-tuning run from it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from adafactor_helpers import factored_state, model_tune_adafactor
from flax import traverse_util

from spot_jax import axes
from spot_jax.interop import t5x_states
from spot_jax.models.config import named_config
from spot_jax.models.prompted import PromptedT5, layer_name
from spot_jax.train import (
    checkpoints,
    frozen_checkpoint,
    initial_params,
    optim,
    optimizer_states,
    sharding,
)
from spot_jax.train import state as state_lib

PT_TINY = (
    Path(os.environ["SPOT_JAX_TEST_SHARED"])
    / "fixtures/t5x/prompt_tuning_test_t5_1_1_tiny/checkpoint_3"
)
needs_fixtures = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")
LENGTHS = {"inputs": 8, "targets": 4}


def fixture_param_states() -> dict[str, dict[str, np.ndarray]]:
    """optimizer/state/param_states of the fixture's msgpack, read with plain msgpack."""

    def hook(code, data):
        if code == 1:
            shape, dtype, buf = msgpack.unpackb(data)
            return np.frombuffer(buf, dtype=dtype).reshape(shape)
        return msgpack.ExtType(code, data)

    root = msgpack.unpackb(
        (PT_TINY / "checkpoint").read_bytes(), ext_hook=hook, strict_map_key=False
    )
    out = {}

    def walk(node, prefix):
        if set(node) == {"m", "v", "v_row", "v_col"}:
            out[prefix] = node
        else:
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else k)

    walk(root["optimizer"]["state"]["param_states"], "")
    return out


def fixture_params(model, mesh):
    """The model's params with the fixture's frozen weights."""
    params, _ = initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=8,
        feature_lengths=LENGTHS,
        initial_checkpoint_path=str(PT_TINY),
        seed=0,
    )
    return params


def fresh_state(model, optimizer, mesh):
    trainable, _ = optim.split_trainable(fixture_params(model, mesh), ".*")
    with sharding.active(mesh):
        state = jax.jit(
            lambda t: state_lib.create(t, optimizer, frozen_checkpoint.pretrained_step(PT_TINY))
        )(trainable)
    return state


# ---------------------------------------------------------------------------------------------
# The real fixture: its unfactored `v` land in our state.


@needs_fixtures
@pytest.mark.parametrize("scan", [False, True])
def test_the_fixtures_second_moments_land_in_our_state(scan, capsys):
    model = PromptedT5(named_config("pt_test_tiny", scan_layers=scan), prompt_length=0)
    mesh = sharding.make_mesh(2)
    state = fresh_state(model, model_tune_adafactor(), mesh)
    before = factored_state(state.opt_state)
    restored = optimizer_states.restore_for_run(str(PT_TINY), state, model, LENGTHS)
    assert "Restored the Adafactor states of" in capsys.readouterr().out
    after = factored_state(restored.opt_state)
    want = fixture_param_states()
    used = set()
    for name in state.trainable:
        n = state.trainable[name].shape[0]
        keys = [layer_name(name, i) for i in range(n)] if "/layers/" in name else [name]
        used.update(keys)
        v = (
            np.stack([want[k]["v"] for k in keys])
            if scan and "/layers/" in name
            else want[keys[0]]["v"]
        )
        got = after.v[name]
        np.testing.assert_array_equal(np.asarray(got), v, err_msg=name)
        assert got.sharding == before.v[name].sharding, name
        assert np.abs(np.asarray(before.v[name])).max() == 0.0  # a fresh state had zeros
        # Every param of the tiny model is unfactored (dims < 128): v_row/v_col stay dummies.
        assert after.v_row[name].shape == after.v_col[name].shape == (1,)
    assert used == set(want) and len(want) == 52
    assert int(after.count) == 3  # the checkpoint's step, as T5X continues it


@needs_fixtures
def test_the_fixtures_states_on_a_model_of_another_shape_name_the_param():
    states = t5x_states.T5XParamStates(PT_TINY)
    wi = "encoder/layers_0/mlp/wi_0/kernel"
    optimizer = model_tune_adafactor()
    opt_state = optimizer.init({wi: jnp.zeros((4, 16))})
    with pytest.raises(
        checkpoints.CheckpointError, match=rf"v of parameter {wi} has shape \[4, 8\].*\[4, 16\]"
    ):
        optimizer_states.restore_t5x_states(opt_state, {wi: (4, 16)}, states, log=print)


# ---------------------------------------------------------------------------------------------
# Orbax T5X checkpoints, and checkpoints without states.


def orbax_t5x(path: Path, with_states: bool) -> Path:
    """The fixture rewritten as a T5X Orbax checkpoint (`state/` PyTree), states optional."""
    import orbax.checkpoint as ocp

    from spot_jax.interop import t5x

    ckpt = t5x.T5XCheckpoint(PT_TINY)
    target = {name: np.asarray(ckpt.read(name)) for name in ckpt.names()}
    state = {"step": np.int32(3)}
    if with_states:
        flat = {
            f"{p}/{s}": np.asarray(a)
            for p, slots in fixture_param_states().items()
            for s, a in slots.items()
        }
        state["param_states"] = traverse_util.unflatten_dict(flat, sep="/")
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(
            path / "state",
            {"target": traverse_util.unflatten_dict(target, sep="/"), "state": state},
        )
    return path


@needs_fixtures
def test_orbax_t5x_states_are_restored(tmp_path, capsys):
    path = orbax_t5x(tmp_path / "checkpoint_3", with_states=True)
    model = PromptedT5(named_config("pt_test_tiny"), prompt_length=0)
    state = fresh_state(model, model_tune_adafactor(), sharding.make_mesh(1))
    restored = optimizer_states.restore_for_run(str(path), state, model, LENGTHS)
    assert "Restored the Adafactor states of 52 params" in capsys.readouterr().out
    fs = factored_state(restored.opt_state)
    for name, slots in fixture_param_states().items():
        np.testing.assert_array_equal(np.asarray(fs.v[name]), slots["v"], err_msg=name)


@needs_fixtures
def test_checkpoints_without_states_start_fresh_with_a_note(tmp_path, capsys):
    from spot_jax.interop import t5x

    model = PromptedT5(named_config("pt_test_tiny"), prompt_length=0)
    state = fresh_state(model, model_tune_adafactor(), sharding.make_mesh(1))
    t5x.convert(PT_TINY, tmp_path / "frozen", log=lambda _: None)
    sources = [orbax_t5x(tmp_path / "orbax", with_states=False), tmp_path / "frozen", None]
    for source in sources:
        same = optimizer_states.restore_for_run(
            None if source is None else str(source), state, model, LENGTHS
        )
        assert same is state
        out = capsys.readouterr().out
        assert "Note: RESTORE_OPTIMIZER_STATE" in out and "starts fresh" in out, source


@needs_fixtures
def test_prompt_tuning_restores_nothing(capsys):
    # Its only trainable param is the new prompt: no state to look for, nothing said.
    model = PromptedT5(named_config("pt_test_tiny"), prompt_length=3)
    params = fixture_params(model, sharding.make_mesh(1))
    trainable, _ = optim.split_trainable(params, optim.PROMPT_REGEX)
    state = state_lib.create(trainable, optim.adafactor(), 3)
    assert optimizer_states.restore_for_run(str(PT_TINY), state, model, LENGTHS) is state
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# A model-tuning run from the fixture, as runs/model_tune.gin configures it.


def opt_state_slots(run_dir: Path, step: int) -> dict[str, dict[str, np.ndarray]]:
    """{'v'|'v_row'|'v_col'|'count': {param: array}} of a saved train state's FactoredState."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(run_dir / "checkpoints" / str(step) / "state")
    assert int(state["step"]) == step
    out: dict[str, dict] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state["opt_state"]):
        keys = [str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path]
        if keys[-1] == "count":
            out.setdefault("count", {})[keys[0]] = int(leaf)
        elif len(keys) >= 3 and keys[-2] in ("v", "v_row", "v_col"):
            out.setdefault(keys[-2], {})[keys[-1]] = np.asarray(leaf)
    return out


@needs_fixtures
def test_model_tuning_from_the_fixture_goes_on_with_its_adafactor_states(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    cli = Path(sys.executable).parent / "spot-jax"
    cli = [str(cli)] if cli.exists() else [sys.executable, "-m", "spot_jax.cli"]
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--gin_file=models/t5_1_1/pt_test_tiny.gin",
        "--gin_file=runs/model_tune.gin",  # RESTORE_OPTIMIZER_STATE = True
        f"--gin.MODEL_DIR='{run_dir}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{PT_TINY}'",
        "--gin.MIXTURE_OR_TASK_NAME='synthetic'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 4}",
        "--gin.TRAIN_STEPS=2",
        "--gin.BATCH_SIZE=8",
        "--gin.CHECKPOINT_PERIOD=1",
        "--gin.KEEP_CHECKPOINTS=3",
        "--gin.EVAL_PERIOD=2",
        "--gin.EVAL_STEPS=1",
        "--gin.DROPOUT_RATE=0.0",
        "--gin.train/data_config.DatasetConfig.vocab_size=64",
        "--gin.validation/data_config.DatasetConfig.vocab_size=64",
    ]
    result = subprocess.run(
        [*cli, *args], capture_output=True, text=True, env=env, cwd=repo, timeout=600
    )
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Restored the Adafactor states of 52 params" in result.stdout

    want = fixture_param_states()
    start, one, two = (opt_state_slots(run_dir, s) for s in (0, 1, 2))
    assert set(start["v"]) == set(want)
    for name, slots in want.items():
        # The saved start state holds the checkpoint's second moments...
        np.testing.assert_array_equal(start["v"][name], slots["v"], err_msg=name)
        # ...and step 1 decays them (count 3: 1 - 4^-0.8) and adds (1 - decay) * grad^2 >= 0.
        decay = 1.0 - 4.0**-0.8
        assert (one["v"][name] >= decay * slots["v"] * (1 - 1e-6)).all(), name
        assert not np.array_equal(one["v"][name], slots["v"]), name
    assert list(two["count"].values()) == [3 + 2]  # T5X's global step goes on
    metrics = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    assert metrics and "eval/loss" in metrics[-1]
