"""Reading comprehension sources of SPoT's transferability study: DROP and RACE.

    spot_drop_v200          tfds drop:2.0.0; train, validation (DROP's dev)
        'drop question: q context: passage' -> the answer, T5's SQuAD spacing; SQuAD EM and F1
        against the answer and its validated answers
    spot_race_<level>_v200  tfds race/<level>:2.0.0 (middle, high); train, validation (dev), test;
                            one example per question
        'race question: q answer0: a0 answer1: a1 answer2: a2 answer3: a3 article: a'
        -> the correct option's text; accuracy

SPoT's Table 2 (paper §3) trains prompts on 16 sources; DROP (77K) and RACE (25K, RACE-middle's
train questions) are the two of them that none of its App. B families holds (`mixtures.
STUDY_SOURCES` lists all 16 as registered here). SPoT's code has no task for either, so the
formats follow its nearest ones: DROP is extractive-style QA as its `mrqa` preprocessor writes
it (DROP's answers are numbers, dates or spans, generated as text), RACE is multiple choice in
its `preprocess_multiple_choice` layout (`rainbow.multiple_choice`: task word, question, every
option under its key, the context last). RACE's TFDS examples are articles holding several
questions; `race_questions` splits them (the spec's `examples_of`, so few-shot subsets count
questions; PPT's RACE format reads the same rows).
"""

from __future__ import annotations

import seqio
import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base, rainbow

DROP_NAME = "spot_drop_v200"
RACE_LEVELS = ("middle", "high")
RACE_OPTIONS = 4
_RACE_CHOICES = tuple(f"answer{i}" for i in range(RACE_OPTIONS))

# Train questions (DROP's train set; RACE's per level, which its TFDS split counts as articles).
DROP_TRAIN_SIZE = 77_409
RACE_TRAIN_QUESTIONS = {"middle": 25_421, "high": 62_445}


def race_task_name(level: str) -> str:
    return f"spot_race_{level}_v200"


def _rows(t) -> tf.Tensor:
    return t.nrows() if isinstance(t, tf.RaggedTensor) else tf.shape(t, out_type=tf.int64)[0]


def race_questions(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """RACE articles -> one element per question: {'article', 'question', 'options', 'answer',
    'label'} (the answer a letter A-D, the label its index; -1 for anything else)."""
    letters = tf.constant(["A", "B", "C", "D"])

    def with_label(q):
        hits = tf.cast(tf.equal(letters, q["answer"]), tf.int32)
        label = tf.where(tf.reduce_any(hits > 0), tf.argmax(hits, output_type=tf.int32), -1)
        return {**q, "label": label}

    def per_question(x):
        # Real articles hold as many answers and option lists as questions; mock data may not.
        n = tf.reduce_min([_rows(x[k]) for k in ("questions", "answers", "options")])
        questions = tf.data.Dataset.from_tensor_slices(
            {
                "question": x["questions"][:n],
                "options": x["options"][:n],
                "answer": x["answers"][:n],
            }
        )
        return questions.map(lambda q: with_label({**q, "article": x["article"]}))

    return dataset.flat_map(per_question)


def _race_fields(q: dict) -> dict:
    """A question's options under SPoT-style keys answer0..answer3 (padded with '')."""
    options = tf.concat([q["options"], tf.fill([RACE_OPTIONS], "")], axis=0)
    out = {"question": q["question"], "article": q["article"], "label": q["label"]}
    for i, key in enumerate(_RACE_CHOICES):
        out[key] = options[i]
    return out


RACE_FORMAT = rainbow.Format("race", "question", _RACE_CHOICES, "article", fields=_race_fields)


def race(questions: tf.data.Dataset) -> tf.data.Dataset:
    """RACE questions (`race_questions`) -> SPoT-style multiple-choice examples."""
    return rainbow.multiple_choice(questions, layout=RACE_FORMAT)


@seqio.map_over_dataset
def drop(x: dict) -> dict:
    """'drop question: q context: passage' -> the answer; all answers kept for the metric."""
    answers = tf.concat([[x["answer"]], x["validated_answers"]], axis=0)
    answers = tf.boolean_mask(answers, tf.strings.length(answers) > 0)
    out = preprocessors.extractive_qa("drop", x["question"], x["passage"], answers)
    # An unanswered question (none in DROP's files; mock data has them) scores against its
    # '<unk>' target, never against an empty list.
    unk = tf.constant([preprocessors.UNK_LABEL])
    out["answers"] = tf.cond(tf.size(answers) > 0, lambda: out["answers"], lambda: unk)
    return {**out, "query_id": x["query_id"]}


def drop_spec() -> base.TaskSpec:
    return base.TaskSpec(
        name=DROP_NAME,
        tfds_name="drop:2.0.0",
        splits={"train": "train", "validation": "dev"},
        text_preprocessor=drop,
        postprocess_fn=postprocessors.qa,
        metric_fns=[metrics.squad],
    )


def race_spec(level: str) -> base.TaskSpec:
    return base.TaskSpec(
        name=race_task_name(level),
        tfds_name=f"race/{level}:2.0.0",
        splits={"train": "train", "validation": "dev", "test": "test"},
        text_preprocessor=race,
        postprocess_fn=postprocessors.squeezed_text,
        metric_fns=[metrics.accuracy],
        examples_of=race_questions,
    )


def register() -> list[str]:
    """Registers DROP and RACE (and taskless twins); returns the main task names."""
    base.KNOWN_TRAIN_SIZES.setdefault(DROP_NAME, DROP_TRAIN_SIZE)
    for level, size in RACE_TRAIN_QUESTIONS.items():
        base.PREPROCESSED_TRAIN_SIZES.setdefault(race_task_name(level), size)
    return base.register_specs([drop_spec(), *(race_spec(level) for level in RACE_LEVELS)])
