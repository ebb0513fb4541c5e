"""Metric functions with SeqIO's `(targets, predictions)` signature.

SeqIO routes a task's metric fn by its positional arguments: `(targets, predictions)` gets
decoded (and postprocessed) model outputs. Values are percentages, as in T5's papers and
SPoT's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
    if len(targets) != len(predictions):
        raise ValueError(
            f"Got {len(targets)} targets but {len(predictions)} predictions; "
            "each example needs exactly one prediction."
        )
    if not len(targets):
        raise ValueError("Cannot compute a metric over zero examples.")


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """Percentage of predictions equal to their target (labels, strings or numbers).

    Args:
        targets: `[N]` reference labels.
        predictions: `[N]` predicted labels.

    Returns:
        `{'accuracy': 100 * mean(target == prediction)}`.
    """
    _check_lengths(targets, predictions)
    hits = [t == p for t, p in zip(targets, predictions, strict=True)]
    return {"accuracy": 100.0 * float(np.mean(hits))}


def sequence_accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """Percentage of predicted sequences that match their target exactly, element by element.

    Unlike `accuracy`, items may be token arrays or lists: a sequence counts only if it has
    the target's length and every element agrees.

    Args:
        targets: `[N]` reference sequences (strings, lists or 1-D arrays).
        predictions: `[N]` predicted sequences.

    Returns:
        `{'sequence_accuracy': 100 * mean(exact match)}`.
    """
    _check_lengths(targets, predictions)
    hits = []
    for target, prediction in zip(targets, predictions, strict=True):
        if isinstance(target, str) or isinstance(prediction, str):
            hits.append(target == prediction)
        else:
            # Array `==` is elementwise, so compare shapes first and reduce with all().
            t, p = np.asarray(target), np.asarray(prediction)
            hits.append(t.shape == p.shape and bool(np.all(t == p)))
    return {"sequence_accuracy": 100.0 * float(np.mean(hits))}


def _binary_f1(targets: np.ndarray, predictions: np.ndarray, positive: Any = 1) -> float:
    tp = float(np.sum((predictions == positive) & (targets == positive)))
    fp = float(np.sum((predictions == positive) & (targets != positive)))
    fn = float(np.sum((predictions != positive) & (targets == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Binary F1 of class 1 (MRPC, QQP); a prediction other than 0/1 counts as wrong.

    Args:
        targets: `[N]` labels in {0, 1}.
        predictions: `[N]` predicted class ids; invalid ones (e.g. -1) become the wrong class.

    Returns:
        `{'f1': 100 * F1}`.
    """
    _check_lengths(targets, predictions)
    t = np.asarray(targets, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64).copy()
    invalid = (p != 0) & (p != 1)
    p[invalid] = 1 - t[invalid]
    return {"f1": 100.0 * _binary_f1(t, p)}


def mean_multiclass_f1(num_classes: int):
    """CB's metric: F1 of each class (one vs rest), averaged over `num_classes` classes."""

    def fn(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
        _check_lengths(targets, predictions)
        t, p = np.asarray(targets), np.asarray(predictions)
        scores = [_binary_f1(t, p, positive=c) for c in range(num_classes)]
        return {f"mean_{num_classes}class_f1": 100.0 * float(np.mean(scores))}

    return fn


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """CoLA's metric x100: multiclass Matthews correlation (Gorodkin 2004), 0 if undefined.

    T5 calls sklearn's `matthews_corrcoef` on raw class ids, so an invalid prediction (-1) is
    a class of its own that no target has: always wrong, and it also lowers the prediction
    marginals. With C the confusion matrix over the union of target and predicted labels,
    t_k / p_k its row / column sums, c its trace and s its total:

        MCC = (c*s - sum_k t_k p_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    For two labels this is the binary (tp*tn - fp*fn) / sqrt(...) formula.
    """
    _check_lengths(targets, predictions)
    t, p = np.asarray(targets), np.asarray(predictions)
    labels, index = np.unique(np.concatenate([t, p]), return_inverse=True)
    confusion = np.zeros((len(labels), len(labels)))
    np.add.at(confusion, (index[: len(t)], index[len(t) :]), 1.0)
    true_sums, predicted_sums = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - true_sums @ predicted_sums
    denominator = np.sqrt(
        (total**2 - predicted_sums @ predicted_sums) * (total**2 - true_sums @ true_sums)
    )
    value = 0.0 if denominator == 0 else covariance / denominator
    return {"matthews_corrcoef": 100.0 * float(value)}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return 0.0 if denominator == 0 else float(np.sum(x * y) / denominator)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (as Spearman needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """STS-B: Pearson correlation x100."""
    _check_lengths(targets, predictions)
    t, p = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    return {"pearson_corrcoef": 100.0 * _pearson(t, p)}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """STS-B: Spearman rank correlation x100 (Pearson of tie-averaged ranks)."""
    _check_lengths(targets, predictions)
    t, p = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    return {"spearman_corrcoef": 100.0 * _pearson(_average_ranks(t), _average_ranks(p))}


def normalize_squad(answer: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, one space."""
    import re
    import string

    text = "".join(ch for ch in answer.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    from collections import Counter

    t, p = target.split(), prediction.split()
    common = sum((Counter(t) & Counter(p)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD exact match and token F1 (x100), each the max over an example's answers.

    Args:
        targets: `[N]` lists of reference answers.
        predictions: `[N]` predicted answers.

    Returns:
        `{'em': ..., 'f1': ...}` over normalised answers.
    """
    _check_lengths(targets, predictions)
    em, f1 = [], []
    for answers, prediction in zip(targets, predictions, strict=True):
        answers = [answers] if isinstance(answers, str) else list(answers)
        p = normalize_squad(prediction)
        normed = [normalize_squad(a) for a in answers]
        em.append(max(float(a == p) for a in normed))
        f1.append(max(_token_f1(a, p) for a in normed))
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


def record(targets: Sequence[dict], predictions: Sequence[dict]) -> dict[str, float]:
    """ReCoRD: SQuAD EM/F1 over one copy per (passage, query) group, max over its answers.

    Args:
        targets: `[N]` `{'value': [answers], 'group': key}` (postprocessors.record).
        predictions: `[N]` `{'value': answer}`.
    """
    _check_lengths(targets, predictions)
    seen, kept_t, kept_p = set(), [], []
    for target, prediction in zip(targets, predictions, strict=True):
        if target["group"] in seen:
            continue
        seen.add(target["group"])
        kept_t.append(target["value"])
        kept_p.append(prediction["value"])
    return squad(kept_t, kept_p)


def multirc(targets: Sequence[dict], predictions: Sequence[dict]) -> dict[str, float]:
    """MultiRC: F1a (binary F1 over all answers) and EM (all answers of a question right).

    Args:
        targets: `[N]` `{'value': 0/1, 'group': question id}` (postprocessors.multirc).
        predictions: `[N]` `{'value': class id}`.

    Returns:
        `{'f1': ..., 'exact_match': ...}`, x100; EM is the mean over questions.
    """
    _check_lengths(targets, predictions)
    t = [x["value"] for x in targets]
    p = [x["value"] for x in predictions]
    groups: dict[Any, list[bool]] = {}
    for target, prediction in zip(targets, predictions, strict=True):
        groups.setdefault(target["group"], []).append(target["value"] == prediction["value"])
    exact = [all(hits) for hits in groups.values()]
    return {"f1": f1_with_invalid(t, p)["f1"], "exact_match": 100.0 * float(np.mean(exact))}


# Which metric keys make up each task's score (the papers' per-task average).
GLUE_SCORE_KEYS = {
    "cola": ("matthews_corrcoef",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson_corrcoef", "spearman_corrcoef"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
}
SUPER_GLUE_SCORE_KEYS = {
    "boolq": ("accuracy",),
    "cb": ("mean_3class_f1", "accuracy"),
    "copa": ("accuracy",),
    "multirc": ("f1", "exact_match"),
    "record": ("f1", "em"),
    "rte": ("accuracy",),
    "wic": ("accuracy",),
    "wsc": ("accuracy",),
}


def task_score(results: dict[str, float], keys: Sequence[str]) -> float:
    """A task's one number: the mean of its metrics (papers average e.g. F1 and accuracy)."""
    return float(np.mean([results[k] for k in keys]))


def benchmark_average(
    results: dict[str, dict[str, float]], score_keys: dict[str, Sequence[str]]
) -> float:
    """Mean over tasks of per-task scores (two-metric tasks averaged first).

    Args:
        results: task -> its metric dict; for MNLI give the mean of matched and mismatched
            accuracy as 'accuracy' if both were evaluated.
        score_keys: `GLUE_SCORE_KEYS` or `SUPER_GLUE_SCORE_KEYS`.

    Raises:
        ValueError: naming the tasks missing from `results`.
    """
    missing = sorted(set(score_keys) - set(results))
    if missing:
        raise ValueError(f"Benchmark average needs results for {missing}.")
    return float(np.mean([task_score(results[t], keys) for t, keys in score_keys.items()]))


def glue_average(results: dict[str, dict[str, float]]) -> float:
    """GLUE score over the 8 tasks SPoT reports (WNLI excluded)."""
    return benchmark_average(results, GLUE_SCORE_KEYS)


def super_glue_average(results: dict[str, dict[str, float]]) -> float:
    """SuperGLUE score over its 8 tasks."""
    return benchmark_average(results, SUPER_GLUE_SCORE_KEYS)


def mean_label_f1(label_names: Sequence[str]):
    """Multi-label (GoEmotions) macro F1: each label's F1 over the examples, averaged.

    Targets and predictions are label sets (`postprocessors.label_set`); a label absent from
    both targets and predictions everywhere scores 0, as sklearn's macro average does.
    """

    def fn(targets: Sequence[frozenset], predictions: Sequence[frozenset]) -> dict[str, float]:
        _check_lengths(targets, predictions)
        scores = [
            _binary_f1(
                np.array([name in t for t in targets]), np.array([name in p for p in predictions])
            )
            for name in label_names
        ]
        return {"mean_label_f1": 100.0 * float(np.mean(scores))}

    return fn


ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")


def prepare_summary_for_rouge(summary: str) -> str:
    """T5's `_prepare_summary_rouge`: ' . ' ends a line, so rougeLsum sees the sentences."""
    return summary.replace(" . ", " .\n")


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measure x100, with T5's settings (as SPoT reports).

    Like `t5.evaluation.metrics.rouge`: Google's `rouge-score` (the `data` extra), no
    stemmer, ' . ' turned into ' .\n' on both sides first (rougeLsum splits summaries into
    sentences at newlines). T5 reports the bootstrap aggregator's mid (median of 1,000
    resampled means), which is random; we report the plain mean over examples (T5's
    `rouge_mean`), which is deterministic and what the bootstrap median estimates: the two
    differ by resampling noise only (well under 0.1 point on a few hundred examples).
    """
    _check_lengths(targets, predictions)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for target, prediction in zip(targets, predictions, strict=True):
        scores = scorer.score(
            target=prepare_summary_for_rouge(target),
            prediction=prepare_summary_for_rouge(prediction),
        )
        for key, score in scores.items():
            totals[key] += score.fmeasure
    return {key: 100.0 * total / len(targets) for key, total in totals.items()}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU x100 as T5 scores WMT: sacreBLEU (the `data` extra) with its international
    tokenizer, exponential smoothing and no effective order, case-sensitive."""
    _check_lengths(targets, predictions)
    import sacrebleu

    score = sacrebleu.corpus_bleu(
        list(predictions),
        [list(targets)],
        smooth_method="exp",
        smooth_value=0.0,
        force=False,
        lowercase=False,
        tokenize="intl",
        use_effective_order=False,
    )
    return {"bleu": float(score.score)}
