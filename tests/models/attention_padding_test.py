"""`attention_padding='key_mask'`: the encoder's bias stays [1, heads, L, L] and padding goes to
the attention as a key mask (XLA) or key counts (the fused kernel); same loss and prompt
gradient as T5X's [B, heads, L, L] bias."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import config, layers, prompted

INPUTS, TARGETS, PROMPT = 12, 6, 3


def _batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 512, (4, INPUTS)).astype(np.int32)
    for row, length in enumerate((12, 9, 5, 1)):  # SeqIO's layout: padding at the end
        tokens[row, length:] = 0
    targets = rng.integers(2, 512, (4, TARGETS)).astype(np.int32)
    inputs = np.concatenate([np.zeros((4, 1), np.int32), targets[:, :-1]], axis=1)
    batch = {
        "encoder_input_tokens": tokens,
        "decoder_input_tokens": inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones_like(targets),
    }
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _loss_and_prompt_grad(cfg, params, batch):
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT)

    def loss(p):
        return model.loss(p, batch)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), np.asarray(grads["encoder"]["prompt"]["prompt"]["prompt"])


@pytest.fixture(scope="module")
def reference():
    # The reference is T5X's [B, heads, L, L] padding-plus-position bias.
    cfg = config.named_config("tiny", dtype="float32", attention_padding="bias")
    batch = _batch()
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT)
    params = jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))
    return cfg, params, batch, _loss_and_prompt_grad(cfg, params, batch)


def _xla_for_cudnn(monkeypatch):
    """Runs the fused-kernel call through JAX's XLA implementation (same arguments: the
    [1, heads, L, L] bias and the key counts), which a CPU can execute."""
    calls = []
    original = jax.nn.dot_product_attention

    def on_cpu(*args, implementation=None, **kw):
        assert implementation == "cudnn"
        calls.append(kw)
        return original(*args, implementation="xla", **kw)

    monkeypatch.setattr(jax.nn, "dot_product_attention", on_cpu)
    return calls


@pytest.mark.parametrize("impl", ["xla", "cudnn"])
def test_key_mask_gives_t5xs_loss_and_prompt_gradient(reference, impl, monkeypatch):
    cfg, params, batch, (want_loss, want_grad) = reference
    calls = _xla_for_cudnn(monkeypatch) if impl == "cudnn" else []
    keyed = dataclasses.replace(cfg, attention_impl=impl, attention_padding="key_mask")
    got_loss, got_grad = _loss_and_prompt_grad(keyed, params, batch)
    # Scanned layers with remat (the large models' setting) take the key mask as a broadcast.
    scanned = dataclasses.replace(keyed, scan_layers=True, remat_policy="dots")
    scan_loss, scan_grad = _loss_and_prompt_grad(scanned, prompted.stack_layers(params), batch)
    np.testing.assert_allclose(scan_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(scan_grad, want_grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    if impl == "cudnn":
        encoder = [kw for kw in calls if kw["key_value_seq_lengths"] is not None]
        assert encoder, "the encoder's self-attention should pass key counts"
        # The bias reaching the kernel has no batch axis: one [1, heads, L, L] for all rows.
        assert all(kw["bias"].shape[0] == 1 for kw in encoder)


def test_the_default_is_the_key_mask_and_bad_values_are_refused(reference):
    cfg = reference[0]
    assert config.T5Config().attention_padding == "key_mask"
    with pytest.raises(ValueError, match="attention_padding must be bias or key_mask"):
        dataclasses.replace(cfg, attention_padding="lengths")


def test_key_mask_dense_masks_keys_only():
    bias = jnp.zeros((1, 2, 3, 3))
    dense = layers.KeyMask(bias, jnp.array([[1, 1, 0]])).dense()
    assert dense.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(np.asarray(dense[0, :, :, 2]), layers.NEG_INF)
    np.testing.assert_array_equal(np.asarray(dense[0, :, :, :2]), 0.0)
