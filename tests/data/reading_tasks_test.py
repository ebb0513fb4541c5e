"""DROP and RACE (SPoT's Table 2 sources): strings, answers, metrics, mock data; the study's
source and target lists."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import (  # noqa: E402
    RACE_ARTICLE,
    check_taskless_twins,
    check_tokenized_examples,
    preprocessed_rows,
    preprocessed_strings,
)

from spot_jax.data import metrics, mixtures, postprocessors, preprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import tasks_main  # noqa: E402
from spot_jax.data.tasks import base, few_shot, ppt_downstream, reading  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
NAMES = (reading.DROP_NAME, "spot_race_middle_v200", "spot_race_high_v200")


def test_drop_is_squad_style_qa_scored_against_every_answer():
    example = {
        "passage": ["The Bears scored 7, then 10."],
        "question": ["How many points in all?"],
        "answer": ["17"],
        "validated_answers": [["17", "seventeen"]],
        "query_id": ["q1"],
    }
    (x,) = preprocessed_rows(reading.DROP_NAME, example)
    want = "drop question: How many points in all ? context: The Bears scored 7 , then 10 . "
    assert x["inputs"].decode() == want
    assert x["targets"].decode() == "17" and x["query_id"] == b"q1"
    answers = [a.decode() for a in x["answers"]]
    assert answers == ["17", "17", "seventeen"]
    target = postprocessors.qa(x["targets"], example=x, is_target=True)
    assert metrics.squad([target], ["seventeen"])["em"] == 100.0
    # No answer at all (mock data): scored against '<unk>', never an empty ground-truth list.
    (y,) = preprocessed_rows(
        reading.DROP_NAME, {**example, "answer": [""], "validated_answers": [[""]]}
    )
    assert [a.decode() for a in y["answers"]] == ["<unk>"] and y["targets"] == b"<unk>"


def test_race_makes_one_multiple_choice_example_per_question():
    rows = preprocessed_strings(NAMES[1], RACE_ARTICLE)
    assert rows == [
        (
            "race question: Who sat? answer0: a dog answer1: the cat answer2: a man "
            "answer3: nobody article: The cat sat.",
            "the cat",
        ),
        (
            "race question: Where _ . answer0: mat answer1: hat answer2: bed answer3: chair. "
            "article: The cat sat.",
            "chair.",
        ),
    ]
    # PPT's RACE format reads the same questions.
    questions = reading.race_questions(tf.data.Dataset.from_tensor_slices(RACE_ARTICLE))
    ppt = ppt_downstream.race(questions)
    assert [x["targets"].decode() for x in ppt.as_numpy_iterator()] == [
        "<extra_id_0> B",
        "<extra_id_0> D",
    ]


def test_race_few_shot_sets_count_and_balance_questions():
    # 6 articles x 4 questions, answers cycling A-D: a 4-shot set is 4 questions, one per letter.
    articles = {
        "article": [f"Article {a}." for a in range(6)],
        "questions": [[f"Q{a}.{q}?" for q in range(4)] for a in range(6)],
        "answers": [["A", "B", "C", "D"] for _ in range(6)],
        "options": [[["o1", "o2", "o3", "o4"]] * 4 for _ in range(6)],
        "example_id": [str(a) for a in range(6)],
    }
    questions = reading.race_questions(tf.data.Dataset.from_tensor_slices(articles))
    for block in (0, 1):
        shot = preprocessors.few_shot(questions, k=4, seed=0, num_classes=4, block=block)
        assert sorted(int(x["label"]) for x in shot.as_numpy_iterator()) == [0, 1, 2, 3]
    # The registered k-shot tasks split articles once (their source rows are questions already).
    spot_tasks.register_all()
    for task in ("ppt_race_middle", "spot_race_middle_v200"):
        task = seqio.get_mixture_or_task(few_shot.register_few_shot(task, k=4, seed=0))
        assert reading.race_questions not in task.preprocessors
    assert reading.race_questions in seqio.get_mixture_or_task("ppt_race_middle").preprocessors


def test_study_lists_name_registered_tasks_with_the_papers_sizes():
    spot_tasks.register_all()
    registered = set(seqio.TaskRegistry.names())
    assert len(mixtures.STUDY_SOURCES) == 16 and len(mixtures.STUDY_TARGETS) == 10
    assert set(mixtures.STUDY_SOURCES + mixtures.STUDY_TARGETS) <= registered
    # Table 2's sizes: DROP 77K, RACE 25K (RACE-middle's questions, not its 6,409 articles).
    assert base.train_size(reading.DROP_NAME) == 77_409
    assert base.train_size("spot_race_middle_v200") == 25_421
    assert base.train_size("spot_race_high_v200_taskless") == 62_445


def test_tasks_list_prints_the_study(capsys):
    assert tasks_main(["list", "--study", "sources"]) == 0
    assert capsys.readouterr().out.split() == list(mixtures.STUDY_SOURCES)
    assert tasks_main(["list", "--study", "targets"]) == 0
    assert capsys.readouterr().out.split()[4] == "spot_cr_v100"


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)  # the process's first call sets the size; any size works


def test_tasks_and_twins_yield_examples_under_mock_data(mock_data):
    check_taskless_twins({NAMES[0]: "drop", NAMES[1]: "race", NAMES[2]: "race"})


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_yield_tokenized_examples_under_mock_data(mock_data, monkeypatch):
    check_tokenized_examples(NAMES, monkeypatch, SPM)
