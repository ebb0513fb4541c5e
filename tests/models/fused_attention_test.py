"""The fused attention asks cuDNN for the bias gradient only where the bias is differentiated.

A CPU cannot run cuDNN, so JAX's cuDNN call is replaced by its XLA implementation with the same
arguments, and each call records the switch that makes the cuDNN backward compute dbias as JAX
would set it while the call is traced, in both places JAX has kept it: what the module-global
`should_export_dbias` answers (JAX <= 0.10), and the `has_dbias` in the `variadic_args` that
JAX 0.11's wrapper hands its private `_dot_product_attention` (always True with a bias; JAX
0.11 is played here by a stand-in with that function's signature). Gradients are checked against
plain `jax.nn.dot_product_attention`, and at model level against the XLA attention path.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import config, fused_attention, prompted

cudnn = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
ORIGINAL = jax.nn.dot_product_attention


def _private_call_of_jax_0_11(
    query, key, value, bias, q_seqlen, kv_seqlen, q_offsets, kv_offsets, page_table_k,
    page_table_v, scale, seed, dropout_rate, variadic_args, mask_type, layout,
    sliding_window_length, cudnn_version, return_residual,
):  # fmt: skip
    """Stands in for JAX 0.11's `_dot_product_attention` (same parameters); returns has_dbias."""
    return variadic_args[1]


class _Answers(list):
    has_dbias = None  # () -> the switch as JAX sets it outside our override


@pytest.fixture(params=["jax_0_10", "jax_0_11"])
def dbias_answers(request, monkeypatch):
    """JAX's cuDNN attention run by XLA; returns the dbias answers, one per call with a bias
    (without one there is no dbias to ask for)."""
    answers = _Answers()
    if request.param == "jax_0_11":
        monkeypatch.delattr(cudnn, "should_export_dbias", raising=False)
        monkeypatch.setattr(cudnn, "_dot_product_attention", _private_call_of_jax_0_11)

    def has_dbias():
        if request.param == "jax_0_10":
            return cudnn.should_export_dbias((1, 2, 5, 5), (3, 5, 2, 4), 0)
        # As JAX 0.11's wrapper calls it: positional, has_dbias True for any explicit bias.
        nothing = (None,) * 6
        return cudnn._dot_product_attention(
            *(None,) * 4, *nothing, 1.0, 0, 0.0, (True, True), None, 0, None, 0, False
        )

    def on_cpu(*args, implementation=None, **kwargs):
        assert implementation == "cudnn"
        if kwargs.get("bias") is not None:
            answers.append(bool(has_dbias()))
        return ORIGINAL(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", on_cpu)
    answers.has_dbias = has_dbias
    return answers


def _inputs():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 5, 2, 4)), jnp.float32) for _ in range(3))
    bias = jnp.asarray(rng.normal(size=(1, 2, 5, 5)), jnp.float32)
    return q, k, v, bias


@pytest.mark.parametrize("counts", [None, (5, 3, 1)])
def test_gradients_match_and_dbias_is_asked_for_only_when_the_bias_is_differentiated(
    dbias_answers, counts
):
    q, k, v, bias = _inputs()
    counts = None if counts is None else jnp.asarray(counts, jnp.int32)

    def loss(attend):
        return lambda q, k, v, b: jnp.sum(jnp.sin(attend(q, k, v, b)))

    ours = loss(lambda q, k, v, b: fused_attention.attention(q, k, v, b, counts))
    want = loss(
        lambda q, k, v, b: ORIGINAL(q, k, v, bias=b, scale=1.0, key_value_seq_lengths=counts)
    )

    got = jax.grad(ours, argnums=(0, 1, 2))(q, k, v, bias)
    assert dbias_answers == [False]  # the prompt's path: q, k, v only
    for g, w in zip(got, jax.grad(want, argnums=(0, 1, 2))(q, k, v, bias), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    dbias_answers.clear()
    got = jax.grad(ours, argnums=(0, 3))(q, k, v, bias)
    assert dbias_answers == [True]  # a trainable bias gets its gradient
    for g, w in zip(got, jax.grad(want, argnums=(0, 3))(q, k, v, bias), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert dbias_answers.has_dbias()  # JAX's own decision restored


def test_always_keeps_jaxs_behaviour(dbias_answers):
    q, k, v, bias = _inputs()
    jax.grad(lambda q: jnp.sum(fused_attention.attention(q, k, v, bias, bias_grad="always")))(q)
    assert dbias_answers == [True]
    with pytest.raises(ValueError, match="bias_grad must be one of"):
        fused_attention.attention(q, k, v, bias, bias_grad="never")


def _batch():
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, 512, (4, 10)).astype(np.int32)
    tokens[2, 6:] = 0
    targets = rng.integers(2, 512, (4, 5)).astype(np.int32)
    return {
        "encoder_input_tokens": jnp.asarray(tokens),
        "decoder_input_tokens": jnp.asarray(np.pad(targets[:, :-1], ((0, 0), (1, 0)))),
        "decoder_target_tokens": jnp.asarray(targets),
        "decoder_loss_weights": jnp.ones((4, 5), jnp.float32),
    }


@pytest.mark.parametrize("scanned", [False, True])
def test_model_gradients_with_frozen_and_trainable_relpos_tables(dbias_answers, scanned):
    xla = config.named_config("tiny", dtype="float32", scan_layers=scanned, remat_policy="dots")
    fused = dataclasses.replace(xla, attention_impl="cudnn")
    batch = _batch()
    init_model = prompted.PromptedT5(xla, prompt_length=3)
    params = jax.jit(lambda r: nn.unbox(init_model.init(r, batch)))(jax.random.PRNGKey(0))
    table = ("encoder", "relpos_bias", "rel_embedding")

    def grads(cfg, trainable_table: bool):
        model = prompted.PromptedT5(cfg, prompt_length=3)

        def loss(prompt, rel):
            p = jax.tree_util.tree_map(lambda x: x, params)
            p["encoder"]["prompt"]["prompt"]["prompt"] = prompt
            p["encoder"]["relpos_bias"]["rel_embedding"] = rel
            return model.loss(p, batch)[0]

        argnums = (0, 1) if trainable_table else 0
        prompt = params["encoder"]["prompt"]["prompt"]["prompt"]
        rel = params[table[0]][table[1]][table[2]]
        return jax.jit(jax.grad(loss, argnums=argnums))(prompt, rel)

    np.testing.assert_allclose(grads(fused, False), grads(xla, False), rtol=1e-4, atol=1e-6)
    assert dbias_answers and not any(dbias_answers)  # frozen table: no call asks for dbias
    dbias_answers.clear()
    (got_prompt, got_rel), (want_prompt, want_rel) = grads(fused, True), grads(xla, True)
    assert any(dbias_answers)  # the encoder's self-attention differentiates its bias
    np.testing.assert_allclose(got_prompt, want_prompt, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_rel, want_rel, rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(got_rel)).max() > 0
