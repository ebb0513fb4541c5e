"""Postprocessors: decoded strings back to the labels the metrics compare (no TF needed).

SeqIO calls `postprocess_fn(text, example=..., is_target=...)` on both the decoded prediction
and the target string; the example carries the ids and answer lists the grouped metrics use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def string_label_to_class_id(
    string_label: Any,
    example: Any = None,
    is_target: bool = False,
    *,
    label_classes: Sequence[str],
    default: int = -1,
) -> int:
    """The index of the label in `label_classes`; `default` (-1, counted wrong) otherwise."""
    del example, is_target
    label = _text(string_label).strip()
    return label_classes.index(label) if label in label_classes else default


def string_to_float(
    string: Any, example: Any = None, is_target: bool = False, *, default: float = -1.0
) -> float:
    """STS-B: the decoded score as a float; `default` when it does not parse."""
    del example, is_target
    try:
        return float(_text(string))
    except ValueError:
        return default


def _as_int(value: Any) -> int:
    return int(getattr(value, "item", lambda: value)())


def multirc(string_label: Any, example: Any = None, is_target: bool = False) -> dict:
    """MultiRC: `{'value': 0/1 (-1 invalid), 'group': question id}` (targets only group)."""
    out = {"value": string_label_to_class_id(string_label, label_classes=("False", "True"))}
    if is_target and example is not None:
        out["group"] = _as_int(example["idx/question"])
    return out


def record(answer: Any, example: Any = None, is_target: bool = False) -> dict:
    """ReCoRD: a prediction is `{'value': text}`; a target holds all answers and its group."""
    if is_target and example is not None:
        return {
            "value": [_text(a) for a in example["answers"]],
            "group": (_as_int(example["idx/passage"]), _as_int(example["idx/query"])),
        }
    return {"value": _text(answer)}


def qa(answer: Any, example: Any = None, is_target: bool = False) -> Any:
    """Extractive QA: a target becomes its list of answers, a prediction stays text."""
    if is_target and example is not None:
        return [_text(a) for a in example["answers"]]
    return _text(answer)


# SPoT's `preprocess_goemotions` joins the emotion names with ' \\n ' (a backslash and an
# 'n', not a newline), which T5's vocabulary can spell and decode back.
LABEL_SEPARATOR = " \\n "


def label_set(text: Any, example: Any = None, is_target: bool = False) -> frozenset[str]:
    """Multi-label targets ('joy \\n love') as a set of label names; '' is the empty set."""
    del example, is_target
    labels = {label.strip() for label in _text(text).split(LABEL_SEPARATOR.strip())}
    return frozenset(labels - {""})


def text(value: Any, example: Any = None, is_target: bool = False) -> str:
    """Generation tasks: the decoded text itself (bytes decoded), for ROUGE."""
    del example, is_target
    return _text(value)


# Words `wsc_simple` ignores when comparing a predicted referent with the candidate (T5's).
_DETERMINERS = frozenset(
    "a an few her his each every many much my our some that the their these this those which "
    "whose your".split()
)


def _referent_words(text: str) -> str:
    return " ".join(w for w in text.strip().lower().split(" ") if w not in _DETERMINERS)


def wsc_simple(prediction: Any, example: Any = None, is_target: bool = False) -> int:
    """T5's WSC scoring: 1 if the model named the example's candidate, compared with `label`.

    A target is the example's `label` (1: the candidate is the right referent). A prediction
    is 1 when its words, lower-cased and without determiners, are a subset or superset of the
    candidate's ('fuzzy bunny' names 'bunny'), unless only one of them is possessive ('Bob'
    does not name "Bob's hat"); an empty prediction is -1, which never equals a label.
    """
    if is_target:
        return _as_int(example["label"])
    predicted = _referent_words(_text(prediction))
    if not predicted:
        return -1
    candidate = _referent_words(_text(example["targets_pretokenized"]))
    if ("'" in predicted) != ("'" in candidate):
        return 0
    predicted_words, candidate_words = set(predicted.split(" ")), set(candidate.split(" "))
    return int(predicted_words <= candidate_words or candidate_words <= predicted_words)


def squeezed_text(value: Any, example: Any = None, is_target: bool = False) -> str:
    """Multiple choice (Rainbow): the text, whitespace runs as one space, ends stripped.

    A choice's own spacing (double spaces, a trailing blank) cannot survive SentencePiece, so
    a prediction that spells the choice counts as it whatever the source's spacing.
    """
    del example, is_target
    return " ".join(_text(value).split())
