"""`recompute_elementwise`: the norms and the gated GELU keep only their inputs for the backward
pass. Same loss and gradients as autodiff's residuals; a scanned stack saves 2 [B, L, mlp]
arrays a layer instead of 7, and no float32 copies of its norms' inputs."""

import collections
import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest
from attention_padding_test import INPUTS, PROMPT, TARGETS, _batch
from flax import traverse_util

from spot_jax.models import config, prompted
from spot_jax.train import state as state_lib

# attention_padding_test's rows: 4 inputs of 12 tokens, padded to 12, 9, 5 and 1 at the end.
B = 4


def _loss_and_grads(cfg, params, batch):
    """Loss and the gradients of every param (the prompt, and the frozen weights model tuning
    would train: the norm scales' gradients go through the recomputed norm's backward)."""
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT)
    value, grads = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch)[0]))(params)
    return float(value), state_lib.flatten_params(grads)


def _init(cfg, batch):
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT)
    return jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))


@pytest.mark.parametrize(
    "scan,remat", [(False, "none"), (True, "none"), (True, "dots")], ids=["loop", "scan", "dots"]
)
def test_same_loss_and_gradients_as_autodiffs_residuals(scan, remat):
    # Under dots remat the checkpointed blocks nest inside each layer's own checkpoint.
    cfg = config.named_config("tiny", dtype="float32", scan_layers=scan, remat_policy=remat)
    batch = _batch()
    params = _init(cfg, batch)
    loss, grads = _loss_and_grads(cfg, params, batch)
    saved = dataclasses.replace(cfg, recompute_elementwise=False)
    want_loss, want_grads = _loss_and_grads(saved, params, batch)
    assert loss == want_loss  # the forward pass is the same program
    assert set(grads) == set(want_grads)
    for name, want in want_grads.items():
        assert np.abs(np.asarray(want)).max() > 0, name  # every gradient is exercised
        np.testing.assert_allclose(grads[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_in_bfloat16_as_close_to_float32_as_autodiffs_residuals(scan):
    # bfloat16 rounds each step, and XLA fuses the two programs differently: both gradients
    # are 2-6% (relative L2) from the float32 one, and ~2% from each other. Neither may drift.
    cfg = config.named_config("tiny", dtype="bfloat16", scan_layers=scan)
    batch = _batch()
    params = _init(cfg, batch)
    _, exact = _loss_and_grads(dataclasses.replace(cfg, dtype="float32"), params, batch)
    errors = {}
    for recompute in (True, False):
        _, grads = _loss_and_grads(
            dataclasses.replace(cfg, recompute_elementwise=recompute), params, batch
        )
        errors[recompute] = {
            name: np.linalg.norm(np.asarray(grads[name], np.float32) - np.asarray(want))
            / np.linalg.norm(want)
            for name, want in exact.items()
        }
    for name, error in errors[True].items():
        assert error < 2 * errors[False][name] + 0.01, (name, error, errors[False][name])
    mean = {k: np.mean(list(v.values())) for k, v in errors.items()}
    assert mean[True] < 1.25 * mean[False], mean


def _saved_per_layer(cfg) -> collections.Counter:
    """The arrays the encoder's forward scan stacks for the prompt gradient: {dtype[shape]: n}."""
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT)
    batch = _batch()
    flat = state_lib.flatten_params(nn.unbox(model.abstract_params(B, INPUTS, TARGETS)))
    prompt = flat.pop(prompted.PROMPT_PATH)

    def loss(p, frozen):
        params = traverse_util.unflatten_dict({**frozen, prompted.PROMPT_PATH: p}, sep="/")
        return model.loss(params, batch)[0]

    jaxpr = jax.make_jaxpr(jax.grad(loss))(prompt, flat).jaxpr
    scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    encoder = scans[0]  # the forward scans run first: the encoder's, then the decoder's
    layers = encoder.params["length"]
    return collections.Counter(
        f"{v.aval.dtype}{list(v.aval.shape[1:])}"
        for v in encoder.outvars
        if v.aval.ndim > 1 and v.aval.shape[0] == layers
    )


def test_a_scanned_stack_saves_only_the_inputs_of_the_norms_and_the_gelu():
    cfg = config.named_config("tiny", dtype="bfloat16", scan_layers=True)
    rows = f"{B}, {INPUTS + PROMPT}"
    mlp, emb = f"bfloat16[{rows}, {cfg.mlp_dim}]", f"bfloat16[{rows}, {cfg.emb_dim}]"
    wide32 = f"float32[{rows}, {cfg.emb_dim}]"
    saved = _saved_per_layer(cfg)
    assert saved[mlp] == 2  # wi_0's and wi_1's outputs
    assert saved[emb] == 2 and saved[wide32] == 0  # the two norms' bfloat16 inputs
    assert saved[f"float32[{rows}, 1]"] == 2  # and their per-row statistics
    autodiff = _saved_per_layer(dataclasses.replace(cfg, recompute_elementwise=False))
    assert autodiff[mlp] == 7 and autodiff[wide32] == 4
