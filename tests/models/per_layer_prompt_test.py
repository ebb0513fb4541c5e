"""Per-layer prompts (prompt-tuning's extended/per_layer.py): each encoder layer's own prompt
replaces ('replace') or is added to ('add') the prompt rows that lead the layer's input.

Checked against the plain prompted model: added prompts of zero change nothing, an added
prompt at layer 0 is an input prompt shifted by it, and prompts that replace each layer's rows
with the rows the plain model computes there reproduce the plain model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_padding_test import _batch
from flax import traverse_util

from spot_jax.data import packing
from spot_jax.models import config, prompted
from spot_jax.train import state as state_lib

P = 3
CFG = config.named_config("tiny", dtype="float32")


def _model(per_layer="none", cfg=CFG, **kw):
    return prompted.PromptedT5(cfg, prompt_length=P, per_layer_prompt=per_layer, **kw)


def _init(model, batch):
    return jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))


def _with(params, **values):
    """params with flat entries replaced: `_with(p, **{"encoder/layers_0/...": x})`."""
    flat = traverse_util.flatten_dict(params, sep="/")
    flat.update({k: jnp.asarray(v) for k, v in values.items()})
    return traverse_util.unflatten_dict(flat, sep="/")


def _layer_prompt(i: int) -> str:
    return f"encoder/layers_{i}/prompt/prompt/prompt"


def _plain_params(params):
    """The same params without the per-layer prompts (the plain prompted model's)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    kept = {k: v for k, v in flat.items() if not prompted.LAYER_PROMPT_PATH.fullmatch(k)}
    return traverse_util.unflatten_dict(kept, sep="/")


def test_params_sit_where_prompt_tuning_keeps_them():
    batch = _batch()
    flat = state_lib.flatten_params(_init(_model("replace"), batch))
    prompts_found = sorted(k for k in flat if prompted.is_prompt_path(k))
    assert prompts_found == [_layer_prompt(0), _layer_prompt(1), prompted.PROMPT_PATH]
    assert all(flat[k].shape == (P, CFG.emb_dim) for k in prompts_found)
    # Each layer draws its own values.
    assert not np.allclose(flat[_layer_prompt(0)], flat[_layer_prompt(1)])


def test_added_prompts_of_zero_change_nothing_and_layer_0s_shifts_the_input_prompt():
    batch = _batch()
    model = _model("add")
    params = _init(model, batch)
    zeros = np.zeros((P, CFG.emb_dim), np.float32)
    params = _with(params, **{_layer_prompt(0): zeros, _layer_prompt(1): zeros})
    plain = _model()
    want = jax.jit(plain.logits)(_plain_params(params), batch)
    np.testing.assert_allclose(jax.jit(model.logits)(params, batch), want, rtol=1e-6, atol=1e-6)

    shift = np.random.default_rng(0).normal(size=(P, CFG.emb_dim)).astype(np.float32)
    shifted = _with(params, **{_layer_prompt(0): shift})
    input_prompt = traverse_util.flatten_dict(params, sep="/")[prompted.PROMPT_PATH]
    want = jax.jit(plain.logits)(
        _with(_plain_params(params), **{prompted.PROMPT_PATH: input_prompt + shift}), batch
    )
    got = jax.jit(model.logits)(shifted, batch)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, jax.jit(model.logits)(params, batch), atol=1e-3)


def _layer_inputs(model, params, batch):
    """Each encoder layer's input [B, P + T, H] in the plain model."""
    _, state = model.module.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        method="encode",
        capture_intermediates=lambda mdl, _: mdl.name is not None and "layers_" in mdl.name,
        mutable=["intermediates"],
    )
    seen = traverse_util.flatten_dict(state["intermediates"], sep="/")
    outputs = [seen[f"encoder/layers_{i}/__call__"][0][0] for i in range(CFG.num_encoder_layers)]
    return outputs


def test_prompts_that_replace_each_layers_rows_with_the_plain_models_reproduce_it():
    batch = {k: v[:1] for k, v in _batch().items()}  # one row: the prompt rows depend on it
    model = _model("replace")
    params = _init(model, batch)
    plain = _model()
    plain_params = _plain_params(params)
    outputs = _layer_inputs(plain, plain_params, batch)
    input_prompt = traverse_util.flatten_dict(params, sep="/")[prompted.PROMPT_PATH]
    # Layer 0 reads the input prompt; layer i > 0 the rows layer i - 1 wrote.
    rows = [input_prompt] + [np.asarray(out[0, :P]) for out in outputs[:-1]]
    params = _with(params, **{_layer_prompt(i): r for i, r in enumerate(rows)})
    want = jax.jit(plain.logits)(plain_params, batch)
    np.testing.assert_allclose(jax.jit(model.logits)(params, batch), want, rtol=1e-5, atol=1e-5)


def test_replaced_input_prompt_gets_no_gradient_and_every_layers_prompt_does():
    batch = _batch()
    model = _model("replace")
    params = _init(model, batch)
    grads = jax.jit(jax.grad(lambda p: model.loss(p, batch)[0]))(params)
    flat = state_lib.flatten_params(grads)
    # As in prompt-tuning: layer 0 overwrites the rows the input prompt fills.
    assert np.all(np.asarray(flat[prompted.PROMPT_PATH]) == 0)
    for i in range(CFG.num_encoder_layers):
        assert np.abs(np.asarray(flat[_layer_prompt(i)])).max() > 0


@pytest.mark.parametrize("combine", ["replace", "add"])
def test_scanned_layers_compute_the_same(combine):
    batch = _batch()
    model = _model(combine)
    params = _init(model, batch)
    scanned = _model(combine, cfg=config.named_config("tiny", dtype="float32", scan_layers=True))
    stacked = prompted.stack_layers(params)
    assert traverse_util.flatten_dict(stacked, sep="/")[
        "encoder/layers/prompt/prompt/prompt"
    ].shape == (
        CFG.num_encoder_layers,
        P,
        CFG.emb_dim,
    )
    np.testing.assert_allclose(
        jax.jit(scanned.logits)(stacked, batch),
        jax.jit(model.logits)(params, batch),
        rtol=1e-5,
        atol=1e-5,
    )
    got, _ = scanned.predict(stacked, batch, max_decode_length=4)
    want, _ = model.predict(params, batch, max_decode_length=4)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("combine", ["replace", "add"])
def test_packed_rows_give_each_example_its_layers_prompts(combine):
    from packing_test import EXAMPLE_LENGTHS, MAX_SEGMENTS, ROW_LENGTHS, _examples, _jnp

    examples = _examples()
    unpacked = _jnp(packing.padded(examples, EXAMPLE_LENGTHS))
    packed_np, placement = packing.pack(examples, ROW_LENGTHS, MAX_SEGMENTS)
    model = _model(combine, max_segments=MAX_SEGMENTS)
    params = _init(model, unpacked)
    want = np.asarray(jax.jit(model.score)(params, unpacked))
    per_slot = np.asarray(jax.jit(model.score_segments)(params, _jnp(packed_np)))
    np.testing.assert_allclose(
        packing.unpack_scores(per_slot, placement), want, rtol=2e-5, atol=1e-5
    )


def test_refusals_name_what_to_change():
    with pytest.raises(ValueError, match="expected one of"):
        _model("prefix_tuning")
    with pytest.raises(ValueError, match="PROMPT_LENGTH > 0"):
        prompted.PromptedT5(CFG, prompt_length=0, per_layer_prompt="replace")
    with pytest.raises(ValueError, match="'prefix'"):
        _model("add", prompt_position="suffix")
