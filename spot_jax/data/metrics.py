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
