"""Cross-entropy with z-loss, summed over tokens as T5X does.

T5X returns the SUM over batch and tokens, not the mean ("optimizers we use are pretty much
scale invariant"); Adafactor's update clipping makes the scale irrelevant, and matching it
keeps prompts comparable with prompt-tuning's.
"""

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def cross_entropy_with_logits(logits: Array, targets: Array, z_loss: float) -> tuple[Array, Array]:
    """Per-token softmax cross-entropy plus `z_loss * logsumexp^2`.

    Args:
      logits: [B, L, V] float32.
      targets: [B, L, V] (one-hot or soft) targets.
      z_loss: coefficient of the log-partition penalty that keeps logits from drifting.

    Returns:
      (loss [B, L], z_loss term [B, L]).
    """
    lse = jax.nn.logsumexp(logits, axis=-1)
    log_softmax = logits - lse[..., None]
    loss = -jnp.sum(targets * log_softmax, axis=-1)
    z = z_loss * jnp.square(lse)
    return loss + z, z


def _xent_fwd(logits, targets, z_loss):
    max_logit = jnp.max(logits, axis=-1, keepdims=True)
    shifted = logits - jax.lax.stop_gradient(max_logit)
    sum_exp = jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True)
    lse = jnp.log(sum_exp) + max_logit
    log_softmax = logits - lse
    loss = -jnp.sum(targets * log_softmax, axis=-1)
    z = z_loss * jnp.square(lse[..., 0])
    softmax = jnp.exp(log_softmax)
    return (loss + z, z), (softmax, lse, targets)


def _xent_bwd(z_loss, res, g):
    # Only the total loss carries gradient; the z-loss output is for logging.
    softmax, lse, targets = res
    g_loss = g[0][..., None]
    dlogits = g_loss * ((1.0 + 2.0 * z_loss * lse) * softmax - targets)
    return dlogits, -g_loss * jnp.log(jnp.maximum(softmax, 1e-30))


cross_entropy_with_logits.defvjp(_xent_fwd, _xent_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def token_cross_entropy(logits: Array, targets: Array, z_loss: float) -> tuple[Array, Array]:
    """`cross_entropy_with_logits` for integer targets [B, L], without a one-hot.

    The same loss, z-loss and gradient, but the backward pass keeps only the logits (alive
    anyway), the logsumexp and the ids: no [B, L, V] one-hot or softmax is stored between the
    passes (each is B*L*V floats: 2 GB at batch 32, 512 targets and T5's 32k vocabulary), and
    the one-hot of the gradient is a compare XLA fuses into it.
    """
    loss, z, _ = _token_xent_parts(logits, targets, z_loss)
    return loss, z


def _token_xent_parts(logits, targets, z_loss):
    """(loss with z-loss [B, L], z-loss [B, L], logsumexp [B, L])."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    z = z_loss * jnp.square(lse)
    return lse - target_logit + z, z, lse


def _token_xent_fwd(logits, targets, z_loss):
    loss, z, lse = _token_xent_parts(logits, targets, z_loss)
    return (loss, z), (logits, lse, targets)


def _token_xent_bwd(z_loss, res, g):
    logits, lse, targets = res
    g_loss = g[0][..., None]
    softmax = jnp.exp(logits - lse[..., None])
    onehot = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)
    dlogits = g_loss * ((1.0 + 2.0 * z_loss * lse[..., None]) * softmax - onehot)
    return dlogits.astype(logits.dtype), None


token_cross_entropy.defvjp(_token_xent_fwd, _token_xent_bwd)


def weighted_cross_entropy(
    logits: Array, targets: Array, weights: Array, z_loss: float = 0.0
) -> tuple[Array, Array, Array]:
    """Summed token cross-entropy.

    Args:
      logits: [B, L, V] float32.
      targets: [B, L] int token ids.
      weights: [B, L] loss weights (decoder_loss_weights).
      z_loss: z-loss coefficient (1e-4 in T5X).

    Returns:
      (total loss, total z-loss, weight sum), each a scalar.
    """
    loss, z = token_cross_entropy(logits, targets.astype(jnp.int32), z_loss)
    weights = weights.astype(loss.dtype)
    return jnp.sum(loss * weights), jnp.sum(z * weights), jnp.sum(weights)


def chunked_token_losses(
    hidden: Array, kernel: Array, targets: Array, z_loss: float, chunk: int
) -> tuple[Array, Array, Array]:
    """`token_cross_entropy` of `hidden @ kernel`, `chunk` target positions at a time.

    The [B, L, V] logits never exist: a scan projects `chunk` positions [B, c, H] to float32
    logits [B, c, V], takes their loss, z-loss and argmax and drops them, and the backward
    pass recomputes each chunk's logits (`jax.checkpoint`) instead of keeping them. Peak
    logits memory falls from B*L*V to B*c*V floats (with T5's 32k vocabulary, 2 GB at batch
    32 and 512 targets, and as much again for their gradient) at the cost of one more
    logits matmul per chunk in the backward pass.

    Args:
      hidden: [B, L, H] the decoder's final states (the logits projection's input).
      kernel: [H, V] the logits projection (T5 1.1's untied `logits_dense`).
      targets: [B, L] int target ids.
      z_loss: z-loss coefficient.
      chunk: target positions per chunk; L is zero-padded to a multiple of it.

    Returns:
      (loss with z-loss [B, L], z-loss [B, L], 1.0 where the argmax is the target [B, L]).
    """
    batch, length, width = hidden.shape
    num_chunks = -(-length // chunk)
    pad = num_chunks * chunk - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad)))
    # [n, B, c, ...]: the scan runs over chunks; the batch axis keeps its sharding.
    hidden = hidden.reshape(batch, num_chunks, chunk, width).swapaxes(0, 1)
    targets = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(h, t):
        # As the logits layer computes them: float32 activations and kernel.
        logits = jnp.dot(h.astype(jnp.float32), kernel.astype(jnp.float32))
        loss, z = token_cross_entropy(logits, t, z_loss)
        correct = jax.lax.stop_gradient((jnp.argmax(logits, axis=-1) == t).astype(jnp.float32))
        return loss, z, correct

    _, outs = jax.lax.scan(lambda carry, x: (carry, one_chunk(*x)), None, (hidden, targets))
    return tuple(o.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :length] for o in outs)


def token_log_likelihood(logits: Array, targets: Array, weights: Array) -> Array:
    """Weighted log-probability of each target token [B, L] (no z-loss)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return token * weights.astype(token.dtype)


def sequence_log_likelihood(logits: Array, targets: Array, weights: Array) -> Array:
    """Per-sequence log-likelihood [B] (no z-loss): T5X's `score_batch`, for rank classification."""
    return jnp.sum(token_log_likelihood(logits, targets, weights), axis=-1)


def segment_log_likelihood(
    logits: Array, targets: Array, weights: Array, segment_ids: Array, num_segments: int
) -> Array:
    """Per-example log-likelihood of packed rows [B, S]: column s sums segment s + 1's tokens.

    Padding (segment 0) and segments beyond `num_segments` count nowhere; a slot without a
    segment scores 0.
    """
    token = token_log_likelihood(logits, targets, weights)
    slots = jax.nn.one_hot(segment_ids - 1, num_segments, dtype=token.dtype)  # id 0 -> zeros
    return jnp.einsum("bl,bls->bs", token, slots)


def token_accuracy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """(number of correct weighted tokens, weight sum)."""
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    return jnp.sum(correct * weights), jnp.sum(weights)
