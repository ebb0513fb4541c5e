"""Who may attend to whom around the prompt in the encoder, as prompt-tuning's extended/masks.py
lets a run choose (its `prompt_encoder_attention_mask(allowable_attention=...)`).

The standard prompt model lets every position see every other (inputs see the prompt, the
prompt sees itself and the inputs). A run may instead allow only some kinds of attention:

  'input->input', 'input->prompt'   always on (prompt-tuning adds them if missing)
  'prompt->prompt'                  prompt rows see every prompt row
  'prompt->prompt;causal'           ... only those at or before them (wins over the above)
  'prompt->input'                   prompt rows see the input tokens

With neither prompt->prompt kind, a prompt row sees itself alone. Padding stays masked as
before; the rule is a [1, 1, P + T, P + T] bias added to the relative-position bias, so the
fused attention kernel's per-row key counts still apply.
"""

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from spot_jax.models import layers

Array = jax.Array

INPUT_INPUT = "input->input"
INPUT_PROMPT = "input->prompt"
PROMPT_PROMPT = "prompt->prompt"
PROMPT_PROMPT_CAUSAL = "prompt->prompt;causal"
PROMPT_INPUT = "prompt->input"
KINDS = (INPUT_INPUT, INPUT_PROMPT, PROMPT_PROMPT, PROMPT_PROMPT_CAUSAL, PROMPT_INPUT)
# Every position sees every other: the standard prompt model, written as None.
_FULL = (INPUT_INPUT, INPUT_PROMPT, PROMPT_PROMPT, PROMPT_INPUT)


def normalize(allowed: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The allowed kinds after prompt-tuning's rules (input->input and input->prompt always;
    the causal prompt->prompt wins over the full one), in `KINDS` order; None for the standard
    full visibility (also when `allowed` spells it out)."""
    if allowed is None:
        return None
    kinds = {allowed} if isinstance(allowed, str) else set(allowed)
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise ValueError(f"prompt_attention {unknown}: each kind must be one of {KINDS}")
    kinds |= {INPUT_INPUT, INPUT_PROMPT}
    if PROMPT_PROMPT_CAUSAL in kinds:
        kinds.discard(PROMPT_PROMPT)
    ordered = tuple(k for k in KINDS if k in kinds)
    return None if ordered == _FULL else ordered


def visibility(allowed: tuple[str, ...], prompt_length: int, length: int) -> Array:
    """[L, L] bool, query row by key column: which positions of the prefix layout (P prompt
    rows, then the inputs) a position may attend to under `allowed` (padding aside)."""
    q = jnp.arange(length)[:, None]
    k = jnp.arange(length)[None, :]
    key_is_prompt = k < prompt_length
    if PROMPT_PROMPT in allowed:
        sees_prompt = key_is_prompt
    elif PROMPT_PROMPT_CAUSAL in allowed:
        sees_prompt = key_is_prompt & (k <= q)
    else:
        sees_prompt = key_is_prompt & (k == q)
    sees_input = ~key_is_prompt & (PROMPT_INPUT in allowed)
    prompt_row = sees_prompt | sees_input
    return jnp.where(q < prompt_length, prompt_row, True)


def bias(allowed: tuple[str, ...], prompt_length: int, length: int) -> Array:
    """The rule as an additive attention bias [1, 1, L, L] (0 or `layers.NEG_INF`)."""
    seen = visibility(allowed, prompt_length, length)
    return jnp.where(seen, 0.0, layers.NEG_INF)[None, None].astype(jnp.float32)
