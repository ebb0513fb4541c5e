"""The T5 1.1 encoder and decoder layers: pre-norm attention and gated-GELU MLP blocks, each
with a residual, under T5X's names (`layers_<i>/attention`, `pre_mlp_layer_norm`, ...).

`t5.py` stacks them, in a loop or a scan, with remat.
"""

from typing import Any

import flax.linen as nn
import jax

from spot_jax import axes
from spot_jax.models import layer_prompts, layers, norms, relative_position
from spot_jax.models.config import T5Config

Array = jax.Array
# The activations' logical axes at block boundaries.
ACT = (axes.BATCH, axes.LENGTH, axes.EMBED)


def norm(config: T5Config, name: str, *, feeds_dense: bool = False) -> norms.RMSNorm:
    """A T5 layer norm named `name`, in the config's dtypes. `feeds_dense`: only `Dense`
    layers read its output, so `config.fold_norm_scale` may fold its scale into their kernels."""
    return norms.RMSNorm(
        name=name,
        dtype=config.activation_dtype,
        param_dtype=config.param_dtype,
        recompute=config.recompute_elementwise,
        fold_scale=feeds_dense and config.fold_norm_scale,
    )


def attention(config: T5Config, name: str, **kwargs) -> layers.MultiHeadAttention:
    """An attention block named `name` with the config's heads, dropout and kernel choices."""
    return layers.MultiHeadAttention(
        config.num_heads,
        config.head_dim,
        config.attention_dropout,
        float32_logits=config.float32_attention_logits,
        implementation=config.attention_impl,
        fused_bias_grad=config.fused_bias_grad,
        dtype=config.activation_dtype,
        param_dtype=config.param_dtype,
        name=name,
        **kwargs,
    )


def _mlp_residual(config: T5Config, x: Array, drop: nn.Dropout, deterministic: bool) -> Array:
    """x + MLP(norm(x)), both layers' last block. Called inside a layer's compact `__call__`,
    so its params are that layer's `pre_mlp_layer_norm` and `mlp`."""
    h = norm(config, "pre_mlp_layer_norm", feeds_dense=True)(x)
    h = layers.MlpBlock(
        config.mlp_dim,
        config.dropout_rate,
        name="mlp",
        dtype=config.activation_dtype,
        param_dtype=config.param_dtype,
        recompute=config.recompute_elementwise,
    )(h, deterministic=deterministic)
    return layers.constrain(x + drop(h, deterministic=deterministic), ACT)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and MLP, each with a residual; with `per_layer_prompt` ('replace'
    or 'add', `layer_prompts.PER_LAYER_PROMPTS`) the layer's own prompt first meets the prompt rows
    that lead its input (`prompt_copies` of them in a packed row)."""

    config: T5Config
    deterministic: bool
    per_layer_prompt: str = "none"
    prompt_length: int = 0
    prompt_init: Any = None
    prompt_copies: int = 1

    @nn.compact
    def __call__(self, x: Array, bias: Array, positions: Array | None = None) -> tuple[Array, None]:
        c = self.config
        if self.per_layer_prompt != "none":
            x = layer_prompts.LayerPrompt(
                self.prompt_length,
                self.prompt_init,
                c.param_dtype,
                self.per_layer_prompt,
                name="prompt",
            )(x, self.prompt_copies)
        drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
        if c.relpos_per_layer:
            length = x.shape[1]
            bias = relative_position.with_layer_bias(
                c, bias, length, length, True, positions=positions
            )
        h = norm(c, "pre_attention_layer_norm", feeds_dense=True)(x)
        h = attention(c, "attention")(h, h, bias, deterministic=self.deterministic)
        x = layers.constrain(x + drop(h, deterministic=self.deterministic), ACT)
        return _mlp_residual(c, x, drop, self.deterministic), None


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention and MLP."""

    config: T5Config
    deterministic: bool
    decode: bool = False
    max_decode_length: int | None = None  # keys of the per-layer relpos bias in decode mode

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_bias: Array,
        cross_bias: Array,
        positions: Array | None = None,
        decode_position: Array | int = 0,
    ) -> tuple[Array, None]:
        c = self.config
        drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
        if c.relpos_per_layer and self.decode:
            k_len = self.max_decode_length
            self_bias = relative_position.with_layer_bias(
                c, self_bias, 1, k_len, False, decode_position
            )
        elif c.relpos_per_layer:
            length = x.shape[1]
            self_bias = relative_position.with_layer_bias(
                c, self_bias, length, length, False, positions=positions
            )
        h = norm(c, "pre_self_attention_layer_norm", feeds_dense=True)(x)
        h = attention(c, "self_attention")(
            h, h, self_bias, deterministic=self.deterministic, decode=self.decode
        )
        x = layers.constrain(x + drop(h, deterministic=self.deterministic), ACT)
        h = norm(c, "pre_cross_attention_layer_norm", feeds_dense=True)(x)
        h = attention(c, "encoder_decoder_attention", cross_projection=c.cross_projection)(
            h, encoded, cross_bias, deterministic=self.deterministic
        )
        x = layers.constrain(x + drop(h, deterministic=self.deterministic), ACT)
        return _mlp_residual(c, x, drop, self.deterministic), None
