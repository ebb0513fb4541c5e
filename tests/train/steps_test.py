"""train_step invariants: only trainable leaves change, the optimizer holds only them, and a
non-finite step leaves the state untouched."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import synthetic
from spot_jax.models import prompted
from spot_jax.train import optim, sharding, state, steps

LENGTHS = {"inputs": 16, "targets": 8}
PROMPT = prompted.PROMPT_PATH


@pytest.fixture(scope="module")
def setup(tiny_sharded):
    model, mesh, params, shardings = tiny_sharded
    batch = sharding.global_batch(synthetic.make_batch(8, LENGTHS, 512), mesh)
    return model, mesh, params, shardings, batch


def _one_step(setup, trainable_regex, frozen_override=None, learning_rate=0.3):
    """One jitted, donating train step as the trainer runs it. Returns (before, after, ...)."""
    model, mesh, params, shardings, batch = setup
    optimizer = optim.adafactor(learning_rate)
    trainable, frozen = optim.split_trainable(params, trainable_regex)
    if frozen_override:
        frozen = {**frozen, **frozen_override}
    with sharding.active(mesh):
        train_state = jax.jit(functools.partial(state.create, optimizer=optimizer))(trainable)
        state_shardings = jax.tree.map(lambda x: x.sharding, train_state)
        before = {k: np.array(v) for k, v in {**frozen, **train_state.trainable}.items()}
        step = jax.jit(
            functools.partial(steps.train_step, model, optimizer),
            in_shardings=(
                state_shardings,
                {k: shardings[k] for k in frozen},
                sharding.batch_sharding(mesh),
                sharding.replicated(mesh),
            ),
            out_shardings=(state_shardings, sharding.replicated(mesh)),
            donate_argnums=(0,),
        )
        new_state, metrics = step(train_state, frozen, batch, jax.random.PRNGKey(0))
    return before, new_state, frozen, metrics


def _opt_state_param_names(opt_state):
    """The param names that key the optimizer state's leaves."""
    names = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        names |= {k.key for k in path if isinstance(k, jax.tree_util.DictKey)}
    return names


def test_prompt_tuning_step_changes_only_the_prompt(setup):
    before, new_state, frozen, metrics = _one_step(setup, optim.PROMPT_REGEX)
    assert set(new_state.trainable) == {PROMPT}
    assert int(new_state.step) == 1 and int(metrics["nonfinite"]) == 0
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    after = {**frozen, **new_state.trainable}
    assert set(after) == set(before) and len(after) == 53
    assert not np.array_equal(np.asarray(after[PROMPT]), before[PROMPT])
    rms = np.sqrt(np.mean(np.square(np.asarray(after[PROMPT], np.float64))))
    np.testing.assert_allclose(float(metrics["param_rms"]), rms, rtol=1e-6)
    for name, value in frozen.items():
        # Bitwise: the frozen arrays are read, never updated, donated or re-cast.
        assert value.dtype == before[name].dtype
        assert np.asarray(value).tobytes() == before[name].tobytes(), name
    assert _opt_state_param_names(new_state.opt_state) == {PROMPT}
    opt_elements = sum(x.size for x in jax.tree.leaves(new_state.opt_state))
    assert opt_elements <= 2 * before[PROMPT].size


def test_model_tuning_step_changes_every_leaf(setup):
    before, new_state, frozen, metrics = _one_step(setup, ".*")
    assert frozen == {} and int(metrics["nonfinite"]) == 0
    assert set(new_state.trainable) == set(before)
    unchanged = [
        k for k, v in new_state.trainable.items() if np.array_equal(np.asarray(v), before[k])
    ]
    assert unchanged == []
    assert _opt_state_param_names(new_state.opt_state) == set(before)


def test_nonfinite_step_keeps_the_old_state(setup):
    _, _, params, _, _ = setup
    embedding = np.array(params["token_embedder/embedding"])
    embedding[:] = np.nan
    before, new_state, _, metrics = _one_step(
        setup, optim.PROMPT_REGEX, {"token_embedder/embedding": jnp.asarray(embedding)}
    )
    assert int(metrics["nonfinite"]) == 1
    assert int(new_state.step) == 0
    np.testing.assert_array_equal(np.asarray(new_state.trainable[PROMPT]), before[PROMPT])
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(new_state.opt_state))


def test_nonfinite_update_keeps_the_old_state(setup):
    # Loss and gradient are finite; only the update is not. It must not reach the state.
    before, new_state, _, metrics = _one_step(setup, optim.PROMPT_REGEX, learning_rate=np.inf)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert int(metrics["nonfinite"]) == 1 and int(new_state.step) == 0
    np.testing.assert_array_equal(np.asarray(new_state.trainable[PROMPT]), before[PROMPT])


def test_eval_and_score_steps_use_the_merged_params(setup):
    model, _, params, _, batch = setup
    trainable, frozen = optim.split_trainable(params, optim.PROMPT_REGEX)
    metrics = jax.jit(functools.partial(steps.eval_step, model))(trainable, frozen, batch)
    scores = jax.jit(functools.partial(steps.score_step, model))(trainable, frozen, batch)
    assert scores.shape == (8,) and np.all(np.asarray(scores) < 0)
    # Summed loss = -sum of log-likelihoods + z-loss.
    np.testing.assert_allclose(
        float(metrics["loss"]) - float(metrics["z_loss"]), -float(scores.sum()), rtol=1e-5
    )
    assert float(metrics["weight_sum"]) == float(batch["decoder_loss_weights"].sum())


@pytest.mark.parametrize("trainable_regex", [optim.PROMPT_REGEX, ".*"])
def test_a_chunked_loss_trains_as_the_whole_logits_do(setup, trainable_regex):
    """loss_chunk=3 over 8 targets (chunks 3, 3, 2 + padding), on the (4, 2) mesh with the
    vocabulary sharded on 'model': same metrics and same updated params (prompt or all)."""
    model = setup[0]
    chunked = prompted.PromptedT5(model.config, model.prompt_length, loss_chunk=3)
    _, whole_state, _, whole = _one_step(setup, trainable_regex)
    _, chunked_state, _, metrics = _one_step((chunked, *setup[1:]), trainable_regex)
    for key in ("loss", "z_loss", "weight_sum", "correct_tokens", "grad_norm"):
        np.testing.assert_allclose(float(metrics[key]), float(whole[key]), rtol=1e-5, err_msg=key)
    for name, value in whole_state.trainable.items():
        np.testing.assert_allclose(
            np.asarray(chunked_state.trainable[name]), np.asarray(value), rtol=1e-4, atol=1e-6
        )
    with pytest.raises(ValueError, match="loss_chunk must be >= 0"):
        prompted.PromptedT5(model.config, model.prompt_length, loss_chunk=-1)


@pytest.mark.parametrize("scan", [False, True])
def test_the_shared_encoder_eval_step_equals_the_separate_steps(setup, scan):
    """One encoder pass for loss, greedy decode and label scores gives what the three steps
    give with an encoder pass each (scanned layers too: decoding unstacks them)."""
    model, _, params, _, batch = setup
    if scan:
        cfg = dataclasses.replace(model.config, scan_layers=True)
        model = prompted.PromptedT5(cfg, model.prompt_length)
        params = state.flatten_params(prompted.stack_layers(state.merge_params(params, {})))
    trainable, frozen = optim.split_trainable(params, optim.PROMPT_REGEX)
    candidates = jnp.asarray([[5, 6, 1, 0], [7, 1, 0, 0], [9, 9, 9, 1]], jnp.int32)
    rng = jax.random.PRNGKey(3)
    shared = jax.jit(
        functools.partial(
            steps.eval_predict_step, model, max_decode_length=8, candidates=candidates
        )
    )(trainable, frozen, batch, rng)
    metrics = jax.jit(functools.partial(steps.eval_step, model))(trainable, frozen, batch)
    tokens, scores = jax.jit(functools.partial(steps.predict_step, model, max_decode_length=8))(
        trainable, frozen, batch, rng
    )
    ranked = jax.jit(functools.partial(steps.candidate_score_step, model, candidates=candidates))(
        trainable, frozen, batch
    )
    for key, value in metrics.items():
        np.testing.assert_allclose(float(shared[0][key]), float(value), rtol=1e-6, err_msg=key)
    np.testing.assert_array_equal(np.asarray(shared[1]), np.asarray(tokens))
    np.testing.assert_allclose(np.asarray(shared[2]), np.asarray(scores), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(shared[3]), np.asarray(ranked), rtol=1e-5)
