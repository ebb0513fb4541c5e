"""Pure step functions; the trainer jits them with explicit shardings.

`train_step` differentiates only the trainable params: frozen ones enter as constants, so no
gradient buffers exist for them and XLA prunes the backward pass that only they would need.
"""

import jax
import jax.numpy as jnp
import optax

from spot_jax.models.prompted import PromptedT5
from spot_jax.train import state as state_lib


def train_step(
    model: PromptedT5,
    optimizer: optax.GradientTransformation,
    state: state_lib.TrainState,
    frozen: state_lib.Params,
    batch,
    dropout_rng: jax.Array,
):
    """One update. Returns (new state, metric sums).

    A non-finite loss, gradient or updated param leaves the state unchanged and sets
    `metrics['nonfinite']`, so the trainer can stop with the last good state intact.
    """
    rng = jax.random.fold_in(dropout_rng, state.step)

    def loss_fn(trainable):
        params = state_lib.merge_params(trainable, frozen)
        return model.loss(params, batch, dropout_rng=rng)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    # The new params too: finite gradients can still give a non-finite update (e.g. an inf
    # learning rate), which must not reach the state, and from there a checkpoint.
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((grads, trainable))])
    )
    new_state = state_lib.TrainState(state.step + 1, trainable, opt_state)
    # Keep the old values on a bad step (select, not branch: both sides are already computed).
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = dict(metrics, nonfinite=jnp.logical_not(finite).astype(jnp.int32))
    metrics["grad_norm"] = optax.global_norm(grads)
    # The trained params' RMS after the step: a prompt's scale against the embeddings' (~1
    # for T5) is what decides how well it transfers as an init (README, RESCALE_PROMPT_RMS).
    leaves = jax.tree.leaves(new_state.trainable)
    squares = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
    metrics["param_rms"] = jnp.sqrt(squares / sum(x.size for x in leaves))
    return new_state, metrics


def eval_step(model: PromptedT5, trainable, frozen, batch):
    """Teacher-forced metric sums on a batch (no dropout)."""
    _, metrics = model.loss(state_lib.merge_params(trainable, frozen), batch)
    return metrics


def eval_predict_step(
    model: PromptedT5, trainable, frozen, batch, rng, max_decode_length: int, candidates=None
):
    """`eval_step`, `predict_step` and (with `candidates`) `candidate_score_step` on one batch,
    sharing one encoder pass. Returns (metric sums, tokens [B, D, L], scores [B, D],
    candidate log-likelihoods [B, C] or None)."""
    params = state_lib.merge_params(trainable, frozen)
    encoded = model.encode(params, batch["encoder_input_tokens"])
    _, metrics = model.loss(params, batch, encoded=encoded)
    tokens, scores = model.predict(
        params, batch, max_decode_length=max_decode_length, rng=rng, encoded=encoded
    )
    ranked = None
    if candidates is not None:
        ranked = model.score_candidates(
            params, batch["encoder_input_tokens"], candidates, encoded=encoded
        )
    return metrics, tokens, scores, ranked


def score_step(model: PromptedT5, trainable, frozen, batch):
    """Per-sequence log-likelihood [B]."""
    return model.score(state_lib.merge_params(trainable, frozen), batch)


def candidate_score_step(model: PromptedT5, trainable, frozen, batch, candidates):
    """Log-likelihood [b, C] of each of the `[C, L]` candidate targets for each example."""
    params = state_lib.merge_params(trainable, frozen)
    return model.score_candidates(params, batch["encoder_input_tokens"], candidates)


def predict_step(model: PromptedT5, trainable, frozen, batch, rng, max_decode_length: int):
    """Decoded tokens [B, D, L] and scores [B, D], best last."""
    params = state_lib.merge_params(trainable, frozen)
    return model.predict(params, batch, max_decode_length=max_decode_length, rng=rng)
