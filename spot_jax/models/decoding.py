"""Autoregressive decoding: temperature / top-k / top-p sampling and beam search.

Pure JAX (no Flax), following the conventions of T5X's `t5x/decoding.py`:

* The model is driven through `tokens_to_logits(token_ids, cache, index)`, which
  takes the previous token `[N, 1]` int32, the decoding cache (any pytree whose
  leaves with ndim >= 1 are batch-major, `[N, ...]`) and the int32 scalar position
  being predicted, and returns `(logits [N, V] float32, new_cache)`.
* Several decodes per example are laid out "in place": example `b`'s decodes
  occupy rows `b * n ... b * n + n - 1` (see `expand_batch`), which is what T5X's
  `flat_batch_beam_expand` does to encoder outputs and caches.
* Returned sequences exclude the start token, keep the EOS, and are 0 (pad) after
  it. When several decodes are returned they are sorted by ascending score, so the
  best one is `[:, -1]`.

All sizes (`batch_size`, `max_decode_len`, `num_decodes`, `num_beams`, `topk`) and
`temperature` / `topp` / `alpha` must be static Python numbers so both functions
can be wrapped in `jax.jit` (e.g. via `functools.partial`); the loops are
`lax.while_loop`s that stop as soon as no further progress is possible.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
    """How `predict` decodes: 'greedy', 'sample' (temperature/top-k/top-p) or 'beam'."""

    method: str = "greedy"
    num_decodes: int = 1
    temperature: float = 1.0
    topk: int = 0
    topp: float = 0.0
    beam_alpha: float = 0.6
    eos_id: int = 1


PyTree = Any
TokensToLogits = Callable[[jax.Array, PyTree, jax.Array], tuple[jax.Array, PyTree]]

# "Effective minus infinity" for scores of empty finished-beam slots. T5X uses the
# same finite value so that returned scores stay finite and comparable.
NEG_INF = -1.0e7


def expand_batch(x: PyTree, n: int) -> PyTree:
    """Repeats every batch row `n` times consecutively.

    Args:
      x: array `[B, ...]` or pytree of such arrays (encoder outputs, a cache).
        Leaves with ndim 0 (e.g. a shared cache index) are returned unchanged.
      n: number of copies of each row.

    Returns:
      Same structure with leaves `[B * n, ...]`, row `b * n + j` being a copy of row
      `b`; this "in-place" layout lets `reshape(B, n, ...)` recover the groups.
    """

    def _expand(leaf):
        leaf = jnp.asarray(leaf)
        if leaf.ndim == 0 or n == 1:
            return leaf
        return jnp.repeat(leaf, n, axis=0, total_repeat_length=leaf.shape[0] * n)

    return jax.tree_util.tree_map(_expand, x)


def _gather_rows(cache: PyTree, rows: jax.Array) -> PyTree:
    """Selects batch rows `rows` `[N]` from every non-scalar cache leaf `[N, ...]`."""
    return jax.tree_util.tree_map(lambda c: c if jnp.ndim(c) == 0 else c[rows], cache)


def _filter_logits(logits: jax.Array, topk: int, topp: float) -> jax.Array:
    """Masks `logits` `[N, V]` to -inf outside the top-k and then the top-p nucleus."""
    vocab_size = logits.shape[-1]
    if 0 < topk < vocab_size:
        kth_largest = lax.top_k(logits, topk)[0][:, -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    if topp > 0.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass of strictly more likely tokens is still below
        # topp; this always keeps the argmax, so the distribution never empties.
        mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep = mass_before < topp
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def temperature_sample(
    tokens_to_logits: TokensToLogits,
    cache: PyTree,
    *,
    batch_size: int,
    max_decode_len: int,
    eos_id: int,
    rng: jax.Array,
    temperature: float = 1.0,
    topk: int = 1,
    topp: float = 0.0,
    num_decodes: int = 1,
    decoder_start_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Greedy decoding or temperature sampling with optional top-k / nucleus filtering.

    `topk=1` (the T5X default) or `temperature=0` gives greedy argmax decoding.
    Otherwise logits are divided by `temperature`, restricted to the `topk` most
    likely tokens when `topk > 1` (`topk=0` means no restriction) and then to the
    smallest nucleus of mass >= `topp` when `topp > 0`, and a token is sampled.

    Args:
      tokens_to_logits: `(token_ids [N, 1], cache, index) -> (logits [N, V], cache)`.
      cache: decoding cache built for `batch_size` rows; expanded here to
        `N = batch_size * num_decodes`.
      batch_size: B, number of examples.
      max_decode_len: L, number of tokens to generate at most.
      eos_id: end-of-sequence id; decoding of a row stops after it.
      rng: PRNG key; step `i` uses `fold_in(rng, i)` so results are reproducible.
      temperature: softmax temperature (static Python float).
      topk: sample among the `topk` highest logits; 1 is greedy, 0 disables.
      topp: nucleus sampling mass; 0 disables.
      num_decodes: independent samples per example.
      decoder_start_id: token fed at step 0 (T5's BOS / pad 0).

    Returns:
      tokens: `[B, num_decodes, L]` int32, without the start token, EOS kept and 0
        after it; the decodes of each example are sorted by ascending log-prob.
      log_probs: `[B, num_decodes]` float32, the sum up to and including EOS of
        `log_softmax(logits / temperature)` of the chosen tokens, i.e. of the
        temperature-scaled but *unfiltered* distribution (temperature 0 counts as
        1, so greedy decoding reports the model's own log-likelihood).
    """
    greedy = topk == 1 or temperature == 0.0
    scale = 1.0 if temperature == 0.0 else 1.0 / temperature
    n = batch_size * num_decodes
    cache = expand_batch(cache, num_decodes)

    def cond_fn(state):
        i, _, _, ended, _, _ = state
        # Stop early once every row has emitted EOS: later steps change nothing.
        return (i < max_decode_len) & ~jnp.all(ended)

    def body_fn(state):
        i, prev, tokens, ended, log_probs, cache = state
        logits, new_cache = tokens_to_logits(prev[:, None], cache, i)
        scaled = logits.astype(jnp.float32) * scale
        if greedy:
            next_tok = jnp.argmax(scaled, axis=-1).astype(jnp.int32)
        else:
            filtered = _filter_logits(scaled, topk, topp)
            key = jax.random.fold_in(rng, i)
            next_tok = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
        step_lp = jnp.take_along_axis(jax.nn.log_softmax(scaled), next_tok[:, None], axis=-1)
        # Rows that already finished emit pad and stop accumulating log-prob.
        next_tok = jnp.where(ended, 0, next_tok)
        log_probs = log_probs + jnp.where(ended, 0.0, step_lp[:, 0])
        tokens = tokens.at[:, i].set(next_tok)
        ended = ended | (next_tok == eos_id)
        return i + 1, next_tok, tokens, ended, log_probs, new_cache

    init = (
        jnp.array(0, jnp.int32),
        jnp.full((n,), decoder_start_id, jnp.int32),
        jnp.zeros((n, max_decode_len), jnp.int32),
        jnp.zeros((n,), jnp.bool_),
        jnp.zeros((n,), jnp.float32),
        cache,
    )
    _, _, tokens, _, log_probs, _ = lax.while_loop(cond_fn, body_fn, init)

    tokens = tokens.reshape(batch_size, num_decodes, max_decode_len)
    log_probs = log_probs.reshape(batch_size, num_decodes)
    # Same ordering contract as beam search (T5X sorts sampled decodes too).
    order = jnp.argsort(log_probs, axis=-1)
    tokens = jnp.take_along_axis(tokens, order[:, :, None], axis=1)
    log_probs = jnp.take_along_axis(log_probs, order, axis=1)
    return tokens, log_probs


def brevity_penalty(alpha: float, length: jax.Array) -> jax.Array:
    """T5X / GNMT length penalty `((5 + length) / 6) ** alpha`."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
    tokens_to_logits: TokensToLogits,
    cache: PyTree,
    *,
    batch_size: int,
    max_decode_len: int,
    eos_id: int,
    num_beams: int = 4,
    alpha: float = 0.6,
    min_log_prob: float = -1e7,
    decoder_start_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """T5X-style beam search with a length penalty on finished hypotheses.

    Keeps `num_beams` live (unfinished) and `num_beams` finished hypotheses per
    example. Each step scores the top `2 * num_beams` one-token extensions of the
    live beams (2x so that `num_beams` non-EOS extensions survive even if many end
    at once); those ending in EOS compete for the finished set with score
    `log_prob / brevity_penalty(alpha, length)` (length counts the EOS), the rest
    become the new live set. Hypotheses still live after `max_decode_len` tokens
    are finished as they are, with their penalised score. The search stops early
    once no live beam can beat the worst of `num_beams` finished ones, or once no
    live beam has a raw log-prob above `min_log_prob`.

    Args:
      tokens_to_logits: `(token_ids [N, 1], cache, index) -> (logits [N, V], cache)`.
      cache: decoding cache built for `batch_size` rows; expanded here to
        `N = batch_size * num_beams` and reordered along axis 0 as beams move.
      batch_size: B, number of examples.
      max_decode_len: L, number of tokens to generate at most.
      eos_id: end-of-sequence id.
      num_beams: K, beam width and number of returned hypotheses; needs V >= 2.
      alpha: length-penalty exponent (>= 0 for the early-stopping bound to hold).
      min_log_prob: hypotheses with raw log-prob at or below this are dead: never
        finished, and the search stops when all live beams are dead.
      decoder_start_id: token fed at step 0.

    Returns:
      tokens: `[B, K, L]` int32, sorted by ascending score so the best is
        `[:, -1]`; EOS kept, 0 after it. Slots for which fewer than K valid
        hypotheses exist hold zeros with score `NEG_INF`.
      scores: `[B, K]` float32 length-penalised log-probabilities, ascending.
    """
    bsz, k, length = batch_size, num_beams, max_decode_len
    batch_offsets = (jnp.arange(bsz, dtype=jnp.int32) * k)[:, None]  # [B, 1]
    # Beams are dead only where the *raw* log-prob is tiny; this upper-bounds the
    # score of any continuation since log-probs only decrease and, for alpha >= 0,
    # dividing a negative number by the largest penalty (at length L) maximises it.
    max_penalty = brevity_penalty(alpha, length)

    def cond_fn(state):
        i, _, live_lp, _, fin_scores, fin_flags, _ = state
        best_live = jnp.max(live_lp, axis=1)  # [B]
        worst_fin = jnp.where(jnp.all(fin_flags, axis=1), jnp.min(fin_scores, axis=1), NEG_INF)
        done = (worst_fin > best_live / max_penalty) | (best_live <= min_log_prob)
        return (i < length) & ~jnp.all(done)

    def body_fn(state):
        i, live_seqs, live_lp, fin_seqs, fin_scores, fin_flags, cache = state
        prev = jnp.where(i == 0, decoder_start_id, live_seqs[:, :, jnp.maximum(i - 1, 0)])
        logits, new_cache = tokens_to_logits(prev.reshape(bsz * k, 1), cache, i)
        vocab = logits.shape[-1]
        cand_lp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(bsz, k, vocab)
        cand_lp = (cand_lp + live_lp[:, :, None]).reshape(bsz, k * vocab)

        # Top 2K extensions over all (beam, token) pairs: [B, 2K].
        top_lp, top_idx = lax.top_k(cand_lp, 2 * k)
        top_beam = top_idx // vocab
        top_tok = (top_idx % vocab).astype(jnp.int32)
        top_seqs = jnp.take_along_axis(live_seqs, top_beam[:, :, None], axis=1)
        top_seqs = top_seqs.at[:, :, i].set(top_tok)  # [B, 2K, L]
        ends_eos = top_tok == eos_id
        # At the last position every surviving hypothesis is finished as is.
        finishing = ends_eos | (i == length - 1)
        valid = top_lp > min_log_prob

        # New live set: best K extensions that did not end in EOS.
        live_cand = jnp.where(ends_eos, -jnp.inf, top_lp)
        new_live_lp, sel = lax.top_k(live_cand, k)  # [B, K]
        new_live_seqs = jnp.take_along_axis(top_seqs, sel[:, :, None], axis=1)
        src_beam = jnp.take_along_axis(top_beam, sel, axis=1)  # parent beam per new beam
        new_cache = _gather_rows(new_cache, (batch_offsets + src_beam).reshape(-1))

        # New finished set: best K among the old finished and newly finishing ones.
        # Invalid / unfinished candidates get -inf so they lose even to empty slots.
        new_scores = jnp.where(finishing & valid, top_lp / brevity_penalty(alpha, i + 1), -jnp.inf)
        all_scores = jnp.concatenate([fin_scores, new_scores], axis=1)  # [B, 3K]
        all_seqs = jnp.concatenate([fin_seqs, top_seqs], axis=1)
        all_flags = jnp.concatenate([fin_flags, finishing & valid], axis=1)
        fin_scores, keep = lax.top_k(all_scores, k)
        fin_seqs = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)
        fin_flags = jnp.take_along_axis(all_flags, keep, axis=1)
        return i + 1, new_live_seqs, new_live_lp, fin_seqs, fin_scores, fin_flags, new_cache

    # Only beam 0 starts alive so the first step does not yield K copies of the
    # same hypothesis.
    live_lp0 = jnp.full((bsz, k), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
    init = (
        jnp.array(0, jnp.int32),
        jnp.zeros((bsz, k, length), jnp.int32),
        live_lp0,
        jnp.zeros((bsz, k, length), jnp.int32),
        jnp.full((bsz, k), NEG_INF, jnp.float32),
        jnp.zeros((bsz, k), jnp.bool_),
        expand_batch(cache, k),
    )
    _, _, _, fin_seqs, fin_scores, _, _ = lax.while_loop(cond_fn, body_fn, init)
    # top_k sorted descending; T5X returns ascending so the best is last.
    return fin_seqs[:, ::-1], fin_scores[:, ::-1]
