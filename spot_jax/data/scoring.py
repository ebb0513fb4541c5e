"""A task's own metrics on decoded predictions: detokenize, postprocess, compute (TF inside).

The training core decodes the eval split with the model and hands the predicted token ids,
in eval-iterator order, to a `TaskScorer` built through the data seam
(`spot_jax.data.make_task_scorer`). The scorer pairs them with the split's examples, read
once in the same (unshuffled) order with the same preprocessing, and runs the task as SeqIO
defines it:

    ids -> vocabulary.decode -> postprocess_fn(text, example, is_target=False)   predictions
    targets_pretokenized -> postprocess_fn(text, example, is_target=True)         targets
    metric_fns(targets, predictions) -> {'eval/accuracy': ..., 'eval/f1': ...}

so `spot-jax eval` on `spot_glue_cola_v200` reports Matthews correlation, on
`spot_squad_v11_v300` EM and F1, just as T5X's SeqIO evaluator would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import seqio

from spot_jax.data import pipeline
from spot_jax.data.config import DatasetConfig

log = logging.getLogger(__name__)

METRIC_PREFIX = "eval/"
# Features the scorer does not keep: the inputs (ids and text) are the bulk of an example
# (a whole article for summarization), and no postprocessor of ours reads them.
_DROPPED_FEATURES = ("inputs", "inputs_pretokenized")


class TaskScorer:
    """Computes one task's SeqIO metrics from predicted token ids.

    Attributes:
        task: the SeqIO task scored.
    """

    def __init__(self, task: seqio.Task, cfg: DatasetConfig):
        self.task = task
        self._cfg = cfg
        self._examples: list[dict] = []
        self._reader = None

    def _example(self, index: int) -> dict:
        """The split's index-th example (read lazily, kept for later evals)."""
        if self._reader is None and len(self._examples) <= index:
            lengths = {k: int(v) for k, v in self._cfg.task_feature_lengths.items()}
            ds = self.task.get_dataset(
                lengths,
                split=self._cfg.split,
                use_cached=self._cfg.use_cached,
                shuffle=False,
                seed=self._cfg.seed,
                num_epochs=1,
            )
            self._reader = ds.as_numpy_iterator()
        while len(self._examples) <= index:
            try:
                x = next(self._reader)
            except StopIteration:
                raise ValueError(
                    f"Got more predictions than the {len(self._examples)} examples of "
                    f"{self.task.name}:{self._cfg.split}; decode the eval split only once."
                ) from None
            self._examples.append({k: v for k, v in x.items() if k not in _DROPPED_FEATURES})
        return self._examples[index]

    def _postprocess(self, text: str, example: dict, is_target: bool):
        # seqio's Task.postprocess_fn returns the text unchanged when the task has none.
        return self.task.postprocess_fn(text, example=example, is_target=is_target)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The task's class labels (rank classification's candidates), or None."""
        return _label_names(self.task.name)

    def candidate_ids(self, targets_length: int):
        """`[C, L]` int32 ids of the labels, EOS-terminated and 0-padded to L; None if none.

        Raises:
            ValueError: when a label does not fit in `targets_length` tokens with its EOS.
        """
        if not self.labels:
            return None
        feature = self.task.output_features["targets"]
        out = np.zeros((len(self.labels), targets_length), np.int32)
        for row, label in enumerate(self.labels):
            ids = list(feature.vocabulary.encode(label)) + [feature.vocabulary.eos_id]
            if len(ids) > targets_length:
                raise ValueError(
                    f"Label {label!r} of {self.task.name} needs {len(ids)} target tokens; "
                    f"raise TASK_FEATURE_LENGTHS['targets'] to {len(ids)} for rank classification."
                )
            out[row, : len(ids)] = ids
        return out

    def rank_metrics(self, choices: Sequence[int]) -> dict[str, float]:
        """The task's metrics when example i answers `labels[choices[i]]`.

        Returns:
            `{'eval/rank_<metric>': value}`.
        """
        labels = self.labels
        targets, predictions = [], []
        for i, choice in enumerate(choices):
            example = self._example(i)
            targets.append(self._postprocess(_text(example["targets_pretokenized"]), example, True))
            predictions.append(self._postprocess(labels[int(choice)], example, False))
        return self._metrics(targets, predictions, METRIC_PREFIX + "rank_")

    def _metrics(self, targets: list, predictions: list, prefix: str) -> dict[str, float]:
        out = {}
        for metric_fn in self.task.predict_metric_fns:
            for key, value in metric_fn(targets, predictions).items():
                out[prefix + key] = float(getattr(value, "value", value))
        return out

    def __call__(self, predicted_ids: Sequence[Sequence[int]]) -> dict[str, float]:
        """The task's metrics over the first len(predicted_ids) examples of the split.

        Args:
            predicted_ids: `[N]` decoded token ids (EOS and padding may follow), in the eval
                iterator's order of real examples.

        Returns:
            `{'eval/<metric>': value}` from every metric fn of the task.
        """
        if not predicted_ids:
            return {}
        vocabulary = self.task.output_features["targets"].vocabulary
        targets, predictions = [], []
        for i, ids in enumerate(predicted_ids):
            example = self._example(i)
            if "targets_pretokenized" in example:
                target_text = _text(example["targets_pretokenized"])
            else:  # tasks whose sources are already token ids
                target_text = vocabulary.decode(_until_eos(example["targets"], vocabulary.eos_id))
            targets.append(self._postprocess(target_text, example, True))
            text = vocabulary.decode(_until_eos(ids, vocabulary.eos_id))
            predictions.append(self._postprocess(text, example, False))
        return self._metrics(targets, predictions, METRIC_PREFIX)


def _label_names(task_name: str) -> tuple[str, ...] | None:
    """Class labels of a catalog task, its taskless twin, a few-shot subset or a task-index
    variant of it."""
    from spot_jax.data.tasks import base, few_shot, task_index

    name = task_index.source_task(task_name)
    name = few_shot.source_task(name).removesuffix(base.TASKLESS_SUFFIX)
    spec = base.SPECS.get(name)
    return tuple(spec.label_names) if spec and spec.label_names else None


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _until_eos(ids: Sequence[int], eos_id: int) -> list[int]:
    ids = [int(t) for t in np.asarray(ids).reshape(-1)]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def make_task_scorer(cfg: DatasetConfig) -> TaskScorer | None:
    """The scorer of `cfg`'s task, or None when it has no metric fns or names a mixture.

    Mixtures are scored by evaluating each of their tasks (one eval config each), as T5X
    reports per-task metrics too.
    """
    provider = pipeline.get_provider(cfg)
    if not isinstance(provider, seqio.Task):
        log.info("%s is a mixture: eval reports loss and accuracy only.", provider.name)
        return None
    if not provider.predict_metric_fns:
        return None
    return TaskScorer(provider, cfg)


def make_detokenizer(cfg: DatasetConfig):
    """`ids -> text` with the vocabulary of `cfg`'s task or mixture (stops at EOS)."""
    vocabulary = pipeline.get_provider(cfg).output_features["targets"].vocabulary

    def detokenize(ids: Sequence[int]) -> str:
        return vocabulary.decode(_until_eos(ids, vocabulary.eos_id))

    return detokenize
