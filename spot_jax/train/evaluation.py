"""Evaluation of a prompt: loss, accuracies and the task's own metrics; mixtures task by task.

An `Evaluator` is built once per eval config and called at every eval. It jits its steps
once: a fresh `jax.jit(functools.partial(step, model))` per call is a new function to JAX,
traced and compiled again every time, and the greedy decoder's compile can cost more than a
small eval itself (the zero-shot matrix calls one evaluator per source prompt).

On a mixture it evaluates each of its tasks that has the split (`data.eval_task_names`), as
T5X does, each with its own metric fns: `eval/<task>/<metric>` per task, beside the pooled
`eval/loss`, `eval/token_accuracy` and `eval/sequence_accuracy` over all of the tasks'
examples (token- and sequence-weighted, as if they were one split).

`max_batches` (EVAL_STEPS) bounds the teacher-forced pass (loss, token accuracy), as it bounds
T5X's `train_eval`; a task with metric fns is still decoded and scored on every example of the
split, as T5X's `infer_eval` is (`EVALUATOR_NUM_EXAMPLES = None`): a best checkpoint chosen by
a task metric is chosen on the whole validation set.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np

from spot_jax import data
from spot_jax.data.config import DatasetConfig
from spot_jax.models import multi_task_prompt
from spot_jax.train import sharding, steps

PREFIX = "eval/"


@dataclasses.dataclass
class _Counts:
    """Sums over one pass; pooled across a mixture's tasks."""

    loss: float = 0.0
    correct_tokens: float = 0.0
    weight_sum: float = 0.0
    exact: int = 0
    sequences: int = 0

    def add_sums(self, sums) -> None:
        """Adds one batch's metric sums (`PromptedT5.loss`)."""
        self.loss += float(sums["loss"])
        self.correct_tokens += float(sums["correct_tokens"])
        self.weight_sum += float(sums["weight_sum"])

    def add(self, other: _Counts) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def metrics(self, predict: bool) -> dict[str, float]:
        weights = max(self.weight_sum, 1.0)
        out = {
            PREFIX + "loss": self.loss / weights,
            PREFIX + "token_accuracy": self.correct_tokens / weights,
        }
        if predict and self.sequences:
            out[PREFIX + "sequence_accuracy"] = self.exact / self.sequences
        return out


@dataclasses.dataclass
class _Part:
    """One task's eval: the task itself, or one task of a mixture (then `name` is set)."""

    name: str | None
    data: DatasetConfig
    scorer: object | None  # data.scoring.TaskScorer
    step: object  # jitted `steps.eval_predict_step` (with this task's labels when ranking)
    ranks: bool  # whether `step` scores the task's labels (rank classification)


class Evaluator:
    """Validation loss and token accuracy; with `predict`, greedy-decoded exact match.

    With `task_metrics`, also each task's own metrics on the decoded predictions (e.g.
    'eval/accuracy', 'eval/f1'; `data.make_task_scorer`); with `rank_classification`, on a
    classification task, the same metrics when each example answers its likeliest label
    ('eval/rank_accuracy', ...; `PromptedT5.score_candidates`). Decoding, task and rank metrics
    come with `predict` (the default); one encoder pass per batch serves all of them.
    """

    def __init__(
        self,
        model,
        eval_data: DatasetConfig,
        mesh,
        rules,
        *,
        max_batches: int | None = None,
        task_metrics: bool = True,
        rank_classification: bool = False,
        progress: bool = False,
    ):
        """Builds the jitted steps and, per task, its scorer (examples are read on first use).

        Args:
          model: the PromptedT5 evaluated.
          eval_data: the split of a task or a mixture.
          mesh, rules: where the batches and params live.
          max_batches: max teacher-forced batches per task (tasks with metric fns are decoded
            to the end of the split); None = the whole split.
          task_metrics: compute the tasks' own metric fns on the decoded predictions.
          rank_classification: also score every label of classification tasks.
          progress: a progress bar per task's pass (on a terminal, process 0 only).
        """
        self.mesh, self.rules, self.max_batches = mesh, rules, max_batches
        self.multi_task = model.multi_task
        self.progress = progress and jax.process_index() == 0
        configs = data.eval_task_configs(eval_data)
        self.is_mixture = None not in configs
        target_len = eval_data.task_feature_lengths["targets"]
        # Loss, greedy decode and label scores share one encoder pass per batch
        # (`steps.eval_predict_step`); without decoding, the loss step alone.
        self._eval_fn = jax.jit(functools.partial(steps.eval_step, model))
        step = functools.partial(steps.eval_predict_step, model, max_decode_length=target_len)
        self._eval_predict_fn = jax.jit(step)
        self._parts = []
        for name, cfg in configs.items():
            scorer = data.make_task_scorer(cfg) if task_metrics else None
            candidates = (
                scorer.candidate_ids(target_len) if scorer and rank_classification else None
            )
            if candidates is None:
                self._parts.append(_Part(name, cfg, scorer, self._eval_predict_fn, False))
            else:
                # The candidates are a constant of the program (every host holds the same labels).
                ranked = jax.jit(functools.partial(step, candidates=candidates))
                self._parts.append(_Part(name, cfg, scorer, ranked, True))

    def __call__(self, trainable, frozen, predict: bool = True) -> dict[str, float]:
        """The metrics of `trainable` (the prompt) with `frozen` weights on the eval split(s)."""
        if not self.is_mixture:
            return self._evaluate(self._parts[0], trainable, frozen, predict)[0]
        pooled, per_task = _Counts(), {}
        for part in self._parts:
            metrics, counts = self._evaluate(part, trainable, frozen, predict)
            pooled.add(counts)
            per_task.update(
                {f"{PREFIX}{part.name}/{k.removeprefix(PREFIX)}": v for k, v in metrics.items()}
            )
        return {**pooled.metrics(predict), **per_task}

    def _evaluate(self, part: _Part, trainable, frozen, predict: bool):
        shard_index, num_shards = sharding.data_shard_info(self.mesh)
        counts = _Counts()
        predicted: list[np.ndarray] = []
        chosen: list[int] = []
        with self.mesh, nn.logical_axis_rules(list(self.rules)):
            it = data.make_eval_iterator(part.data, shard_index=shard_index, num_shards=num_shards)
            scored = predict and part.scorer is not None
            try:
                for i, local in enumerate(self._bar(it, part, scored)):
                    teacher_forced = self.max_batches is None or i < self.max_batches
                    if not (teacher_forced or scored):
                        break
                    multi_task_prompt.check_task_tokens(
                        local["encoder_input_tokens"], self.multi_task
                    )
                    batch = sharding.global_batch(local, self.mesh)
                    if not predict:
                        counts.add_sums(jax.device_get(self._eval_fn(trainable, frozen, batch)))
                        continue
                    sums, tokens, _, ranked = part.step(
                        trainable, frozen, batch, jax.random.PRNGKey(0)
                    )
                    if teacher_forced:
                        counts.add_sums(jax.device_get(sums))
                    target = sharding.to_host(batch["decoder_target_tokens"], self.mesh)
                    real = target[:, 0] != 0
                    pred = sharding.to_host(tokens, self.mesh)[:, -1]
                    counts.exact += int(np.sum(np.all(pred == target, axis=-1) & real))
                    counts.sequences += int(np.sum(real))
                    if part.scorer is not None:
                        predicted.extend(pred[real])
                    if part.ranks:
                        scores = sharding.to_host(ranked, self.mesh)
                        chosen.extend(np.argmax(scores, axis=-1)[real])
            finally:
                del it  # not by the GC: see trainer.train's loop
        out = counts.metrics(predict)
        if predicted:
            out.update(part.scorer(predicted))
        if chosen:
            out.update(part.scorer.rank_metrics(chosen))
        return out, counts

    def _bar(self, batches, part: _Part, whole_split: bool):
        if not self.progress:
            return batches
        from tqdm import tqdm

        name = part.name or part.data.mixture_or_task_name
        # disable=None: only on a terminal, so logs and CI output stay clean.
        return tqdm(
            batches,
            desc=f"eval {name}",
            unit="batch",
            total=None if whole_split else self.max_batches,
            leave=False,
            disable=None,
        )
