"""`relpos_per_layer`: each layer owns its relative-position table (umT5, T5X's scalable_t5).

With every layer given the stack's one table, the model computes what T5 1.1 computes, on each
path that builds a bias: padded rows (key mask and T5X's bias), scanned layers, packed rows and
cached decoding. A layer's own table is then shown to matter.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import packing, synthetic
from spot_jax.models import config, prompted

PROMPT = 3
LENGTHS = {"inputs": 9, "targets": 6}


def _examples(n=5):
    return [
        synthetic.example(
            i,
            split="train",
            seed=4,
            inputs_length=LENGTHS["inputs"],
            targets_length=LENGTHS["targets"],
            vocab_size=512,
        )
        for i in range(n)
    ]


def _per_layer(params):
    """The shared model's params with each layer holding a copy of its stack's table."""
    out = jax.tree.map(lambda x: x, params)  # a new tree; the arrays are shared
    for stack in ("encoder", "decoder"):
        table = out[stack].pop("relpos_bias")
        for name in out[stack]:
            if name.startswith("layers_"):
                out[stack][name] = {**out[stack][name], "relpos_bias": table}
    return out


@pytest.fixture(scope="module")
def setup():
    examples = _examples()
    batch = {k: jnp.asarray(v) for k, v in packing.padded(examples, LENGTHS).items()}
    cfg = config.named_config("tiny", dtype="float32")
    shared = prompted.PromptedT5(cfg, prompt_length=PROMPT, max_segments=3)
    params = jax.jit(lambda r: nn.unbox(shared.init(r, batch)))(jax.random.PRNGKey(0))
    own_cfg = dataclasses.replace(cfg, relpos_per_layer=True)
    own = prompted.PromptedT5(own_cfg, prompt_length=PROMPT, max_segments=3)
    return shared, own, params, _per_layer(params), batch, examples


def test_the_param_tree_has_one_table_per_layer(setup):
    shared, own, params, own_params, batch, _ = setup
    shapes = jax.eval_shape(lambda r: nn.unbox(own.init(r, batch)), jax.random.PRNGKey(0))
    assert jax.tree.map(jnp.shape, own_params) == jax.tree.map(lambda s: s.shape, shapes)
    assert "relpos_bias" not in own_params["encoder"]
    assert own_params["decoder"]["layers_1"]["relpos_bias"]["rel_embedding"].shape == (4, 8)
    assert own.config.shape_dict()["relpos_per_layer"] is True
    assert "relpos_per_layer" not in shared.config.shape_dict()  # T5 1.1 fingerprints unchanged


@pytest.mark.parametrize("padding", ["key_mask", "bias"])
def test_equal_tables_give_t5_1_1s_logits(setup, padding):
    shared, own, params, own_params, batch, _ = setup
    with_padding = lambda m: prompted.PromptedT5(  # noqa: E731
        dataclasses.replace(m.config, attention_padding=padding), prompt_length=PROMPT
    )
    want = with_padding(shared).logits(params, batch)
    got = with_padding(own).logits(own_params, batch)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Scanned: the per-layer tables stack like any other layer param.
    scanned = prompted.PromptedT5(
        dataclasses.replace(own.config, scan_layers=True, remat_policy="dots"),
        prompt_length=PROMPT,
    )
    stacked = prompted.stack_layers(own_params)
    assert stacked["encoder"]["layers"]["relpos_bias"]["rel_embedding"].shape == (2, 4, 8)
    np.testing.assert_allclose(scanned.logits(stacked, batch), want, rtol=1e-5, atol=1e-5)


def test_equal_tables_give_t5_1_1s_packed_logits(setup):
    shared, own, params, own_params, _, examples = setup
    packed, _ = packing.pack(examples, {"inputs": 24, "targets": 14}, 3)
    packed = {k: jnp.asarray(v) for k, v in packed.items()}
    want = shared.logits(params, packed)
    np.testing.assert_allclose(own.logits(own_params, packed), want, rtol=1e-5, atol=1e-5)


def test_equal_tables_decode_as_t5_1_1(setup):
    shared, own, params, own_params, batch, _ = setup
    want_tokens, want_scores = shared.predict(params, batch, max_decode_length=6)
    got_tokens, got_scores = own.predict(own_params, batch, max_decode_length=6)
    np.testing.assert_array_equal(got_tokens, want_tokens)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_each_layer_reads_its_own_table(setup, stack):
    _, own, _, own_params, batch, _ = setup
    want = own.logits(own_params, batch)
    changed = jax.tree.map(lambda x: x, own_params)
    layer = changed[stack]["layers_1"]
    table = layer["relpos_bias"]["rel_embedding"]
    # Not a constant shift, which the softmax would cancel: a different bias per bucket.
    bumped = table + jnp.arange(table.shape[-1], dtype=table.dtype)
    changed[stack]["layers_1"] = {**layer, "relpos_bias": {"rel_embedding": bumped}}
    got = own.logits(changed, batch)
    assert float(jnp.max(jnp.abs(got - want))) > 1e-4
