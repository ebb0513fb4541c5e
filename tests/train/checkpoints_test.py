"""Checkpoints: frozen weights restored from INITIAL_CHECKPOINT_PATH, Orbax train-state and
numpy prompt round trips."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spot_jax import axes
from spot_jax.data import DatasetConfig
from spot_jax.models import config, prompted, prompts
from spot_jax.train import checkpoints, initial_params, optim, sharding, trainer
from spot_jax.train import frozen_checkpoint as frozen_format
from spot_jax.train import state as state_lib

LENGTHS = {"inputs": 16, "targets": 8}
PROMPT = prompted.PROMPT_PATH


def _model(prompt_init=None, **overrides):
    cfg = config.named_config("tiny", **{"dtype": "float32", **overrides})
    return prompted.PromptedT5(cfg, prompt_length=5, prompt_init=prompt_init)


def _build(model, mesh, path=None, seed=0):
    return initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=8,
        feature_lengths=LENGTHS,
        initial_checkpoint_path=None if path is None else str(path),
        seed=seed,
    )


@pytest.fixture(scope="module")
def frozen_checkpoint(tmp_path_factory):
    """A frozen checkpoint of the tiny model initialised with seed 7, and its arrays."""
    mesh = sharding.make_mesh(2)
    params, _ = _build(_model(), mesh, seed=7)
    path = tmp_path_factory.mktemp("frozen") / "tiny_seed7"
    frozen_format.save_frozen(path, params, _model().config)
    saved = {k: np.array(v) for k, v in params.items() if k != PROMPT}
    return path, saved


def test_restored_frozen_weights_equal_the_checkpoint(frozen_checkpoint):
    path, saved = frozen_checkpoint
    mesh = sharding.make_mesh(2)
    restored, shardings = _build(_model(), mesh, path, seed=0)
    fresh, _ = _build(_model(), mesh, seed=0)
    assert set(restored) == set(saved) | {PROMPT}
    for name, want in saved.items():
        got = restored[name]
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)
        # Restored straight into the model's shardings.
        assert got.sharding.is_equivalent_to(shardings[name], got.ndim), name
        if name.endswith("kernel"):
            # A fresh init with the same seed is something else: the check is not vacuous.
            assert not np.array_equal(np.asarray(fresh[name]), want), name


def test_a_scanned_model_restores_and_writes_per_layer_checkpoints(frozen_checkpoint, tmp_path):
    """scan_layers stacks the checkpoint's `layers_i` on the devices, in the model's shardings,
    and computes the loss the per-layer model computes; a frozen checkpoint written from the
    scanned params is per-layer again."""
    from spot_jax.data import synthetic
    from spot_jax.train import steps

    path, saved = frozen_checkpoint
    mesh = sharding.make_mesh(2)
    scanned = _model(scan_layers=True)
    params, shardings = _build(scanned, mesh, path)
    assert "encoder/layers/mlp/wi_0/kernel" in params
    for name, value in params.items():
        assert value.sharding == shardings[name], name
    per_layer = prompted.unstack_flat(params)
    assert set(per_layer) - {PROMPT} == set(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(np.asarray(per_layer[name]), value, err_msg=name)
    batch = sharding.global_batch(synthetic.make_batch(8, LENGTHS, 512), mesh)
    looped, _ = _build(_model(), mesh, path)
    losses = []
    for model, p in ((scanned, params), (_model(), looped)):
        trainable, frozen = optim.split_trainable(p, optim.PROMPT_REGEX)
        with sharding.active(mesh):
            losses.append(float(steps.eval_step(model, trainable, frozen, batch)["loss"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    frozen_format.save_frozen(tmp_path / "again", params, scanned.config)
    again, _ = _build(_model(), mesh, tmp_path / "again")
    for name, value in saved.items():
        np.testing.assert_array_equal(np.asarray(again[name]), value, err_msg=name)


def test_frozen_weights_are_read_straight_into_the_frozen_dtype(frozen_checkpoint):
    path, saved = frozen_checkpoint
    params, _ = _build(_model(frozen_dtype="bfloat16"), sharding.make_mesh(2), path)
    for name, value in saved.items():
        assert params[name].dtype == jnp.bfloat16, name
        want = np.asarray(jnp.asarray(value).astype(jnp.bfloat16))
        np.testing.assert_array_equal(np.asarray(params[name]), want, err_msg=name)
    assert params[PROMPT].dtype == jnp.float32  # the trained prompt stays float32
    fresh, _ = _build(_model(frozen_dtype="bfloat16"), sharding.make_mesh(2))  # seeded init
    assert {v.dtype for k, v in fresh.items() if k != PROMPT} == {jnp.dtype(jnp.bfloat16)}


def test_checkpoint_of_another_size_names_the_field(frozen_checkpoint):
    path, _ = frozen_checkpoint
    wider = _model(emb_dim=16)
    with pytest.raises(checkpoints.CheckpointError, match="emb_dim=8 in checkpoint vs 16"):
        _build(wider, sharding.make_mesh(2), path)
    with pytest.raises(checkpoints.CheckpointError, match="num_decoder_layers"):
        _build(_model(num_decoder_layers=3), sharding.make_mesh(2), path)
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        _build(_model(), sharding.make_mesh(2), path.parent / "nowhere")
    # Not a shape, but it changes every logit: refused too (tiny records 16).
    with pytest.raises(checkpoints.CheckpointError, match="relpos_max_distance=16 in checkpoint"):
        _build(_model(relpos_max_distance=128), sharding.make_mesh(2), path)


def test_a_relative_frozen_checkpoint_path_is_taken_from_the_cwd(
    frozen_checkpoint, tmp_path, monkeypatch
):
    path, saved = frozen_checkpoint
    monkeypatch.chdir(path.parent)
    params, _ = _build(_model(), sharding.make_mesh(2), path.name)
    name = "encoder/layers_0/mlp/wo/kernel"
    np.testing.assert_array_equal(np.asarray(params[name]), saved[name])
    monkeypatch.chdir(tmp_path)
    frozen_format.save_frozen("again", params, _model().config)
    assert frozen_format.read_frozen_config(tmp_path / "again")["emb_dim"] == 8


def test_train_uses_the_checkpointed_frozen_weights(frozen_checkpoint, tmp_path):
    """Training from seed-7 weights via the checkpoint (seed 0) equals training a seed-7 init."""
    path, _ = frozen_checkpoint
    fixed = np.random.default_rng(0).uniform(size=(5, 8)).astype(np.float32)
    data = DatasetConfig("synthetic", LENGTHS, batch_size=8, vocab_size=512)
    run = functools.partial(
        trainer.train,
        model=_model(prompts.from_array(fixed)),
        train_data=data,
        train_steps=2,
        checkpoint_period=2,
        log_period=1,
        progress=False,
    )
    from_init = run(model_dir=str(tmp_path / "a"), seed=7)
    from_ckpt = run(model_dir=str(tmp_path / "b"), seed=0, initial_checkpoint_path=str(path))
    assert from_ckpt["train/loss"] == from_init["train/loss"]
    prompt_a = np.load(checkpoints.numpy_prompt_path(tmp_path / "a", 2))
    prompt_b = np.load(checkpoints.numpy_prompt_path(tmp_path / "b", 2))
    np.testing.assert_array_equal(prompt_b, prompt_a)
    assert not np.array_equal(prompt_b, fixed)  # it trained
    # Seed 0 without the checkpoint is another model.
    other = run(model_dir=str(tmp_path / "c"), seed=0, train_steps=1)
    assert other["train/loss"] != pytest.approx(from_init["train/loss"], rel=1e-6)


def test_the_best_checkpoint_is_kept_and_an_unknown_best_metric_is_named(tmp_path):
    train_data = DatasetConfig("synthetic", LENGTHS, batch_size=8, vocab_size=512)
    eval_data = DatasetConfig(
        "synthetic", LENGTHS, split="validation", batch_size=8, vocab_size=512
    )
    run = functools.partial(
        trainer.train,
        model=_model(),
        train_data=train_data,
        eval_data=eval_data,
        checkpoint_period=1,
        eval_period=1,
        eval_steps=1,
        log_period=1,
        progress=False,
    )
    # 'max' on the loss: as the loss falls, the best is an early step, not the latest.
    run(model_dir=str(tmp_path / "a"), train_steps=4, best_metric="eval/loss", best_mode="max")
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").open()]
    best = max(records, key=lambda r: r["eval/loss"])["step"]
    assert best < 4
    kept = {int(p.name) for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.isdigit()}
    # The latest, the best, and step 0 (saved before any eval, so without metrics to rank).
    assert kept == {0, best, 4}
    with pytest.raises(ValueError, match="best_metric 'eval/accuracy' is not among .*eval/loss"):
        run(model_dir=str(tmp_path / "b"), train_steps=2, best_metric="eval/accuracy")


def _train_state(mesh):
    optimizer = optim.adafactor()
    rng = np.random.default_rng(0)
    trainable = {PROMPT: jax.device_put(rng.normal(size=(5, 8)).astype(np.float32))}
    trainable = jax.device_put(trainable, sharding.replicated(mesh))
    train_state = state_lib.create(trainable, optimizer)
    grads = {PROMPT: jnp.asarray(rng.normal(size=(5, 8)).astype(np.float32))}
    updates, opt_state = optimizer.update(grads, train_state.opt_state, trainable)
    return train_state.replace(
        step=jnp.asarray(5, jnp.int32),
        trainable=optax.apply_updates(trainable, updates),
        opt_state=opt_state,
    )


def test_orbax_train_state_round_trip(tmp_path):
    mesh = sharding.make_mesh(1)
    saved = _train_state(mesh)
    ckpt = checkpoints.TrainCheckpointer(tmp_path)
    assert ckpt.latest_step() is None
    ckpt.save(5, saved, {"step": 5, "data_position": 5})
    ckpt.close()

    again = checkpoints.TrainCheckpointer(tmp_path)
    assert again.latest_step() == 5
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), saved
    )
    restored, meta = again.restore(5, abstract)
    assert meta == {"step": 5, "data_position": 5}
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.dtype == want.dtype and got.sharding == want.sharding
    assert np.any(np.asarray(jax.tree.leaves(restored.opt_state)[0]) != 0)
    again.close()


def test_orbax_keeps_the_latest_and_refuses_another_shape(tmp_path):
    mesh = sharding.make_mesh(1)
    saved = _train_state(mesh)
    ckpt = checkpoints.TrainCheckpointer(tmp_path, keep=1)
    for step in (1, 2, 3):
        ckpt.save(step, saved, {"step": step, "data_position": step})
    assert ckpt.latest_step() == 3 and ckpt.manager.all_steps() == [3]
    wrong = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            (6, 8) if x.shape == (5, 8) else x.shape, x.dtype, sharding=x.sharding
        ),
        saved,
    )
    with pytest.raises(checkpoints.CheckpointError, match="Use a new MODEL_DIR"):
        ckpt.restore(3, wrong)
    ckpt.close()


def test_numpy_prompt_round_trip(tmp_path):
    prompt = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    flat = {PROMPT: jnp.asarray(prompt, jnp.bfloat16).astype(jnp.float32), "other/param": 1}
    paths = checkpoints.save_numpy_params(tmp_path, 20, flat)
    path = tmp_path / "numpy_checkpoints" / "checkpoint_20" / "encoder.prompt.prompt.prompt"
    assert [str(p) for p in paths] == [str(path)]
    assert path == checkpoints.numpy_prompt_path(tmp_path, 20)
    loaded = np.load(path)
    assert loaded.shape == (5, 8) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, np.asarray(flat[PROMPT]))
    from_file = prompts.from_file(str(path))(jax.random.PRNGKey(0), (5, 8))
    np.testing.assert_array_equal(np.asarray(from_file), loaded)
    # Saving the same step again replaces the file; no temporary folder is left behind.
    checkpoints.save_numpy_params(tmp_path, 20, {PROMPT: jnp.zeros((5, 8))})
    np.testing.assert_array_equal(np.load(path), np.zeros((5, 8)))
    leftovers = [p.name for p in (tmp_path / "numpy_checkpoints").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_model_dir_fingerprint_refuses_another_model(tmp_path):
    cfg = config.named_config("tiny")
    checkpoints.check_model_dir(tmp_path, cfg, 5)
    checkpoints.check_model_dir(tmp_path, cfg, 5)  # same model: fine
    with pytest.raises(checkpoints.CheckpointError, match="prompt_length: 5 in MODEL_DIR vs 6"):
        checkpoints.check_model_dir(tmp_path, cfg, 6)
    with pytest.raises(checkpoints.CheckpointError, match="mlp_dim"):
        checkpoints.check_model_dir(tmp_path, config.named_config("tiny", mlp_dim=32), 5)
