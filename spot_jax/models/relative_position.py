"""T5's relative position bias: buckets of key - query offsets, a learned scalar per head each.

Buckets are exact for small offsets and log-spaced up to `max_distance` (T5X's
`RelativePositionBiases`); the table is one `[heads, buckets]` param per stack in T5 1.1 (T5X's
`relpos_bias/rel_embedding`), or per layer for umT5. Packed rows give per-segment positions, so
each packed example is biased as if it were alone in its row.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import axes
from spot_jax.models import layers
from spot_jax.models.config import T5Config

Array = jax.Array


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucketing of `memory_position - query_position` (exact near, log-spaced far)."""
    n = -relative_position
    ret = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    eps = np.finfo(np.float32).eps
    val_if_large = max_exact + (
        np.log(n.astype(np.float32) / max_exact + eps)
        / np.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large)


def bucket_table(max_length: int, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5 buckets of relative positions -(max_length-1)..(max_length-1), as an int32 [2M-1] table.

    Computed with numpy at trace time by `relative_position_bucket`, the function the
    unpacked path uses, so packed and unpacked rows get bit-identical buckets.
    """
    relative = np.arange(-(max_length - 1), max_length)
    table = relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    return jnp.asarray(table, jnp.int32)


def position_buckets(
    q_positions: Array, k_positions: Array, table: Array, max_length: int
) -> Array:
    """[B, Q] x [B, K] positions -> [B, Q, K] buckets of `k_position - q_position`."""
    relative = k_positions[:, None, :] - q_positions[:, :, None]
    index = jnp.clip(relative + (max_length - 1), 0, 2 * max_length - 2)
    return jnp.take(table, index, axis=0)


class RelativePositionBias(nn.Module):
    """Per-head scalar bias by relative-position bucket, shared by all layers of a stack."""

    num_buckets: int
    max_distance: int
    num_heads: int
    bidirectional: bool
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        q_len: int,
        k_len: int,
        q_offset: Array | int = 0,
        *,
        q_positions: Array | None = None,
        k_positions: Array | None = None,
    ) -> Array:
        """Returns the bias [1, heads, q_len, k_len] for queries at q_offset + arange(q_len).

        With `q_positions` [B, Q] and `k_positions` [B, K] (packed rows, positions restarting
        per segment) it returns [B, heads, Q, K] for those positions instead.
        """
        rel_embedding = layers.param_with_axes(
            self,
            "rel_embedding",
            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (self.num_heads, self.num_buckets),
            (axes.HEADS, axes.RELPOS_BUCKETS),
            self.param_dtype,
        )
        if q_positions is not None:
            full = max(q_len, k_len)
            table = bucket_table(full, self.bidirectional, self.num_buckets, self.max_distance)
            buckets = position_buckets(q_positions, k_positions, table, full)
            bias = jnp.take(jnp.asarray(rel_embedding, self.dtype), buckets, axis=1)
            return jnp.transpose(bias, (1, 0, 2, 3))
        # Buckets are static for a static offset; in decoding the offset is traced, so bucket the
        # whole square once (numpy, at trace time) and slice the query rows.
        full = max(q_len, k_len)
        positions = np.arange(full)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None],
            self.bidirectional,
            self.num_buckets,
            self.max_distance,
        )
        buckets = jnp.asarray(buckets[:, :k_len], jnp.int32)
        buckets = jax.lax.dynamic_slice_in_dim(buckets, q_offset, q_len, axis=0)
        bias = jnp.take(jnp.asarray(rel_embedding, self.dtype), buckets, axis=1)
        return bias[None]


def for_config(config: T5Config, bidirectional: bool) -> "RelativePositionBias":
    """The `relpos_bias` module of a stack (or, with `relpos_per_layer`, of a layer)."""
    c = config
    return RelativePositionBias(
        c.relpos_buckets,
        c.relpos_max_distance,
        c.num_heads,
        bidirectional,
        name="relpos_bias",
        dtype=c.activation_dtype,
        param_dtype=c.param_dtype,
    )


def stack_bias(config: T5Config, bidirectional: bool):
    """The stack's one relative-position bias (T5 1.1), or with `relpos_per_layer` a zero bias
    here, since each layer adds its own (`with_layer_bias`)."""
    if config.relpos_per_layer:
        return lambda *args, **kwargs: jnp.zeros((1, 1, 1, 1), jnp.float32)
    return for_config(config, bidirectional)


def with_layer_bias(
    config: T5Config, bias, q_len: int, k_len: int, bidirectional: bool, offset=0, positions=None
):
    """`bias` plus the calling layer's own relative-position bias (`relpos_per_layer`); called
    inside a layer's compact `__call__`, so the table is that layer's `relpos_bias` param."""
    relpos = for_config(config, bidirectional)(
        q_len, k_len, offset, q_positions=positions, k_positions=positions
    )
    if isinstance(bias, layers.KeyMask):
        return layers.KeyMask(bias.bias + relpos, bias.keys)
    return bias + relpos
