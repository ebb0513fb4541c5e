"""NLI, sentiment and SQuAD tasks: exact strings, mock-data examples, few-shot, metrics."""

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import preprocessed_strings  # noqa: E402

from spot_jax.data import mixtures, postprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples  # noqa: E402
from spot_jax.data.tasks import base, few_shot, nli, qa, sentiment  # noqa: E402

NEW_TASKS = (
    "spot_snli_v110",
    "spot_anli_r1_v010",
    "spot_anli_r2_v010",
    "spot_anli_r3_v010",
    "spot_imdb_reviews_v100",
    "spot_yelp_polarity_reviews_v020",
    "spot_squad_v11_v300",
)


def test_names_follow_the_tfds_versions():
    assert nli.snli_task_name() == "spot_snli_v110"
    assert [nli.anli_task_name(r) for r in nli.ANLI_ROUNDS] == list(NEW_TASKS[1:4])
    assert [sentiment.task_name(t) for t in sentiment.TASKS] == list(NEW_TASKS[4:6])
    assert qa.SQUAD_NAME == NEW_TASKS[6]
    spot_tasks.register_all()
    for name in NEW_TASKS:
        assert (
            name in seqio.TaskRegistry.names() and name + "_taskless" in seqio.TaskRegistry.names()
        )


def test_snli_strings_and_unlabeled_pairs_dropped():
    examples = {
        "premise": ["A man plays a guitar.", "Kids run.", "A dog sleeps."],
        "hypothesis": ["A man makes music.", "Kids sit.", "An animal rests."],
        "label": [0, -1, 2],
    }
    assert preprocessed_strings("spot_snli_v110", examples) == [
        ("snli hypothesis: A man makes music. premise: A man plays a guitar.", "entailment"),
        ("snli hypothesis: An animal rests. premise: A dog sleeps.", "contradiction"),
    ]


@pytest.mark.parametrize("round_", ["r1", "r2", "r3"])
def test_anli_strings(round_):
    # SPoT registers each round with task_name=dataset: the round's name is the task word.
    examples = {"uid": ["u"], "context": ["C.\n\nMore."], "hypothesis": ["H."], "label": [1]}
    assert preprocessed_strings(nli.anli_task_name(round_), examples) == [
        (f"anli_{round_} hypothesis: H. context: C. More.", "neutral")
    ]


def test_sentiment_strings():
    # SPoT fbfab63 `spot/data/sentiment.py`: the TFDS name, then 'text:'; whitespace collapsed.
    examples = {"text": ["Great  film!<br /><br />Go.", "Dull.\n"], "label": [1, 0]}
    assert preprocessed_strings("spot_imdb_reviews_v100", examples) == [
        ("imdb_reviews text: Great film!<br /><br />Go.", "positive"),
        ("imdb_reviews text: Dull. ", "negative"),
    ]
    assert preprocessed_strings("spot_yelp_polarity_reviews_v020", examples) == [
        ("yelp_polarity_reviews text: Great film!<br /><br />Go.", "positive"),
        ("yelp_polarity_reviews text: Dull. ", "negative"),
    ]


def _squad_example(answers):
    return {
        "id": "q1",
        "title": "Broncos",
        "context": "The Denver Broncos won Super Bowl 50, 24-10.",
        "question": "Who won Super Bowl 50?",
        "answers": {
            "text": tf.constant(answers, tf.string),
            "answer_start": tf.zeros([len(answers)], tf.int32),
        },
    }


def test_squad_strings_are_t5s_after_the_task_word():
    spot_tasks.register_all()
    pp = base.SPECS[qa.SQUAD_NAME].text_preprocessor
    ds = tf.data.Dataset.from_tensors(_squad_example(["Denver Broncos", "The Broncos."]))
    (x,) = list(pp(ds).as_numpy_iterator())
    assert x["inputs"].decode() == (
        "squad question: Who won Super Bowl 50 ? "
        "context: The Denver Broncos won Super Bowl 50 , 24 - 10 . "
    )
    assert x["targets"].decode() == "Denver Broncos"
    assert [a.decode() for a in x["answers"]] == ["Denver Broncos", "The Broncos . "]
    (empty,) = list(pp(tf.data.Dataset.from_tensors(_squad_example([]))).as_numpy_iterator())
    assert empty["targets"].decode() == "<unk>"


def test_squad_metric_uses_every_answer():
    example = {"answers": [b"Denver Broncos", b"The Broncos . "]}
    target = postprocessors.qa(b"Denver Broncos", example=example, is_target=True)
    prediction = postprocessors.qa(b"broncos", example=example, is_target=False)
    assert target == ["Denver Broncos", "The Broncos . "] and prediction == "broncos"
    task = seqio.get_mixture_or_task(qa.SQUAD_NAME)
    (metric,) = task.metric_fns
    assert metric([target], [prediction]) == {"em": 100.0, "f1": 100.0}


def test_classification_metrics_are_accuracy():
    spot_tasks.register_all()
    for name in NEW_TASKS[:-1]:
        spec = base.SPECS[name]
        assert spec.postprocess_fn(spec.label_names[1]) == 1, name
        assert [f.__name__ for f in spec.metric_fns] == ["accuracy"], name


def test_train_sizes_make_mixtures():
    spot_tasks.register_all()
    assert base.train_size("spot_snli_v110_taskless") == 550_152
    mixtures.register_mixture("spot_test_more_tasks_mixture", list(NEW_TASKS))
    rates = mixtures.rates("spot_test_more_tasks_mixture")
    assert rates["spot_yelp_polarity_reviews_v020"] == 2.0**19
    assert rates["spot_squad_v11_v300"] == 87_599.0


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)


@pytest.mark.parametrize("name", [n + s for n in NEW_TASKS for s in ("", "_taskless")])
def test_every_new_task_yields_examples_under_mock_data(mock_data, name):
    examples = list(show_examples(name, "validation", n=2))
    assert examples, name
    assert all(isinstance(x["inputs"], str) and x["targets"] for x in examples), name
    if not name.endswith("_taskless"):
        # The task word is the dataset name between 'spot_' and the version.
        word = name.removeprefix("spot_").rsplit("_v", 1)[0]
        word = {"squad_v11": "squad", "snli": "snli"}.get(word, word)
        assert examples[0]["inputs"].startswith(word + " "), name


def test_few_shot_resolves_for_snli(mock_data):
    name = few_shot.resolve("spot_snli_v110_4shot_seed0")
    assert name == "spot_snli_v110_4shot_seed0"
    examples = list(show_examples(name, "train", n=10))
    assert 0 < len(examples) <= 4
    assert all(x["targets"] in nli.LABEL_NAMES for x in examples)
    assert list(show_examples(name, "test", n=1))[0]["inputs"].startswith("snli hypothesis: ")
