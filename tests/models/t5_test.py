"""The T5 1.1 module: shapes and names, scan/remat equivalence, prompt and padding behaviour."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import synthetic
from spot_jax.models import config, layers, prompted, prompts
from spot_jax.train import state as state_lib

LENGTHS = {"inputs": 12, "targets": 8}
PROMPT_LENGTH = 3


def _config(**overrides):
    return config.named_config("tiny", **{"dtype": "float32", **overrides})


def _batch(batch_size=4, seed=1):
    return {
        k: jnp.asarray(v)
        for k, v in synthetic.make_batch(batch_size, LENGTHS, 512, seed=seed).items()
    }


def _init(model, batch, seed=0):
    # Jitted: eager Flax on CPU spends seconds dispatching op by op.
    return jax.jit(lambda rng: nn.unbox(model.init(rng, batch)))(jax.random.PRNGKey(seed))


def _logits(model, params, batch, dropout_rng=None):
    return jax.jit(model.logits)(params, batch, dropout_rng=dropout_rng)


def _encode(model, params, tokens):
    return jax.jit(lambda p, t: model.module.apply({"params": p}, t, method=model.module.encode))(
        params, tokens
    )


@pytest.fixture(scope="module")
def tiny():
    model = prompted.PromptedT5(_config(), prompt_length=PROMPT_LENGTH)
    batch = _batch()
    return model, _init(model, batch), batch


def test_param_names_and_shapes_follow_t5x(tiny):
    model, params, _ = tiny
    flat = state_lib.flatten_params(params)
    c = model.config
    expected = {
        "token_embedder/embedding": (c.vocab_size, c.emb_dim),
        "encoder/prompt/prompt/prompt": (PROMPT_LENGTH, c.emb_dim),
        "encoder/relpos_bias/rel_embedding": (c.num_heads, c.relpos_buckets),
        "encoder/layers_1/attention/query/kernel": (c.emb_dim, c.joined_kv),
        "encoder/layers_0/attention/out/kernel": (c.joined_kv, c.emb_dim),
        "encoder/layers_0/mlp/wi_0/kernel": (c.emb_dim, c.mlp_dim),
        "encoder/layers_0/mlp/wo/kernel": (c.mlp_dim, c.emb_dim),
        "encoder/encoder_norm/scale": (c.emb_dim,),
        "decoder/layers_1/encoder_decoder_attention/key/kernel": (c.emb_dim, c.joined_kv),
        "decoder/layers_0/pre_cross_attention_layer_norm/scale": (c.emb_dim,),
        "decoder/logits_dense/kernel": (c.emb_dim, c.vocab_size),
    }
    for name, shape in expected.items():
        assert flat[name].shape == shape, name
    # 2 encoder layers x 9 params, 2 decoder layers x 14, plus 7 shared/top-level ones.
    assert len(flat) == 2 * 9 + 2 * 14 + 7
    assert all(v.dtype == jnp.float32 for v in flat.values())


def test_output_shapes_and_dtypes():
    model = prompted.PromptedT5(_config(dtype="bfloat16"), prompt_length=PROMPT_LENGTH)
    batch = _batch()
    params = _init(model, batch)
    logits = _logits(model, params, batch)
    assert logits.shape == (4, LENGTHS["targets"], 512)
    assert logits.dtype == jnp.float32  # logits_dense always computes in float32
    encoded = _encode(model, params, batch["encoder_input_tokens"])
    assert encoded.shape == (4, PROMPT_LENGTH + LENGTHS["inputs"], 8)
    assert encoded.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(logits)))


def test_scan_layers_matches_unrolled_after_stack_layers(tiny):
    model, params, batch = tiny
    scan_model = prompted.PromptedT5(_config(scan_layers=True), prompt_length=PROMPT_LENGTH)
    stacked = prompted.stack_layers(params)
    # The stacked tree is exactly the tree the scanned module creates.
    scan_shapes = jax.tree.map(
        jnp.shape, nn.unbox(jax.eval_shape(scan_model.init, jax.random.PRNGKey(0), batch))
    )
    assert jax.tree.map(jnp.shape, stacked) == scan_shapes
    assert stacked["encoder"]["layers"]["attention"]["query"]["kernel"].shape == (2, 8, 8)
    want = _logits(model, params, batch)
    got = _logits(scan_model, stacked, batch)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Two layers per loop trip: same params, same function.
    unrolled = prompted.PromptedT5(
        _config(scan_layers=True, scan_unroll=2), prompt_length=PROMPT_LENGTH
    )
    np.testing.assert_allclose(_logits(unrolled, stacked, batch), want, rtol=1e-5, atol=1e-5)
    assert "unroll=2" in str(jax.make_jaxpr(lambda p: unrolled.loss(p, batch)[0])(stacked))
    # And back again.
    roundtrip = prompted.unstack_layers(stacked)
    jax.tree.map(np.testing.assert_array_equal, roundtrip, params)


def test_remat_gives_same_loss_and_gradients(tiny):
    model, params, batch = tiny
    remat_model = prompted.PromptedT5(_config(remat_policy="full"), prompt_length=PROMPT_LENGTH)

    def loss_and_grad(m):
        return jax.jit(jax.value_and_grad(lambda p: m.loss(p, batch)[0]))(params)

    (want_loss, want), (got_loss, got) = loss_and_grad(model), loss_and_grad(remat_model)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    assert float(jnp.abs(want["encoder"]["prompt"]["prompt"]["prompt"]).sum()) > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_softmax_has_jax_softmaxs_values_and_gradient(dtype):
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 7), jnp.float32) * 4
    # A masked key column and a fully masked row, as attention biases make them.
    logits = logits.at[..., 2].add(layers.NEG_INF).at[0, 0, 1].set(layers.NEG_INF)
    logits = logits.astype(dtype)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), logits.shape, dtype)

    def pullback(fn):
        return jax.vjp(fn, logits)[1](cotangent)[0]

    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_array_equal(layers.softmax(logits), jax.nn.softmax(logits))
    got, want = pullback(layers.softmax), pullback(jax.nn.softmax)
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol
    )
    assert float(jnp.abs(got.astype(jnp.float32)).sum()) > 0


def test_prompt_changes_encoder_output(tiny):
    model, params, batch = tiny
    tokens = batch["encoder_input_tokens"]

    def encode(p):
        return _encode(model, p, tokens)

    other = jax.tree.map(lambda x: x, params)
    prompt = params["encoder"]["prompt"]["prompt"]["prompt"]
    other["encoder"]["prompt"]["prompt"]["prompt"] = prompt + 1.0
    a, b = np.asarray(encode(params)), np.asarray(encode(other))
    real = np.asarray(tokens) > 0
    # Every real token's encoding depends on the prompt (attention reaches it everywhere).
    diff = np.abs(a - b)[:, PROMPT_LENGTH:][real].max(axis=-1)
    assert np.all(diff > 1e-4)
    # Padding positions are zeroed regardless of the prompt.
    assert np.all(a[:, PROMPT_LENGTH:][~real] == 0)
    # And the logits change with it.
    assert not np.allclose(_logits(model, params, batch), _logits(model, other, batch), atol=1e-4)


def test_prompt_module_prepends_prompt_rows():
    prompt = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
    module = prompts.InputPrompt(2, prompts.from_array(prompt))
    x = jnp.ones((3, 5, 4))
    variables = module.init(jax.random.PRNGKey(0), x)
    out = module.apply(variables, x)
    assert out.shape == (3, 7, 4)
    np.testing.assert_array_equal(out[:, :2], np.broadcast_to(prompt, (3, 2, 4)))
    np.testing.assert_array_equal(out[:, 2:], np.ones((3, 5, 4)))
    np.testing.assert_array_equal(
        prompts.with_prompt_mask(jnp.array([[5, 0]]), 2), np.array([[1, 1, 5, 0]])
    )


def test_prompt_positions_put_the_prompt_where_prompt_tuning_does():
    # Rows of 3, 1 and 0 tokens (pads last); 'embeddings' equal to the token ids, prompt rows
    # -1 and -2, so each output says what landed there.
    tokens = jnp.array([[5, 6, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    x = tokens[..., None].astype(jnp.float32)
    init = prompts.from_array(np.array([[-1.0], [-2.0]], np.float32))
    want = {
        "prefix": [[-1, -2, 5, 6, 1, 0, 0], [-1, -2, 1, 0, 0, 0, 0], [-1, -2, 0, 0, 0, 0, 0]],
        "prefix_after_bos": [[5, -1, -2, 6, 1, 0, 0], [1, -1, -2, 0, 0, 0, 0], [-1, -2] + [0] * 5],
        "suffix": [[5, 6, -1, -2, 1, 0, 0], [-1, -2, 1, 0, 0, 0, 0], [-1, -2, 0, 0, 0, 0, 0]],
        "suffix_after_eos": [[5, 6, 1, -1, -2, 0, 0], [1, -1, -2, 0, 0, 0, 0], [-1, -2] + [0] * 5],
    }
    for position, rows in want.items():
        module = prompts.InputPrompt(2, init, position=position)
        out = module.apply(module.init(jax.random.PRNGKey(0), x, tokens), x, tokens)
        np.testing.assert_array_equal(out[..., 0], np.array(rows, np.float32), err_msg=position)
    with pytest.raises(ValueError, match="prompt_position 'middle'"):
        prompts.check_position("middle")
    with pytest.raises(ValueError, match="packing"):
        prompted.PromptedT5(
            config.named_config("tiny"), 2, max_segments=2, prompt_position="suffix"
        )


def test_scanned_models_decode_with_their_prompt_position(tiny):
    # Decoding unstacks a scanned model into its loop twin, which keeps the prompt's position.
    _, params, batch = tiny
    for position in ("prefix", "suffix"):
        loop = prompted.PromptedT5(_config(), PROMPT_LENGTH, prompt_position=position)
        scanned = loop.replace(config=_config(scan_layers=True))
        want, _ = loop.predict(params, batch, max_decode_length=4)
        got, _ = scanned.predict(prompted.stack_layers(params), batch, max_decode_length=4)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        if position == "prefix":
            prefix = want
    assert not np.array_equal(np.asarray(prefix), np.asarray(want))  # the position matters


def test_extra_padding_does_not_change_real_logits(tiny):
    model, params, batch = tiny
    base = np.asarray(_logits(model, params, batch))
    extra_in, extra_out = 5, 3
    padded = {
        "encoder_input_tokens": jnp.pad(batch["encoder_input_tokens"], ((0, 0), (0, extra_in))),
        "decoder_input_tokens": jnp.pad(batch["decoder_input_tokens"], ((0, 0), (0, extra_out))),
        "decoder_target_tokens": jnp.pad(batch["decoder_target_tokens"], ((0, 0), (0, extra_out))),
    }
    longer = np.asarray(_logits(model, params, padded))
    assert longer.shape[1] == LENGTHS["targets"] + extra_out
    real = np.asarray(batch["decoder_target_tokens"]) > 0
    assert real.sum() > 0 and (~real).sum() > 0  # the batch has both kinds of positions
    np.testing.assert_allclose(longer[:, : LENGTHS["targets"]][real], base[real], atol=1e-5)


def test_encoder_padding_is_masked_not_attended(tiny):
    """Turning one row's pad into a real token changes that row only (rows are independent)."""
    model, params, batch = tiny
    tokens = np.asarray(batch["encoder_input_tokens"]).copy()
    row = int(np.argmax((tokens == 0).any(axis=1)))
    pad_col = int(np.argmax(tokens[row] == 0))
    filled = tokens.copy()
    filled[row, pad_col] = 7
    base = _logits(model, params, batch)
    changed = _logits(model, params, dict(batch, encoder_input_tokens=jnp.asarray(filled)))
    assert not np.allclose(base[row], changed[row], atol=1e-5)
    np.testing.assert_allclose(np.delete(base, row, 0), np.delete(changed, row, 0), atol=1e-6)


def test_dropout_is_off_without_rng_and_on_with_it(tiny):
    _, params, batch = tiny
    model = prompted.PromptedT5(_config(dropout_rate=0.5), prompt_length=PROMPT_LENGTH)
    a = _logits(model, params, batch)
    np.testing.assert_array_equal(a, _logits(model, params, batch))
    b = _logits(model, params, batch, dropout_rng=jax.random.PRNGKey(1))
    assert not np.allclose(a, b, atol=1e-4)


def test_config_rejects_unknown_remat_policy():
    with pytest.raises(ValueError, match="remat_policy"):
        dataclasses.replace(_config(), remat_policy="sometimes")


def _dropout_draws(cfg, params, batch) -> int:
    """How many random draws one training forward pass makes (each dropout mask is one)."""
    model = prompted.PromptedT5(cfg, prompt_length=PROMPT_LENGTH)
    jaxpr = jax.make_jaxpr(lambda p, r: model.logits(p, batch, dropout_rng=r))(
        params, jax.random.PRNGKey(0)
    )
    return _count_calls(jaxpr.jaxpr, "random_bits")


def _count_calls(jaxpr, primitive: str) -> int:
    """Call sites of `primitive` in a jaxpr, inside nested calls (pjit, remat, ...) too."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == primitive
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _count_calls(inner, primitive)
    return count


def test_attention_dropout_can_be_set_apart_from_dropout(tiny):
    _, params, batch = tiny
    both = _config(dropout_rate=0.1)
    apart = dataclasses.replace(both, attention_dropout_rate=0.0)
    assert (both.attention_dropout, apart.attention_dropout) == (0.1, 0.0)
    # 2 + 2 layers: 2 encoder self-attentions, 2 decoder self- and 2 cross-attentions.
    draws = _dropout_draws(both, params, batch)
    assert draws - _dropout_draws(apart, params, batch) == 6
    assert _dropout_draws(apart, params, batch) > 0  # residual and MLP dropout stay
    # The fused kernel has no dropout: asking for it with attention dropout on says so.
    with pytest.warns(UserWarning, match="attention_dropout_rate = 0.0"):
        dataclasses.replace(both, attention_impl="cudnn")
