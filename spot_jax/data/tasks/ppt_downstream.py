"""Target tasks in PPT's downstream formats (Gu et al. 2022): `ppt_<task>`, `ppt_<task>_unified`.

PPT rewrites each target task into the format of the pre-training task whose prompt it starts
from, so a pre-trained prompt meets the input and the answer words it was trained on; Unified
PPT rewrites every task as its multiple-choice template (facts from PPT's data_utils):

    task        PPT format (pre-trained in)                     Unified PPT
    sst2        's <X>' -> bad | good            (cls)          's ? A. bad. B. good. ? The
                                                                correct one is <X>' -> A | B
    sst5        's <X>' -> terrible | bad | maybe | good | great  ... A. terrible. ... E. great. ...
    rte         'premise <X> hypothesis' -> yes | no (nsp3)     'hypothesis ? premise . A. no.
                                                                B. yes. ? The correct one is <X>'
    cb          'hypothesis <X> premise' -> yes | maybe | no    ... A. no. B. maybe. C. yes. ...
    boolq       'question <X> passage' -> yes | no              'question ? passage . A. no. ...'
    race_high   'article ; question ? A. o1. B. o2. C. o3. D. o4. ? The correct one is <X>'
    race_middle -> A..D (mc; the same in both, so one task each)

`ppt_<task>_hybrid` holds PPT's hard templates, which its data code uses without a soft prompt
and the paper's Hybrid PT / Hybrid PPT put after one (same answers as PPT's format):

    sst2, sst5  's It was <X>.'             rte, cb  'hypothesis? <X>. premise'
    boolq       'question: q? <X>. passage'

Targets are '<X> word' or '<X> LETTER' with <X> = `<extra_id_0>`; predictions are mapped back
to class ids (an answer outside the label words counts wrong). The long field (passage, article,
premise, sentence) is the one cut to fit the inputs length, as PPT cuts BoolQ's passage and
RACE's article, so the mask and the options always reach the model (`fit_inputs`). SST-5 is not
in TFDS: it is read from the treebank's PTB files (`files.sst5_source`). Few-shot variants come
as for every catalog task (`ppt_rte_32shot_seed0`, `few_shot.register_few_shot`); RACE's count
and balance questions (its TFDS examples are articles, split by `reading.race_questions`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from spot_jax.data import metrics
from spot_jax.data.ppt import MASK
from spot_jax.data.ppt_choice import OPTION_LETTERS
from spot_jax.data.tasks import base, files, reading

_PARTS = ("inputs_head", "inputs_body", "inputs_tail")
_SPLITS = {"train": "train", "validation": "validation"}
_CORRECT = f"? The correct one is {MASK}"
_SST5_WORDS = ("terrible", "bad", "maybe", "good", "great")  # PPT's cls label words
# Tasks read from files (not in TFDS): task -> data source factory.
_FILE_SOURCES = {"sst5": files.sst5_source}
# task -> (tfds name, label words by TFDS class id, their order as Unified PPT lists options)
_CLASSIFICATION = {
    "sst2": ("glue/sst2:2.0.0", ("bad", "good"), ("bad", "good")),
    "sst5": ("sst5 (SST PTB files)", _SST5_WORDS, _SST5_WORDS),
    "rte": ("super_glue/rte:1.0.2", ("yes", "no"), ("no", "yes")),
    "cb": ("super_glue/cb:1.0.2", ("yes", "no", "maybe"), ("no", "maybe", "yes")),
    "boolq": ("super_glue/boolq:1.0.2", ("no", "yes"), ("no", "yes")),
}
RACE_LEVELS = ("high", "middle")
# PPT's own format, Unified PPT's multiple choice, PPT's hard template (Hybrid PT / PPT).
FORMATS = ("ppt", "unified", "hybrid")


def task_name(task: str, fmt: str = "ppt") -> str:
    return f"ppt_{task}" if fmt == "ppt" else f"ppt_{task}_{fmt}"


def _strip(text: tf.Tensor) -> tf.Tensor:
    # As the pre-training templates (`ppt_choice.mc_template`): no end punctuation before '?'.
    return tf.strings.regex_replace(tf.strings.strip(text), r"[.!?]+$", "")


def _listed(options: Sequence[str]) -> str:
    return " ".join(f"{letter}. {o}." for letter, o in zip(OPTION_LETTERS, options, strict=False))


def _example(head, body, tail, target, label) -> dict[str, tf.Tensor]:
    inputs = tf.strings.join([head, body, tail], " ")
    inputs = tf.strings.strip(tf.strings.regex_replace(inputs, r"\s+", " "))
    parts = dict(zip(_PARTS, (head, body, tail), strict=True))
    return {"inputs": inputs, "targets": target, "label": label, **parts}


def _classification_parts(task: str, x: dict[str, tf.Tensor], fmt: str):
    """(head, body, tail) of one example: the body is the field cut to fit."""
    join = lambda *parts: tf.strings.join(list(parts), " ")  # noqa: E731
    if task in ("sst2", "sst5"):
        sentence = x["sentence"]
        if fmt == "unified":
            return "", _strip(sentence), "?"
        return "", sentence, f"It was {MASK}." if fmt == "hybrid" else MASK
    if task in ("rte", "cb"):
        if fmt == "unified":
            return join(_strip(x["hypothesis"]), "?"), _strip(x["premise"]), "."
        if fmt == "hybrid":
            return join(tf.strings.join([x["hypothesis"], "?"]), f"{MASK}."), x["premise"], ""
        if task == "rte":  # premise first: nsp3's 's1 <X> s2'
            return "", x["premise"], join(MASK, x["hypothesis"])
        return join(x["hypothesis"], MASK), x["premise"], ""
    if task == "boolq":
        question = x["question"]
        if fmt == "unified":
            return join(_strip(question), "?"), _strip(x["passage"]), "."
        if fmt == "hybrid":
            return join("question:", tf.strings.join([question, "?"]), f"{MASK}."), x["passage"], ""
        return join(question, MASK), x["passage"], ""
    raise ValueError(f"no PPT format for {task!r}")


def classification(dataset: tf.data.Dataset, *, task: str, fmt: str) -> tf.data.Dataset:
    """TFDS examples of a classification task -> PPT's, Unified PPT's or the hybrid format."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    _, words, order = _CLASSIFICATION[task]
    unified = fmt == "unified"
    answers = [OPTION_LETTERS[order.index(w)] for w in words] if unified else list(words)
    listed = f"{_listed(order)} {_CORRECT}" if unified else ""

    def fn(x):
        head, body, tail = _classification_parts(task, x, fmt)
        if unified:
            tail = tf.strings.join([tail, listed], " ")
        target = tf.strings.join([MASK, tf.gather(answers, x["label"])], " ")
        return _example(head, body, tail, target, tf.cast(x["label"], tf.int32))

    return dataset.filter(lambda x: x["label"] >= 0).map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def race(questions: tf.data.Dataset) -> tf.data.Dataset:
    """RACE questions (`reading.race_questions`) -> PPT's multiple-choice format (4 options)."""
    letters = tf.constant(list(OPTION_LETTERS))

    def fn(q):
        options = _strip(q["options"])[: len(OPTION_LETTERS)]
        shown = letters[: tf.size(options)]
        listed = tf.strings.reduce_join(tf.strings.join([shown, ". ", options, "."]), separator=" ")
        tail = tf.strings.join([";", _strip(q["question"]), "?", listed, _CORRECT], " ")
        target = tf.strings.join([MASK, q["answer"]], " ")
        return _example("", q["article"], tail, target, q["label"])

    return questions.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def fit_inputs(dataset: tf.data.Dataset, output_features, sequence_length=None) -> tf.data.Dataset:
    """Tokenized inputs rebuilt from head + body + tail with the body cut to fit the inputs
    length (EOS included), so only the long field loses tokens; if head and tail alone are too
    long, the head loses its start. Drops the parts."""
    vocabulary = output_features["inputs"].vocabulary
    length = (sequence_length or {}).get("inputs")

    def fn(x):
        head, body, tail = (vocabulary.encode_tf(x[k]) for k in _PARTS)
        rest = {k: v for k, v in x.items() if k not in _PARTS}
        if length is None:
            return {**rest, "inputs": tf.concat([head, body, tail], 0)}
        keep = length - int(output_features["inputs"].add_eos)
        body = body[: tf.maximum(keep - tf.size(head) - tf.size(tail), 0)]
        return {**rest, "inputs": tf.concat([head, body, tail], 0)[-keep:]}

    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def answer_id(text: Any, example: Any = None, is_target: bool = False, *, answers) -> int:
    """'<extra_id_0> word' -> the word's class id; -1 (counted wrong) for anything else."""
    del example, is_target
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    word = str(text).replace(MASK, "").strip()
    return answers.index(word) if word in answers else -1


def _spec(name, tfds_name, splits, text_preprocessor, answers, metric_fns, **kw):
    return base.TaskSpec(
        name=name,
        tfds_name=tfds_name,
        splits=splits,
        text_preprocessor=text_preprocessor,
        postprocess_fn=functools.partial(answer_id, answers=tuple(answers)),
        metric_fns=metric_fns,
        # The targets of class ids 0, 1, ... (few-shot balancing, rank classification).
        label_names=tuple(f"{MASK} {a}" for a in answers),
        token_preprocessors=(fit_inputs,),
        taskless_twin=False,  # no task word to drop
        **kw,
    )


def specs() -> list[base.TaskSpec]:
    """Every task of this module, in PPT's, Unified PPT's and the hybrid formats."""
    out = []
    for task, (tfds_name, words, order) in _CLASSIFICATION.items():
        metric_fns = [metrics.accuracy]
        if task == "cb":  # SuperGLUE's CB score: macro F1 beside accuracy
            metric_fns = [metrics.mean_multiclass_f1(num_classes=3), metrics.accuracy]
        for fmt in FORMATS:
            answers = [OPTION_LETTERS[order.index(w)] for w in words] if fmt == "unified" else words
            pp = functools.partial(classification, task=task, fmt=fmt)
            name = task_name(task, fmt)
            source = _FILE_SOURCES.get(task)
            splits = files.SST5_SPLITS if source else _SPLITS
            out.append(_spec(name, tfds_name, splits, pp, answers, metric_fns, source=source))
    for level in RACE_LEVELS:
        splits = {"train": "train", "validation": "dev", "test": "test"}
        letters = OPTION_LETTERS[:4]
        name = task_name(f"race_{level}")
        # RACE's TFDS examples are articles: split into questions first (few-shot counts them).
        tfds_name = f"race/{level}:2.0.0"
        out.append(
            _spec(
                name,
                tfds_name,
                splits,
                race,
                letters,
                [metrics.accuracy],
                examples_of=reading.race_questions,
            )
        )
    return out


def register() -> list[str]:
    """Registers PPT's downstream tasks; returns their names."""
    return base.register_specs(specs())
