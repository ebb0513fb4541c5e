"""Prompt attention rules (prompt-tuning's extended masks): who sees whom around the prompt.

Checked by what the encoder's outputs depend on: without 'prompt->input' the prompt rows do not
change with the input tokens; with the causal prompt->prompt a prompt row does not change with
later prompt rows; the inputs always see the prompt."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_padding_test import _batch
from flax import traverse_util

from spot_jax.models import config, prompt_attention, prompted

P = 3


def _model(rule, **overrides):
    cfg = config.named_config("tiny", dtype="float32", **overrides)
    return prompted.PromptedT5(cfg, prompt_length=P, prompt_attention=rule)


def _encode(model, params, tokens):
    return np.asarray(
        jax.jit(lambda p, t: model.module.apply({"params": p}, t, method="encode"))(params, tokens)
    )


@pytest.fixture(scope="module")
def setup():
    batch = _batch()
    model = _model(None)
    params = jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))
    return batch, params


def test_rules_are_normalised_as_prompt_tuning_does():
    assert prompt_attention.normalize(None) is None
    # Spelling out full visibility is the standard model.
    assert prompt_attention.normalize(["prompt->input", "prompt->prompt"]) is None
    # Inputs always see inputs and the prompt; the causal prompt->prompt wins.
    assert prompt_attention.normalize("prompt->input") == (
        "input->input",
        "input->prompt",
        "prompt->input",
    )
    both = prompt_attention.normalize(["prompt->prompt", "prompt->prompt;causal"])
    assert both == ("input->input", "input->prompt", "prompt->prompt;causal")
    with pytest.raises(ValueError, match="each kind must be one of"):
        prompt_attention.normalize(["prompt->everything"])


def test_visibility_by_hand():
    # P = 2 prompt rows, then 3 inputs; 1 = may attend.
    seen = prompt_attention.visibility(("input->input", "input->prompt"), 2, 5)
    want = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]] + [[1] * 5] * 3  # a prompt row sees itself
    np.testing.assert_array_equal(np.asarray(seen, int), want)
    causal = prompt_attention.normalize(["prompt->prompt;causal", "prompt->input"])
    seen = prompt_attention.visibility(causal, 2, 5)
    want = [[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]] + [[1] * 5] * 3
    np.testing.assert_array_equal(np.asarray(seen, int), want)


@pytest.mark.parametrize("padding", ["key_mask", "bias"])
def test_without_prompt_to_input_the_prompt_rows_ignore_the_input(setup, padding):
    batch, params = setup
    model = _model(["prompt->prompt"], attention_padding=padding)
    tokens = np.asarray(batch["encoder_input_tokens"])
    other = tokens.copy()
    other[:, :4] = np.where(other[:, :4] > 0, (other[:, :4] + 7) % 500 + 2, 0)
    a, b = _encode(model, params, tokens), _encode(model, params, other)
    np.testing.assert_allclose(a[:, :P], b[:, :P], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, P:], b[:, P:], atol=1e-3)  # the inputs did change
    # The standard model's prompt rows read the input.
    standard = _model(None, attention_padding=padding)
    a, b = _encode(standard, params, tokens), _encode(standard, params, other)
    assert not np.allclose(a[:, :P], b[:, :P], atol=1e-3)


def test_causal_prompt_rows_ignore_later_prompt_rows_and_inputs_see_them_all(setup):
    batch, params = setup
    # (Without prompt->input: with it, an earlier prompt row would read, in the next layer,
    # inputs that saw the later rows.)
    model = _model(["prompt->prompt;causal"])
    flat = traverse_util.flatten_dict(params, sep="/")
    prompt = np.asarray(flat[prompted.PROMPT_PATH])
    changed = prompt.copy()
    changed[P - 1] += 1.0  # the last prompt row
    flat_changed = {**flat, prompted.PROMPT_PATH: jnp.asarray(changed)}
    tokens = batch["encoder_input_tokens"]
    a = _encode(model, params, tokens)
    b = _encode(model, traverse_util.unflatten_dict(flat_changed, sep="/"), tokens)
    np.testing.assert_allclose(a[:, : P - 1], b[:, : P - 1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, P - 1], b[:, P - 1], atol=1e-3)
    assert not np.allclose(a[:, P:], b[:, P:], atol=1e-3)


def test_the_standard_model_is_unchanged_and_refusals_name_the_fix(setup):
    batch, params = setup
    spelled = _model(["prompt->input", "prompt->prompt", "input->input"])
    assert spelled.prompt_attention is None
    np.testing.assert_array_equal(
        jax.jit(spelled.logits)(params, batch), jax.jit(_model(None).logits)(params, batch)
    )
    cfg = config.named_config("tiny", dtype="float32")
    for kwargs, message in [
        (dict(prompt_length=0), "needs a prompt"),
        (dict(prompt_length=P, prompt_position="suffix"), "'prefix'"),
        (dict(prompt_length=P, max_segments=2), "PACK=False"),
    ]:
        with pytest.raises(ValueError, match=message):
            prompted.PromptedT5(cfg, prompt_attention=["prompt->prompt"], **kwargs)
