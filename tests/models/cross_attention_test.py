"""Cross-attention with the key/value projections absorbed computes the projected result."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import synthetic
from spot_jax.models import config, layers, prompted

LENGTHS = {"inputs": 12, "targets": 8}


def _model(cross_projection, **overrides):
    cfg = config.named_config("tiny", dtype="float32", cross_projection=cross_projection)
    return prompted.PromptedT5(dataclasses.replace(cfg, **overrides), prompt_length=3)


@pytest.fixture(scope="module")
def setup():
    batch = {k: jnp.asarray(v) for k, v in synthetic.make_batch(4, LENGTHS, 512, seed=2).items()}
    model = _model("projected")
    params = jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))
    return params, batch


def test_absorbed_has_the_same_params(setup):
    params, batch = setup
    other = jax.jit(lambda r: nn.unbox(_model("absorbed").init(r, batch)))(jax.random.PRNGKey(0))
    jax.tree.map(np.testing.assert_array_equal, other, params)


def test_absorbed_loss_and_prompt_gradient_match_projected(setup):
    params, batch = setup

    def loss_and_grad(m):
        return jax.jit(jax.value_and_grad(lambda p: m.loss(p, batch)[0]))(params)

    (want_loss, want), (got_loss, got) = (
        loss_and_grad(_model("projected")),
        loss_and_grad(_model("absorbed")),
    )
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    prompt = lambda g: np.asarray(g["encoder"]["prompt"]["prompt"]["prompt"])  # noqa: E731
    assert np.abs(prompt(want)).max() > 1e-4
    np.testing.assert_allclose(prompt(got), prompt(want), rtol=1e-4, atol=1e-6)


def test_absorbed_with_dropout_uses_the_same_masks(setup):
    params, batch = setup
    rng = jax.random.PRNGKey(5)
    a, b = (
        jax.jit(_model(k, dropout_rate=0.3).logits)(params, batch, dropout_rng=rng)
        for k in ("projected", "absorbed")
    )
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_greedy_decodes_agree(setup):
    params, batch = setup
    out = {
        k: jax.jit(lambda p, b, m=_model(k): m.predict(p, b, max_decode_length=6))(params, batch)
        for k in ("projected", "absorbed")
    }
    np.testing.assert_array_equal(out["absorbed"][0], out["projected"][0])
    np.testing.assert_allclose(out["absorbed"][1], out["projected"][1], rtol=1e-5)


def test_auto_picks_absorbed_for_few_queries_only():
    # T5 small: 16 targets over 228 prompted inputs, and one decoding step: absorbed.
    assert layers.absorbed_is_cheaper(16, 228, 512, 6, 64)
    assert layers.absorbed_is_cheaper(1, 612, 768, 12, 64)
    # As many queries as memory rows (self-attention sized): projected.
    assert not layers.absorbed_is_cheaper(228, 228, 512, 6, 64)


def test_config_rejects_unknown_cross_projection():
    with pytest.raises(ValueError, match="cross_projection"):
        config.named_config("tiny", cross_projection="sideways")
