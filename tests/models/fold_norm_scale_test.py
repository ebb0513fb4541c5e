"""`fold_norm_scale`: the layer norms in front of attention and MLP blocks hand their scale to
the projections that read them, which multiply it into their kernels. Same loss, gradients and
decodes as scaling the activation; no scaled copy of a normalised activation in the program."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest
from attention_padding_test import INPUTS, PROMPT, _batch
from flax import traverse_util

from spot_jax.models import config, prompted
from spot_jax.train import state as state_lib


def _model(cfg):
    return prompted.PromptedT5(cfg, prompt_length=PROMPT)


def _params(cfg, batch):
    """Init params with every norm scale drawn away from 1 (the init's ones would make a
    folded scale indistinguishable from a dropped one)."""
    params = jax.jit(lambda r: nn.unbox(_model(cfg).init(r, batch)))(jax.random.PRNGKey(0))
    flat = traverse_util.flatten_dict(params, sep="/")
    rng = np.random.default_rng(1)
    for name, value in flat.items():
        if name.endswith("/scale"):
            flat[name] = rng.uniform(0.3, 1.7, value.shape).astype(np.float32)
    assert sum(name.endswith("_norm/scale") for name in flat) > 4
    return traverse_util.unflatten_dict(flat, sep="/")


def _loss_and_grads(cfg, params, batch):
    model = _model(cfg)
    value, grads = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch)[0]))(params)
    return float(value), state_lib.flatten_params(grads)


@pytest.mark.parametrize(
    "scan,remat", [(False, "none"), (True, "none"), (True, "dots")], ids=["loop", "scan", "dots"]
)
def test_same_loss_and_gradients_as_scaling_the_activation(scan, remat):
    cfg = config.named_config("tiny", dtype="float32", scan_layers=scan, remat_policy=remat)
    batch = _batch()
    params = _params(cfg, batch)
    folded = dataclasses.replace(cfg, fold_norm_scale=True)
    loss, grads = _loss_and_grads(folded, params, batch)
    want_loss, want_grads = _loss_and_grads(cfg, params, batch)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert set(grads) == set(want_grads)
    for name, want in want_grads.items():
        # The norm scales' own gradients (model tuning) now flow through the kernel products.
        assert np.abs(np.asarray(want)).max() > 0, name
        np.testing.assert_allclose(grads[name], want, rtol=1e-4, atol=2e-5, err_msg=name)


def test_same_greedy_decode_and_logits():
    cfg = config.named_config("tiny", dtype="float32")
    batch = _batch()
    params = _params(cfg, batch)
    folded = _model(dataclasses.replace(cfg, fold_norm_scale=True))
    want = _model(cfg)
    np.testing.assert_allclose(
        jax.jit(folded.logits)(params, batch),
        jax.jit(want.logits)(params, batch),
        rtol=1e-5,
        atol=1e-5,
    )
    # Decoding runs the decoder layer by layer with a cache (decode mode of the same layers).
    got, _ = folded.predict(params, batch, max_decode_length=5)
    expected, _ = want.predict(params, batch, max_decode_length=5)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def _activation_products(cfg, batch, params) -> int:
    """How many multiplies in the forward program make an [B, prompt + inputs, H] array from a
    [H] operand broadcast over rows: a norm scale applied to the encoder's activations."""
    model = _model(cfg)
    jaxpr = jax.make_jaxpr(model.logits)(params, batch)
    shape = (batch["encoder_input_tokens"].shape[0], PROMPT + INPUTS, cfg.emb_dim)
    count = 0

    def visit(jaxpr):
        nonlocal count
        for eqn in jaxpr.eqns:
            for sub in jax.core.jaxprs_in_params(eqn.params):
                visit(sub)
            if eqn.primitive.name == "mul" and tuple(eqn.outvars[0].aval.shape) == shape:
                count += 1

    visit(jaxpr.jaxpr)
    return count


def test_the_encoder_layers_scale_kernels_not_activations():
    cfg = config.named_config("tiny", dtype="float32")
    batch = _batch()
    params = _params(cfg, batch)
    plain = _activation_products(cfg, batch, params)
    folded = _activation_products(dataclasses.replace(cfg, fold_norm_scale=True), batch, params)
    # Each encoder layer's two pre-norms (attention, MLP) no longer scale the activation; the
    # final encoder norm still does (its output is the encoder's, read by every decoder layer).
    assert plain - folded == 2 * cfg.num_encoder_layers, (plain, folded)


def test_in_bfloat16_as_close_to_float32_as_scaling_the_activation():
    cfg = config.named_config("tiny", dtype="bfloat16")
    batch = _batch()
    params = _params(cfg, batch)
    _, exact = _loss_and_grads(dataclasses.replace(cfg, dtype="float32"), params, batch)
    errors = {}
    for fold in (True, False):
        _, grads = _loss_and_grads(dataclasses.replace(cfg, fold_norm_scale=fold), params, batch)
        errors[fold] = np.mean(
            [
                np.linalg.norm(np.asarray(grads[name], np.float32) - np.asarray(want))
                / np.linalg.norm(want)
                for name, want in exact.items()
            ]
        )
    assert errors[True] < 1.25 * errors[False] + 0.005, errors
