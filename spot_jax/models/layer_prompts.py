"""Per-layer prompts (prompt-tuning's extended per_layer.py): each encoder layer's own `[P, H]`
prompt at `encoder/layers_<i>/prompt/prompt/prompt`, combined with the prompt rows that lead the
layer's input."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spot_jax.models.prompts import Initializer, Prompt

Array = jax.Array

# How each encoder layer's own prompt meets that layer's input, as prompt-tuning's extended/
# per_layer.py combination functions: 'replace' (replace_prompt) overwrites the prompt rows,
# 'add' (add_prompt) adds to them; 'none': the input prompt alone (SPoT's, the default).
PER_LAYER_PROMPTS = ("none", "replace", "add")


def check_per_layer(per_layer: str) -> str:
    if per_layer not in PER_LAYER_PROMPTS:
        raise ValueError(f"per_layer_prompt {per_layer!r}: expected one of {PER_LAYER_PROMPTS}")
    return per_layer


class LayerPrompt(nn.Module):
    """An encoder layer's own `[P, H]` prompt (at `encoder/layers_<i>/prompt/prompt/prompt`, as
    in prompt-tuning's per-layer models), combined with the prompt rows of the layer's input.

    The prompt rows lead the input (the prefix layout; packed rows: one copy per slot)."""

    length: int
    initializer: Initializer
    param_dtype: Any = jnp.float32
    combine: str = "replace"

    @nn.compact
    def __call__(self, x: Array, copies: int = 1) -> Array:
        """x: [B, copies * P + T, H] -> the same with its first copies * P rows combined."""
        prompt = Prompt(self.length, self.initializer, self.param_dtype, name="prompt")(x.shape[-1])
        if copies != 1:
            prompt = jnp.tile(prompt, (copies, 1))
        rows = jnp.broadcast_to(jnp.asarray(prompt, x.dtype)[None], (x.shape[0],) + prompt.shape)
        n = prompt.shape[0]
        if check_per_layer(self.combine) == "add":
            rows = rows + x[:, :n]
        return jnp.concatenate([rows, x[:, n:]], axis=1)
