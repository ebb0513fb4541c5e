"""Packed rows with per-segment prompts compute what the same examples compute unpacked."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import packing, synthetic
from spot_jax.models import config, prompted, segments
from spot_jax.train import losses

PROMPT_LENGTH = 3
EXAMPLE_LENGTHS = {"inputs": 9, "targets": 6}
ROW_LENGTHS = {"inputs": 24, "targets": 14}
MAX_SEGMENTS = 3
Z_LOSS = 1e-4


def _examples(n=7, seed=3):
    return [
        synthetic.example(
            i,
            split="train",
            seed=seed,
            inputs_length=EXAMPLE_LENGTHS["inputs"],
            targets_length=EXAMPLE_LENGTHS["targets"],
            vocab_size=512,
        )
        for i in range(n)
    ]


def _model(max_segments=MAX_SEGMENTS, prompt_length=PROMPT_LENGTH):
    cfg = config.named_config("tiny", dtype="float32")
    return prompted.PromptedT5(cfg, prompt_length=prompt_length, max_segments=max_segments)


def _jnp(batch):
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def setup():
    examples = _examples()
    unpacked = _jnp(packing.padded(examples, EXAMPLE_LENGTHS))
    packed_np, placement = packing.pack(examples, ROW_LENGTHS, MAX_SEGMENTS)
    model = _model()
    params = jax.jit(lambda r: nn.unbox(model.init(r, unpacked)))(jax.random.PRNGKey(0))
    return model, params, examples, unpacked, _jnp(packed_np), placement


def _token_losses(model, params, batch):
    """Per-token loss [B, L] (cross-entropy + z-loss) times the loss weights."""
    logits = model.logits(params, batch)
    onehot = jax.nn.one_hot(batch["decoder_target_tokens"], logits.shape[-1])
    loss, _ = losses.cross_entropy_with_logits(logits, onehot, Z_LOSS)
    return loss * batch["decoder_loss_weights"]


def test_packed_rows_hold_several_examples(setup):
    _, _, examples, _, packed, placement = setup
    rows = packed["encoder_input_tokens"].shape[0]
    assert rows < len(examples)  # packing actually shared rows
    assert np.bincount(placement[:, 0]).max() > 1


def test_packed_loss_per_example_equals_unpacked(setup):
    model, params, examples, unpacked, packed, placement = setup
    want = np.asarray(jax.jit(_token_losses, static_argnums=0)(model, params, unpacked)).sum(1)
    token = np.asarray(jax.jit(_token_losses, static_argnums=0)(model, params, packed))
    seg = np.asarray(packed["decoder_segment_ids"])
    got = np.array([token[r][seg[r] == s].sum() for r, s in placement])
    assert np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_packed_prompt_gradient_equals_sum_of_unpacked(setup):
    model, params, _, unpacked, packed, _ = setup

    def prompt_grad(batch):
        total = lambda p: model.loss(p, batch)[0]  # noqa: E731
        return jax.jit(jax.grad(total))(params)["encoder"]["prompt"]["prompt"]["prompt"]

    want, got = np.asarray(prompt_grad(unpacked)), np.asarray(prompt_grad(packed))
    assert np.abs(want).max() > 1e-4
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_packed_encoder_outputs_equal_unpacked_per_segment(setup):
    model, params, _, unpacked, packed, placement = setup

    def encode(batch, **kw):
        return model.module.apply(
            {"params": params}, batch["encoder_input_tokens"], method=model.module.encode, **kw
        )

    want = np.asarray(jax.jit(encode)(unpacked))  # [N, P + T, H]
    got = np.asarray(
        jax.jit(encode)(
            packed,
            encoder_segment_ids=packed["encoder_segment_ids"],
            encoder_positions=packed["encoder_positions"],
        )
    )  # [R, S*P + T, H]
    slots = MAX_SEGMENTS * PROMPT_LENGTH
    seg = np.asarray(packed["encoder_segment_ids"])
    for i, (row, s) in enumerate(placement):
        tokens = got[row, slots:][seg[row] == s]
        np.testing.assert_allclose(tokens, want[i, PROMPT_LENGTH:][: len(tokens)], atol=2e-5)
        prompt_slot = got[row, (s - 1) * PROMPT_LENGTH : s * PROMPT_LENGTH]
        np.testing.assert_allclose(prompt_slot, want[i, :PROMPT_LENGTH], atol=2e-5)
    # Unused slots and padding are zeroed.
    used = np.bincount(placement[:, 0], minlength=got.shape[0])
    for row, n in enumerate(used):
        assert np.all(got[row, n * PROMPT_LENGTH : slots] == 0)
    assert np.all(got[:, slots:][seg == 0] == 0)


def test_unpacked_batches_run_unchanged_with_max_segments(setup):
    _, params, _, unpacked, _, _ = setup
    plain = _model(max_segments=0)
    want = jax.jit(plain.logits)(params, unpacked)
    got = jax.jit(_model().logits)(params, unpacked)
    np.testing.assert_array_equal(got, want)


def test_more_prompt_slots_than_segments_changes_nothing(setup):
    _, params, _, _, packed, _ = setup
    a = jax.jit(_model(MAX_SEGMENTS).logits)(params, packed)
    b = jax.jit(_model(MAX_SEGMENTS + 2).logits)(params, packed)
    real = np.asarray(packed["decoder_segment_ids"]) > 0  # padding rows attend to everything
    np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-5)


def test_prompt_slot_segments_and_positions():
    seg = jnp.array([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    pos = jnp.array([[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 0]])
    got_seg, got_pos = segments.prompted_encoder_segments(seg, pos, 2, 3)
    np.testing.assert_array_equal(
        got_seg, [[1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 2, 0], [1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0]]
    )
    # Prompt first in each segment: slot positions 0..P-1, tokens shifted by P.
    np.testing.assert_array_equal(got_pos[0], [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 4, 2])
    assert segments.num_prompt_slots(12, 6, 2) == 3


def test_segment_bias_is_local_and_masks_padding():
    seg = jnp.array([[1, 1, 2, 0]])
    bias = np.asarray(segments.segment_bias(seg, seg))[0, 0]
    visible = bias == 0
    np.testing.assert_array_equal(
        visible,
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    )


def test_packed_batch_needs_max_segments(setup):
    _, params, _, _, packed, _ = setup
    with pytest.raises(ValueError, match="max_segments"):
        _model(max_segments=0).logits(params, packed)
    partial = {k: v for k, v in packed.items() if k != "decoder_positions"}
    with pytest.raises(ValueError, match="decoder_positions"):
        _model().logits(params, partial)


def test_segments_beyond_the_prompt_slots_are_counted(setup):
    model, params, _, _, packed, placement = setup
    _, metrics = jax.jit(model.loss)(params, packed)
    assert int(metrics["unprompted_tokens"]) == 0
    fewer = _model(max_segments=1)
    _, metrics = jax.jit(fewer.loss)(params, packed)
    seg = np.asarray(packed["decoder_segment_ids"])
    assert int(metrics["unprompted_tokens"]) == int((seg > 1).sum()) > 0


def test_packed_rows_run_the_same_with_scanned_layers(setup):
    model, params, _, _, packed, _ = setup
    cfg = config.named_config("tiny", dtype="float32", scan_layers=True)
    scanned = prompted.PromptedT5(cfg, prompt_length=PROMPT_LENGTH, max_segments=MAX_SEGMENTS)
    want = jax.jit(model.logits)(params, packed)
    got = jax.jit(scanned.logits)(prompted.stack_layers(params), packed)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_packed_scores_per_example_equal_unpacked_scores(setup):
    model, params, _, unpacked, packed, placement = setup
    want = np.asarray(jax.jit(model.score)(params, unpacked))
    per_slot = np.asarray(jax.jit(model.score_segments)(params, packed))
    assert per_slot.shape == (packed["encoder_input_tokens"].shape[0], MAX_SEGMENTS)
    got = packing.unpack_scores(per_slot, placement)
    assert np.all(want < 0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)
    # Slots the packer left empty score exactly 0.
    used = np.zeros_like(per_slot, bool)
    used[placement[:, 0], placement[:, 1] - 1] = True
    assert np.all(per_slot[~used] == 0)


def test_whole_row_score_of_a_packed_batch_is_refused(setup):
    model, params, _, unpacked, packed, placement = setup
    with pytest.raises(ValueError, match="score_segments"):
        model.score(params, packed)
    with pytest.raises(ValueError, match="packed batch"):
        model.score_segments(params, unpacked)
    with pytest.raises(ValueError, match="max_segments"):
        packing.unpack_scores(np.zeros((4, 1)), placement)
