"""Packed sequences: per-segment prompt slots, segment-local attention masks, positions.

A packed row holds several examples ("segments", ids 1, 2, ...; 0 is padding), as seqio's
EncDecFeatureConverter(pack=True) lays them out with `*_segment_ids` and `*_positions`.
Prompt tuning needs each example to see its own copy of the prompt, exactly as if it ran alone.

Layout: fixed prompt slots. The encoder sequence of a packed row is

    [prompt copy for segment 1 | ... | prompt copy for segment S | packed tokens]    [S*P + T]

where S = `max_segments` is static. Slot s carries segment id s when the row has a segment s,
else 0 (padding), so unused slots are masked like padding. Why slots in front, not the prompt
scattered before each segment's tokens: T5 has no absolute positions, attention is masked to the
segment, and relative positions come from the per-position `positions`, not from the physical
index, so the physical order of encoder positions changes nothing numerically. Slots make the
embedded sequence one concatenation (no scatter and no gather back for the decoder), and its
length S*P + T is the same static length a scatter layout would need. Positions restart per
segment with the prompt first: prompt slot positions 0..P-1, token positions P + position,
which is what an unpacked prompted example sees.
"""

import jax
import jax.numpy as jnp

from spot_jax.models import layers

Array = jax.Array


def prompted_encoder_segments(
    segment_ids: Array, positions: Array, prompt_length: int, max_segments: int
) -> tuple[Array, Array]:
    """Segment ids and positions of the encoder sequence with prompt slots in front.

    Args:
      segment_ids: [B, T] int, encoder_segment_ids (0 = padding, segments 1..S).
      positions: [B, T] int, encoder_positions (restarting at 0 in each segment).
      prompt_length: P; 0 leaves the inputs unchanged.
      max_segments: S, the most segments any row may hold (static).

    Returns:
      (segment ids [B, S*P + T], positions [B, S*P + T]).
    """
    if not prompt_length:
        return segment_ids, positions
    batch = segment_ids.shape[0]
    slots = jnp.arange(1, max_segments + 1, dtype=segment_ids.dtype)  # [S]
    present = jnp.any(segment_ids[:, :, None] == slots[None, None, :], axis=1)  # [B, S]
    slot_ids = jnp.repeat(jnp.where(present, slots[None], 0), prompt_length, axis=1)
    slot_positions = jnp.broadcast_to(
        jnp.tile(jnp.arange(prompt_length, dtype=positions.dtype), max_segments),
        (batch, max_segments * prompt_length),
    )
    return (
        jnp.concatenate([slot_ids, segment_ids], axis=1),
        jnp.concatenate([slot_positions, positions + prompt_length], axis=1),
    )


def num_prompt_slots(encoder_length: int, token_length: int, prompt_length: int) -> int:
    """S from the lengths of the prompted encoder sequence (S*P + T) and of the tokens (T)."""
    if not prompt_length:
        return 0
    slots, rest = divmod(encoder_length - token_length, prompt_length)
    if rest or slots < 0:
        raise ValueError(
            f"encoder length {encoder_length} is not {token_length} tokens + k x {prompt_length}"
        )
    return slots


def segment_bias(q_segment_ids: Array, k_segment_ids: Array) -> Array:
    """Additive bias [B, 1, Q, K]: 0 where query and key are in the same real segment."""
    same = q_segment_ids[:, :, None] == k_segment_ids[:, None, :]
    valid = same & (q_segment_ids[:, :, None] > 0)
    return jnp.where(valid, 0.0, layers.NEG_INF)[:, None].astype(jnp.float32)
