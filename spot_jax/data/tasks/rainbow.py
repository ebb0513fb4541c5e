"""Rainbow commonsense tasks of SPoT's list that TFDS has, in SPoT's multiple-choice format.

    spot_rainbow_<name>_v<version>: '<word> <question key>: q <choice key>: c ... [<context key>:
    c]' -> the correct choice's text ('<unk>' where unlabelled)

    spot_rainbow_cosmos_qa_v100   tfds cosmos_qa:1.0.0; train, validation, test (unlabelled)
        'cosmo_qa question: q answer0: a0 answer1: a1 answer2: a2 answer3: a3 context: c'
    spot_rainbow_hellaswag_v110   tfds hellaswag:1.1.0; train, validation, test (unlabelled)
        'hellaswag context: c endings 0: e0 endings 1: e1 endings 2: e2 endings 3: e3'
    spot_rainbow_piqa_v100        tfds piqa:1.0.0; train, validation
        'piqa goal: g sol1: s1 sol2: s2'
    spot_rainbow_socialiqa_v100   tfds unified_qa/social_iqa:1.0.0; train, validation
        'socialiqa question: q answerA: a answerB: b answerC: c context: c'
    spot_rainbow_winogrande_v120  tfds winogrande:1.2.0; train (TFDS train_xl), validation,
                                  test (unlabelled)
        'winogrande sentence: s option1: o1 option2: o2'

The format is SPoT's (prompt-tuning fbfab63, `spot/data/rainbow.py` and
`preprocess_multiple_choice`): the task word, the question, every choice under its key, the
context last, joined with T5's `_string_join` (whitespace runs collapsed); the target is the
correct choice's text. SPoT's task words are kept, 'cosmo_qa' spelling included. That published
code never ran: the context is appended with `strs_to_join = strs_to_join.extend(...)` (None,
so CosmosQA and SocialIQa fail), the TFDS tasks are registered with the classification
preprocessor and keys their entries lack, and the αNLI/SocialIQa tasks are TSV placeholders
re-registered in a loop. The format itself is not in doubt: `preprocess_multiple_choice`'s
docstring and the golden strings of its tests (`preprocessors_test.py`, five real validation
examples of each TFDS set) spell it out, and that is what is implemented here. Rainbow's
own T5 format (allenai/rainbow `preparation/rainbow.py`) differs: '[cosmosqa]:' and then one
line per field, '<context>c</context>', '<question>q</question>', '<answer0>a0</answer0>', ...
-> the leaderboard label as text ('0'-'3'; '1'/'2' for WinoGrande, '1'-'3' for SocialIQa).

SocialIQa has no TFDS builder of its own; `unified_qa/social_iqa` holds its train and dev sets
in UnifiedQA's encoding, 'q \\n (A) a (B) b (C) c \\n context' (a literal backslash-n) -> the
correct answer's text, which is parsed back into the fields here (an input that does not parse,
e.g. a random mock string, is kept whole as the question). αNLI is in no TFDS builder. Test
splits carry no labels (target '<unk>'). Metric: accuracy of the predicted text, whitespace
normalised (`postprocessors.squeezed_text`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base


@dataclasses.dataclass(frozen=True)
class Format:
    """One dataset's multiple-choice layout (SPoT's `preprocess_multiple_choice` arguments).

    Attributes:
        word: the task word the input starts with.
        question_key: the key of the question (also its TFDS feature unless `fields` maps it).
        choice_keys: the keys of the choices, in order.
        context_key: the key of the context, written last, if any.
        fields: raw example -> {key: string, 'label': int} when the keys are not TFDS
            features (HellaSwag's endings list, UnifiedQA's SocialIQa string); a 'targets'
            string replaces the label lookup.
    """

    word: str
    question_key: str
    choice_keys: tuple[str, ...]
    context_key: str | None = None
    fields: Callable[[dict], dict] | None = None


def _choice_text(choices: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """choices[label], or '<unk>' when the label is -1 (unlabelled) or out of range."""
    label = tf.cast(label, tf.int32)
    valid = (label >= 0) & (label < tf.size(choices))
    return tf.cond(
        valid,
        lambda: tf.gather(choices, tf.maximum(label, 0)),
        lambda: tf.constant(preprocessors.UNK_LABEL),
    )


def multiple_choice(dataset: tf.data.Dataset, *, layout: Format) -> tf.data.Dataset:
    """'<word> <question key>: q <choice key>: c ... [<context key>: c]' -> the right choice."""

    def convert(x):
        f = layout.fields(x) if layout.fields else x
        pieces = [layout.word, f"{layout.question_key}:", f[layout.question_key]]
        for key in layout.choice_keys:
            pieces += [f"{key}:", f[key]]
        if layout.context_key:
            pieces += [f"{layout.context_key}:", f[layout.context_key]]
        if "targets" in f:
            targets = f["targets"]
        else:
            choices = tf.stack([f[key] for key in layout.choice_keys])
            targets = _choice_text(choices, f["label"])
        return {"inputs": preprocessors.join_collapsing_whitespace(pieces), "targets": targets}

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


HELLASWAG_ENDINGS = 4


def _hellaswag_fields(x: dict) -> dict:
    """HellaSwag's `endings` list as SPoT's keys 'endings 0'..'endings 3' (padded with '')."""
    endings = tf.concat([x["endings"], tf.fill([HELLASWAG_ENDINGS], "")], axis=0)
    out = {"context": x["context"], "label": x["label"]}
    for i in range(HELLASWAG_ENDINGS):
        out[f"endings {i}"] = endings[i]
    return out


# UnifiedQA's multiple-choice encoding (allenai/unifiedqa `encode_datasets.py`, social_iqa):
# 'question \n (A) a (B) b (C) c \n context', with a literal backslash-n.
UNIFIEDQA_SOCIAL_IQA = r"(?s)^(.*?) \\n \(A\) (.*?) \(B\) (.*?) \(C\) (.*?) \\n (.*)$"
_SOCIAL_IQA_GROUPS = ("question", "answerA", "answerB", "answerC", "context")


def _social_iqa_fields(x: dict) -> dict:
    """SocialIQa's fields parsed back out of UnifiedQA's input; the output is the answer."""
    text = x["input"]
    parsed = tf.strings.regex_full_match(text, UNIFIEDQA_SOCIAL_IQA)
    out = {"targets": x["output"]}
    for i, key in enumerate(_SOCIAL_IQA_GROUPS, start=1):
        group = tf.strings.regex_replace(text, UNIFIEDQA_SOCIAL_IQA, f"\\{i}")
        out[key] = tf.where(parsed, group, text if key == "question" else tf.constant(""))
    return out


# name -> (tfds name, version, splits, layout)
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_NO_TEST = {"train": "train", "validation": "validation"}
TASKS = {
    "cosmos_qa": (
        "cosmos_qa",
        "1.0.0",
        _SPLITS,
        Format("cosmo_qa", "question", ("answer0", "answer1", "answer2", "answer3"), "context"),
    ),
    "hellaswag": (
        "hellaswag",
        "1.1.0",
        _SPLITS,
        Format(
            "hellaswag",
            "context",
            tuple(f"endings {i}" for i in range(HELLASWAG_ENDINGS)),
            fields=_hellaswag_fields,
        ),
    ),
    "piqa": ("piqa", "1.0.0", _NO_TEST, Format("piqa", "goal", ("sol1", "sol2"))),
    "socialiqa": (
        "unified_qa/social_iqa",
        "1.0.0",
        _NO_TEST,
        Format(
            "socialiqa",
            "question",
            ("answerA", "answerB", "answerC"),
            "context",
            fields=_social_iqa_fields,
        ),
    ),
    # SPoT pins 1.1.0; TFDS 4.9 builds only 1.2.0 ('updated source file ... new checksums'), still
    # from winogrande_1.1.zip, with Rainbow's 40,398 train_xl examples.
    "winogrande": (
        "winogrande",
        "1.2.0",
        {"train": "train_xl", "validation": "validation", "test": "test"},
        Format("winogrande", "sentence", ("option1", "option2")),
    ),
}
# Train examples of the TFDS catalog (WinoGrande: train_xl; SocialIQa: Rainbow's count of the
# same train file UnifiedQA re-encodes), for mixture rates before any download.
TRAIN_SIZES = {
    "cosmos_qa": 25_262,
    "hellaswag": 39_905,
    "piqa": 16_113,
    "socialiqa": 33_410,
    "winogrande": 40_398,
}


def task_name(name: str) -> str:
    return f"spot_rainbow_{name}_v{TASKS[name][1].replace('.', '')}"


def spec(name: str) -> base.TaskSpec:
    """The TaskSpec of one Rainbow task."""
    tfds_name, version, splits, layout = TASKS[name]
    return base.TaskSpec(
        name=task_name(name),
        tfds_name=f"{tfds_name}:{version}",
        splits=splits,
        text_preprocessor=functools.partial(multiple_choice, layout=layout),
        postprocess_fn=postprocessors.squeezed_text,
        metric_fns=[metrics.accuracy],
    )


def register() -> list[str]:
    """Registers the Rainbow tasks (and taskless twins); returns the main task names."""
    for name, size in TRAIN_SIZES.items():
        base.KNOWN_TRAIN_SIZES.setdefault(task_name(name), size)
    return base.register_specs(spec(name) for name in TASKS)
