"""Rainbow tasks: SPoT's multiple-choice strings, SocialIQa parsed from UnifiedQA, metrics."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import (  # noqa: E402
    check_taskless_twins,
    check_tokenized_examples,
    preprocessed_strings,
)

from spot_jax.data import mixtures, postprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.tasks import base, rainbow  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
NAMES = (
    "spot_rainbow_cosmos_qa_v100",
    "spot_rainbow_hellaswag_v110",
    "spot_rainbow_piqa_v100",
    "spot_rainbow_socialiqa_v100",
    "spot_rainbow_winogrande_v120",
)


def test_names_sources_splits_and_sizes():
    spot_tasks.register_all()
    assert tuple(rainbow.task_name(t) for t in rainbow.TASKS) == NAMES
    registered = set(seqio.TaskRegistry.names())
    for name in NAMES:
        assert {name, name + "_taskless"} <= registered, name
        assert base.KNOWN_TRAIN_SIZES[name] > 0, name
    specs = {name: base.SPECS[name] for name in NAMES}
    assert specs[NAMES[3]].tfds_name == "unified_qa/social_iqa:1.0.0"
    assert specs[NAMES[4]].splits == {
        "train": "train_xl",
        "validation": "validation",
        "test": "test",
    }
    assert set(specs[NAMES[2]].splits) == {"train", "validation"}  # PIQA: no test split
    assert set(specs[NAMES[0]].splits) == {"train", "validation", "test"}


def test_cosmos_qa_question_choices_then_context():
    examples = {
        "id": ["a", "b"],
        "context": ["It rained  all\nday.", "Unseen."],
        "question": ["Why stay in?", "What next?"],
        "answer0": ["Rain.", "x"],
        "answer1": ["Sun.", "y"],
        "answer2": ["None of the above choices .", "z"],
        "answer3": ["Snow.", "w"],
        "label": tf.constant([0, -1], tf.int64),  # TFDS's test split has label -1
    }
    assert preprocessed_strings(NAMES[0], examples) == [
        (
            "cosmo_qa question: Why stay in? answer0: Rain. answer1: Sun. "
            "answer2: None of the above choices . answer3: Snow. context: It rained all day.",
            "Rain.",
        ),
        ("cosmo_qa question: What next? answer0: x answer1: y answer2: z answer3: w "
         "context: Unseen.", "<unk>"),
    ]  # fmt: skip


def test_hellaswag_names_each_ending_by_its_index():
    examples = {
        "context": ["A man holds a knife. the man", "Short."],
        "endings": [["cuts a lemon.", "sings.", "flies.", "sleeps."], ["a", "b", "c", "d"]],
        "activity_label": ["", ""],
        "label": tf.constant([0, 7], tf.int32),  # 7: out of range (mock data) -> '<unk>'
        "split_type": ["", ""],
        "source_id": ["", ""],
    }
    assert preprocessed_strings(NAMES[1], examples) == [
        (
            "hellaswag context: A man holds a knife. the man endings 0: cuts a lemon. "
            "endings 1: sings. endings 2: flies. endings 3: sleeps.",
            "cuts a lemon.",
        ),
        ("hellaswag context: Short. endings 0: a endings 1: b endings 2: c endings 3: d", "<unk>"),
    ]


def test_piqa_and_winogrande_have_no_context():
    piqa = {
        "id": ["p"],
        "goal": ["Open a jar?"],
        "sol1": ["Twist the lid."],
        "sol2": ["Eat the lid."],
        "label": tf.constant([0], tf.int64),
    }
    assert preprocessed_strings(NAMES[2], piqa) == [
        ("piqa goal: Open a jar? sol1: Twist the lid. sol2: Eat the lid.", "Twist the lid.")
    ]
    # TFDS's ClassLabel(names=['1', '2']): answer '2' is label 1, the second option.
    wino = {
        "sentence": ["The cup fit in the box because the _ was small."],
        "option1": ["box"],
        "option2": ["cup"],
        "label": tf.constant([1], tf.int64),
    }
    assert preprocessed_strings(NAMES[4], wino) == [
        ("winogrande sentence: The cup fit in the box because the _ was small. option1: box "
         "option2: cup", "cup"),
    ]  # fmt: skip


def test_socialiqa_fields_come_back_out_of_unifiedqa():
    encoded = (
        "What will Others want to do next? \\n (A) stay home (B) eat (with friends) (C) leave "
        "\\n Cameron had a barbecue  at home."
    )
    examples = {
        "input": [encoded, "not UnifiedQA's encoding"],
        "output": ["eat (with friends)", "x"],
    }
    assert preprocessed_strings(NAMES[3], examples) == [
        (
            "socialiqa question: What will Others want to do next? answerA: stay home "
            "answerB: eat (with friends) answerC: leave context: Cameron had a barbecue at home.",
            "eat (with friends)",
        ),
        # Unparsed (random mock strings): the whole input is the question.
        ("socialiqa question: not UnifiedQA's encoding answerA: answerB: answerC: context: ", "x"),
    ]


def test_accuracy_compares_choice_texts_with_whitespace_normalised():
    spot_tasks.register_all()
    task = seqio.get_mixture_or_task(NAMES[0])
    (metric,) = task.metric_fns
    targets = [task.postprocess_fn(t, example={}, is_target=True) for t in ["Rain.  ", "Sun.", "a"]]
    predictions = [task.postprocess_fn(p, example={}) for p in ["Rain.", "Snow.", " a"]]
    assert targets == ["Rain.", "Sun.", "a"]
    assert metric(targets, predictions) == {"accuracy": pytest.approx(200 / 3)}
    assert postprocessors.squeezed_text(b"  two\n words ") == "two words"


def test_rainbow_mixture_and_all():
    spot_tasks.register_all()
    rates = mixtures.rates("spot_rainbow_mixture")
    in_tfds = {name: float(base.KNOWN_TRAIN_SIZES[name]) for name in NAMES}
    assert rates == {**in_tfds, "spot_alpha_nli_v100": 169_654.0}  # αNLI: from AI2's files
    assert rates["spot_rainbow_winogrande_v120"] == 40_398.0  # train_xl
    assert set(NAMES) <= set(mixtures.rates("spot_all_mixture"))


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)  # the process's first call sets the size; any size works


def test_tasks_and_twins_yield_examples_under_mock_data(mock_data):
    words = {
        name: rainbow.TASKS[name.removeprefix("spot_rainbow_").rsplit("_v", 1)[0]][3].word
        for name in NAMES
    }
    check_taskless_twins(words)


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_yield_tokenized_examples_under_mock_data(mock_data, monkeypatch):
    check_tokenized_examples(NAMES, monkeypatch, SPM)
