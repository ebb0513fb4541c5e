"""T5's layer norm (RMS, scale only), with the backward pass and the scale's placement chosen.

`recompute` keeps only the norm's input and per-row statistic for the backward pass.
`fold_scale` hands the consumers a `layers.Normed` (the normalised rows and the scale apart), so
each `Dense` that reads it multiplies the scale into its kernel instead of the activation.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import ad_checkpoint

from spot_jax import axes
from spot_jax.models import layers

Array = jax.Array

# Saved by `_rms_norm` for the backward pass besides its inputs: the rows' [.., 1] statistic.
RMS_STATISTIC = "rms_norm_rsqrt"


def _rms_norm(x: Array, scale: Array | None, epsilon: float, dtype) -> Array:
    """x / rms(x) in `dtype`, times `scale` unless it is None (a folded scale)."""
    x32 = jnp.asarray(x, jnp.float32)
    rsqrt = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + epsilon)
    rsqrt = ad_checkpoint.checkpoint_name(rsqrt, RMS_STATISTIC)
    normed = jnp.asarray(x32 * rsqrt, dtype)
    return normed if scale is None else normed * jnp.asarray(scale, dtype)


# Autodiff saves a float32 copy of x for the norm's backward; under this checkpoint the backward
# keeps x and the statistic and recomputes the rest inside the kernels that read x anyway (see
# layers._recomputed_gated_gelu, the MLP's counterpart). Same values.
_recomputed_rms_norm = jax.checkpoint(
    _rms_norm,
    static_argnums=(2, 3),
    policy=jax.checkpoint_policies.save_only_these_names(RMS_STATISTIC),
)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, statistics in float32.

    `recompute`: the backward pass keeps x and the per-row statistic and recomputes the rest
    (`_recomputed_rms_norm`); False: autodiff's residuals (a float32 copy of x).
    `fold_scale`: return `layers.Normed(x / rms(x), scale)` for `Dense` layers to fold the scale
    into their kernels. Why: XLA:GPU cannot fuse the `x̂ · scale` product into a cuBLAS matmul's
    operand, and it computes that product once per consumer (query, key and value; wi_0 and
    wi_1), each pass writing a [B, L, H] array (XL on an H200: 120 passes, 5.9 ms of a 237 ms
    step). Folded, the product is one [H, out] multiply per kernel. Same math, other rounding.
    """

    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32
    epsilon: float = 1e-6
    recompute: bool = True
    fold_scale: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array | layers.Normed:
        scale = layers.param_with_axes(
            self, "scale", nn.initializers.ones, (x.shape[-1],), (axes.EMBED,), self.param_dtype
        )
        norm = _recomputed_rms_norm if self.recompute else _rms_norm
        if self.fold_scale:
            return layers.Normed(norm(x, None, self.epsilon, jnp.dtype(self.dtype)), scale)
        return norm(x, scale, self.epsilon, jnp.dtype(self.dtype))
