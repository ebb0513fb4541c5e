"""Adafactor against a hand computation of T5X's update rule; schedules; trainable split."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spot_jax.train import optim

LR, WD, EPS1 = 0.3, 1e-5, 1e-30


def _decay(step, exponent=0.8):
    """T5X's second-moment decay at (0-based) step: 1 - (step + 1)^-0.8."""
    return 1.0 - (step + 1.0) ** (-exponent)


def _clip(u, threshold=1.0):
    return u / max(1.0, float(np.sqrt(np.mean(u**2))) / threshold)


def t5x_unfactored(param, grads, global_step=0):
    """T5X Adafactor, unfactored v, no parameter scale, decoupled weight decay (numpy); the
    decay reads the global step, starting at `global_step` (a pretrained checkpoint's)."""
    param = param.astype(np.float64)
    v = np.zeros_like(param)
    for step, g in enumerate(grads, start=global_step):
        g = g.astype(np.float64)
        decay = _decay(step)
        v = decay * v + (1 - decay) * (g**2 + EPS1)
        u = _clip(g / np.sqrt(v))
        param = (1 - WD) * param - LR * u
    return param


def t5x_factored(param, grads):
    """T5X Adafactor with factored second moments for a 2-D param (row = dim 0 here)."""
    param = param.astype(np.float64)
    v_row = np.zeros(param.shape[0])
    v_col = np.zeros(param.shape[1])
    for step, g in enumerate(grads):
        g = g.astype(np.float64)
        decay = _decay(step)
        g2 = g**2 + EPS1
        v_row = decay * v_row + (1 - decay) * g2.mean(axis=1)
        v_col = decay * v_col + (1 - decay) * g2.mean(axis=0)
        row_factor = 1 / np.sqrt(v_row / v_row.mean())
        col_factor = 1 / np.sqrt(v_col)
        u = _clip(g * row_factor[:, None] * col_factor[None, :])
        param = (1 - WD) * param - LR * u
    return param


def _run(opt, param, grads, global_step=0):
    params = {"p": jnp.asarray(param)}
    state = optim.at_global_step(opt.init(params), global_step)
    for g in grads:
        updates, state = opt.update({"p": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params["p"])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_adafactor_one_step_matches_t5x_rule_with_weight_decay(rng):
    param = rng.normal(size=(5, 8)).astype(np.float32)  # a prompt: both dims < 128
    grad = rng.normal(scale=0.01, size=(5, 8)).astype(np.float32)
    got = _run(optim.adafactor(LR, weight_decay_rate=WD), param, [grad])
    want = t5x_unfactored(param, [grad])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # First step: v = g^2, u = sign(g) with RMS 1 (no clipping), so the step is exactly lr.
    np.testing.assert_allclose(got, (1 - WD) * param - LR * np.sign(grad), rtol=1e-5, atol=1e-6)


def test_adafactor_weight_decay_is_not_scaled_by_learning_rate(rng):
    param = rng.normal(size=(4, 4)).astype(np.float32)
    zero = np.zeros_like(param)
    # A zero gradient gives a zero Adafactor update, leaving only the decay: (1 - wd) * p.
    got = _run(optim.adafactor(learning_rate=1e-3, weight_decay_rate=0.1), param, [zero])
    np.testing.assert_allclose(got, 0.9 * param, rtol=1e-6)
    no_decay = _run(optim.adafactor(learning_rate=1e-3, weight_decay_rate=None), param, [zero])
    np.testing.assert_array_equal(no_decay, param)


def test_adafactor_three_steps_decay_and_clipping(rng):
    param = rng.normal(size=(6, 3)).astype(np.float32)
    grads = [rng.normal(scale=s, size=(6, 3)).astype(np.float32) for s in (1.0, 0.1, 5.0)]
    got = _run(optim.adafactor(LR, weight_decay_rate=WD), param, grads)
    np.testing.assert_allclose(got, t5x_unfactored(param, grads), rtol=1e-5, atol=1e-6)


def test_adafactor_from_a_pretrained_checkpoints_global_step(rng):
    # Prompt tuning from T5 1.1 LM-adapted (step 1,100,000): decay ~ 1 - 1.4e-5, so the fresh
    # prompt's v stays small and every update is clipped to RMS 1: steps of lr, even when the
    # gradients shrink 100x (from step 0 they would shrink with them).
    param = rng.normal(size=(6, 3)).astype(np.float32)
    grads = [rng.normal(scale=s, size=(6, 3)).astype(np.float32) for s in (1.0, 0.01, 0.01)]
    opt = optim.adafactor(LR, weight_decay_rate=WD)
    got = _run(opt, param, grads, global_step=1_100_000)
    want = t5x_unfactored(param, grads, global_step=1_100_000)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, t5x_unfactored(param, grads), atol=1e-3)
    last = t5x_unfactored(param, grads[:2], 1_100_000)
    step = (1 - WD) * last - got  # the last update, lr x u
    assert np.sqrt(np.mean(step**2)) == pytest.approx(LR, rel=1e-4)


def test_adafactor_factored_second_moments(rng):
    param = rng.normal(size=(128, 130)).astype(np.float32)
    grads = [rng.normal(size=(128, 130)).astype(np.float32) for _ in range(2)]
    got = _run(optim.adafactor(LR, weight_decay_rate=WD), param, grads)
    np.testing.assert_allclose(got, t5x_factored(param, grads), rtol=1e-4, atol=1e-5)
    # Unfactored would differ: the test can tell the two apart.
    assert not np.allclose(got, t5x_unfactored(param, grads), atol=1e-4)


def _stacked_and_per_layer(opt, params, grads):
    """`opt` run on scanned stacks (`encoder/layers/...`, layer axis first) and on the same
    layers as unscanned params (`encoder/layers_<i>/...`); returns both final param dicts.
    `grads[name]` is a list of per-step gradients of the stacked param."""
    layer_of = {
        name.replace("/layers/", f"/layers_{i}/"): (name, i)
        for name, v in params.items()
        for i in range(v.shape[0])
    }
    stacked = {k: jnp.asarray(v) for k, v in params.items()}
    split = {k: jnp.asarray(params[name][i]) for k, (name, i) in layer_of.items()}
    steps = len(next(iter(grads.values())))
    results = []
    for tree in (stacked, split):
        state = opt.init(tree)
        for step in range(steps):
            g = {
                k: jnp.asarray(
                    grads[k][step] if k in grads else grads[layer_of[k][0]][step][layer_of[k][1]]
                )
                for k in tree
            }
            updates, state = opt.update(g, state, tree)
            tree = optax.apply_updates(tree, updates)
        results.append(tree)
    return results


def test_scanned_layers_clip_and_scale_each_layer_as_t5x(rng):
    # T5X's factor rules make 'layers' a BATCH axis: update RMS clipping and the parameter scale
    # average within each layer. Layers of very different scales tell that apart from one RMS
    # over the whole stack (optax's clip_by_block_rms), which would clip all layers together.
    scales = np.array([1e-3, 1.0, 30.0])[:, None, None]
    params = {
        "encoder/layers/mlp/wi/kernel": rng.normal(size=(3, 128, 256)) * scales,
        "encoder/layers/pre_mlp_layer_norm/scale": 1.0 + rng.normal(size=(3, 64)) * scales[:, 0],
    }
    params = {k: v.astype(np.float32) for k, v in params.items()}
    grads = {
        k: [
            (rng.normal(size=v.shape) * (s if v.ndim == 3 else s[:, 0])).astype(np.float32)
            for s in (scales, 1 / scales)
        ]
        for k, v in params.items()
    }
    opt = optim.adafactor(
        1e-2, weight_decay_rate=None, multiply_by_parameter_scale=True, decay_rate=0.8
    )
    stacked, split = _stacked_and_per_layer(opt, params, grads)
    for name, got in stacked.items():
        want = np.stack([split[name.replace("/layers/", f"/layers_{i}/")] for i in range(3)])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
    # The stack-wide rule (the one before) moves the layers differently.
    whole = optax.chain(
        optax.scale_by_factored_rms(decay_rate=0.8, epsilon=1e-30),
        optax.clip_by_block_rms(1.0),
        optax.scale_by_param_block_rms(1e-3),
        optax.scale_by_learning_rate(1e-2),
    )
    old, _ = _stacked_and_per_layer(whole, params, grads)
    name = "encoder/layers/mlp/wi/kernel"
    assert not np.allclose(np.asarray(old[name]), np.asarray(stacked[name]), rtol=1e-3)


def test_learning_rate_schedules():
    const = optim.learning_rate_schedule("constant", 0.3)
    assert float(const(0)) == pytest.approx(0.3) and float(const(10**6)) == pytest.approx(0.3)
    t5 = optim.learning_rate_schedule("constant * rsqrt_decay", 1.0, warmup_steps=100)
    assert float(t5(10)) == pytest.approx(0.1) and float(t5(400)) == pytest.approx(0.05)
    warm = optim.learning_rate_schedule("constant * linear_warmup", 2.0, warmup_steps=10)
    assert float(warm(5)) == pytest.approx(1.0) and float(warm(20)) == pytest.approx(2.0)
    lin = optim.learning_rate_schedule("constant * linear_decay", 1.0, decay_steps=10)
    assert float(lin(5)) == pytest.approx(0.5) and float(lin(10)) == pytest.approx(1e-8)
    cos = optim.learning_rate_schedule("constant * cosine_decay", 1.0, decay_steps=10)
    assert float(cos(5)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        optim.learning_rate_schedule("constant * bogus")
    with pytest.raises(ValueError, match="decay_steps"):
        optim.learning_rate_schedule("linear_decay")


def test_learning_rate_at_is_the_rate_each_update_used():
    # Update k of Adafactor under a schedule is lr(k) times the update at rate 1: the rate the
    # trainer logs after step k + 1 is the one that step applied.
    schedule = optim.learning_rate_schedule("constant * linear_warmup", 2.0, warmup_steps=4)
    scheduled = optim.adafactor(schedule, clipping_threshold=None, weight_decay_rate=None)
    unit = optim.adafactor(1.0, clipping_threshold=None, weight_decay_rate=None)
    params = {"p": jnp.ones((3, 5))}
    s_state, u_state = scheduled.init(params), unit.init(params)
    for k in range(6):
        grads = {"p": jnp.full((3, 5), 0.1 * (k + 1))}
        s_upd, s_state = scheduled.update(grads, s_state, params)
        u_upd, u_state = unit.update(grads, u_state, params)
        rate = optim.learning_rate_at(scheduled, k)
        assert rate == pytest.approx(max(2.0 * min(1.0, k / 4), 1e-8))
        np.testing.assert_allclose(s_upd["p"], rate * u_upd["p"], rtol=1e-6)
    assert optim.learning_rate_at(optim.adamw(1e-3), 7) == pytest.approx(1e-3)
    assert optim.learning_rate_at(optax.sgd(0.1), 7) is None  # a plain optax optimizer


def test_split_trainable_by_fullmatch():
    flat = {
        "encoder/prompt/prompt/prompt": 1,
        "encoder/layers_0/attention/query/kernel": 2,
        "token_embedder/embedding": 3,
    }
    trainable, frozen = optim.split_trainable(flat, optim.PROMPT_REGEX)
    assert set(trainable) == {"encoder/prompt/prompt/prompt"}
    assert set(frozen) == set(flat) - set(trainable)
    everything, none = optim.split_trainable(flat, ".*")
    assert everything == flat and none == {}
    # fullmatch, not search: 'prompt' alone matches nothing.
    with pytest.raises(ValueError, match="matches no parameter"):
        optim.split_trainable(flat, "prompt")
