"""Many small tuning runs in one process: one compiled program per shape, runs side by side.

The demo makes well over a hundred prompt-tuning and model-tuning runs of a tiny model on two
CPU cores. Driving `spot_jax.train.steps.train_step` directly, a `Tuner` jits one chunk of
`lax.scan`ned steps, `vmap`ped over R runs (seeds, initialisations or tasks), and one
evaluation; every later run of the same shapes reuses both programs. The frozen weights are
shared by all R runs; each run has its own trainable params, optimizer state and batch stream.

Validation accuracy is exact match under teacher forcing: a target counts when the argmax at
every position (EOS included) is the gold token, which holds exactly when greedy decoding
would produce the target, so it is greedy-decoding accuracy without a decoding loop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
from spot_jax.train import state as state_lib
from spot_jax.train import steps

PAD, EOS = 0, 1


def encode(texts: Sequence[str], sp, length: int, prefix: Sequence[int] = ()) -> np.ndarray:
    """Token ids [N, length] (EOS appended, 0-padded) of `texts` under SentencePiece `sp`.

    Raises:
        ValueError: a text is longer than `length` (the demo never truncates silently).
    """
    out = np.zeros((len(texts), length), np.int32)
    for i, ids in enumerate(sp.encode(list(texts))):
        ids = [*prefix, *ids, EOS]
        if len(ids) > length:
            raise ValueError(f"{texts[i]!r} is {len(ids)} tokens, more than {length}")
        out[i, : len(ids)] = ids
    return out


def features(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """EncDecFeatureConverter's batch: [..., Li] inputs and [..., Lt] targets -> model features."""
    decoder_inputs = np.zeros_like(targets)
    decoder_inputs[..., 1:] = targets[..., :-1]  # shifted right; 0 starts decoding
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


@dataclasses.dataclass(frozen=True)
class TaskArrays:
    """A task's splits as token arrays: inputs [N, Li], targets [N, Lt]."""

    name: str
    train_inputs: np.ndarray
    train_targets: np.ndarray
    val_inputs: np.ndarray
    val_targets: np.ndarray

    def subset(self, n: int, seed: int) -> TaskArrays:
        """A seeded n-example subset of train (few-shot); validation unchanged."""
        idx = np.random.default_rng(seed).choice(len(self.train_inputs), n, replace=False)
        return dataclasses.replace(
            self, train_inputs=self.train_inputs[idx], train_targets=self.train_targets[idx]
        )

    def batches(self, num_steps: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
        """[S, B, L] features of `num_steps` batches, epochs reshuffled, seeded."""
        rng = np.random.default_rng(seed)
        n = len(self.train_inputs)
        order = np.concatenate(
            [rng.permutation(n) for _ in range(-(-num_steps * batch_size // n))]
        )[: num_steps * batch_size].reshape(num_steps, batch_size)
        return features(self.train_inputs[order], self.train_targets[order])

    def validation(self) -> dict[str, np.ndarray]:
        return features(self.val_inputs, self.val_targets)


def stack(trees: Sequence[dict]) -> dict:
    """R trees of equal shapes -> one tree with a leading run axis [R, ...]."""
    return jax.tree.map(lambda *x: np.stack(x), *trees)


@dataclasses.dataclass
class Curves:
    """What R runs produced.

    Attributes:
        steps: the evaluated steps [E] (0 = the initialisation).
        accuracy: validation exact match [R, E], in percent.
        loss: mean validation token loss [R, E].
        trainable: trainable params at each evaluated step, name -> [R, E, ...] (prompt runs;
            None for model tuning, which keeps only `final`).
        final: the last trainable params, name -> [R, ...].
    """

    steps: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray
    trainable: dict[str, np.ndarray] | None
    final: dict[str, np.ndarray]

    def best(self) -> np.ndarray:
        """Best validation accuracy of each run [R] (checkpoint selection on validation)."""
        return self.accuracy.max(axis=1)


class Tuner:
    """Trains the params matching a set of names, for R runs at once, reusing compiled steps.

    Args:
        model: the (prompted) T5.
        frozen: flat frozen params shared by every run.
        optimizer: applied to each run's trainable params.
        keep_history: keep the trainable params at every evaluation (prompts: yes; model
            tuning: no, it would be R copies of the model per evaluation).
    """

    def __init__(self, model: PromptedT5, frozen: dict, optimizer, keep_history: bool = True):
        self.model, self.frozen, self.optimizer = model, frozen, optimizer
        self.keep_history = keep_history
        self._chunk = jax.jit(self._chunk_fn, donate_argnums=(0,))
        self._eval = jax.jit(self._eval_fn)

    def _chunk_fn(self, state, batches):
        """S steps of R runs: state [R, ...], batches [R, S, B, L] -> (state, train loss [R, S])."""
        step = functools.partial(steps.train_step, self.model, self.optimizer)
        rng = jax.random.PRNGKey(0)  # the demo's models have no dropout

        def one_run(run_state, run_batches):
            def body(s, batch):
                s, m = step(s, self.frozen, batch, rng)
                return s, m["loss"] / jnp.maximum(m["weight_sum"], 1.0)

            return jax.lax.scan(body, run_state, run_batches)

        return jax.vmap(one_run)(state, batches)

    def _eval_fn(self, trainable, batch):
        """Exact match (%) and token loss of R runs on validation batches [R, N, L]."""

        def one_run(params, b):
            logits = self.model.logits(state_lib.merge_params(params, self.frozen), b)
            targets, weights = b["decoder_target_tokens"], b["decoder_loss_weights"]
            right = (jnp.argmax(logits, -1) == targets) | (weights == 0)
            logp = jax.nn.log_softmax(logits)
            nll = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
            loss = jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)
            return 100.0 * jnp.mean(jnp.all(right, axis=-1)), loss

        return jax.vmap(one_run)(trainable, batch)

    def evaluate(self, trainable: dict, batch: dict) -> tuple[np.ndarray, np.ndarray]:
        """Exact match (%) [R] and token loss [R] of R trainable sets on batches [R, N, L]."""
        acc, loss = self._eval(jax.tree.map(jnp.asarray, trainable), batch)
        return np.asarray(acc), np.asarray(loss)

    def run(
        self,
        init: dict[str, np.ndarray],
        batches: dict[str, np.ndarray],
        validation: dict[str, np.ndarray],
        eval_every: int,
        progress=None,
    ) -> Curves:
        """Trains R runs and evaluates them at step 0 and every `eval_every` steps.

        Args:
            init: trainable params, name -> [R, ...].
            batches: features [R, S, B, L]; S must be a multiple of `eval_every`.
            validation: features [R, N, L] (or [N, L], shared by all runs).
            eval_every: steps per compiled chunk.
            progress: a tqdm bar advanced by R * eval_every per chunk, or None.
        """
        num_runs, num_steps = batches["decoder_target_tokens"].shape[:2]
        if num_steps % eval_every:
            raise ValueError(f"{num_steps} steps is not a multiple of eval_every {eval_every}")
        if validation["decoder_target_tokens"].ndim == 2:
            validation = jax.tree.map(
                lambda x: np.broadcast_to(x, (num_runs, *x.shape)), validation
            )
        state = jax.vmap(functools.partial(state_lib.create, optimizer=self.optimizer))(
            jax.tree.map(jnp.asarray, init)
        )
        accs, losses, history = [], [], []

        def evaluate():
            acc, loss = self._eval(state.trainable, validation)
            accs.append(np.asarray(acc))
            losses.append(np.asarray(loss))
            if self.keep_history:
                history.append(jax.tree.map(np.asarray, state.trainable))

        evaluate()
        for start in range(0, num_steps, eval_every):
            window = slice(start, start + eval_every)
            chunk = jax.tree.map(lambda x, w=window: x[:, w], batches)
            state, _ = self._chunk(state, chunk)
            evaluate()
            if progress is not None:
                progress.update(num_runs * eval_every)
        final = jax.tree.map(np.asarray, state.trainable)
        return Curves(
            steps=np.arange(0, num_steps + 1, eval_every),
            accuracy=np.stack(accs, 1),
            loss=np.stack(losses, 1),
            trainable={k: np.stack([h[k] for h in history], 1) for k in final}
            if self.keep_history
            else None,
            final=final,
        )


def prompt_tuner(model: PromptedT5, frozen: dict, learning_rate: float) -> Tuner:
    """Prompt tuning with prompt-tuning's Adafactor (constant rate, clipping, no decay)."""
    from spot_jax.train import optim

    frozen = {k: v for k, v in frozen.items() if k != PROMPT_PATH}
    return Tuner(model, frozen, optim.adafactor(learning_rate, weight_decay_rate=None))


def model_tuner(model: PromptedT5, learning_rate: float) -> Tuner:
    """Model tuning (every weight trained; SPoT's ModelTuning baseline) with Adam."""
    return Tuner(model, {}, optax.adam(learning_rate), keep_history=False)


def sampled_vocab_prompts(
    embeddings: np.ndarray, length: int, seeds: Sequence[int], population: int
) -> np.ndarray:
    """Prompts [R, P, H]: P rows of the embedding table, sampled per seed (SPoT's init)."""
    from spot_jax.models import prompts

    init = prompts.sampled_vocab(embeddings, population)
    shape = (length, embeddings.shape[1])
    return np.stack([np.asarray(init(jax.random.PRNGKey(s), shape)) for s in seeds])
