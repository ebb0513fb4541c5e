"""GEM tasks: SPoT's generation strings for each config, ROUGE and BLEU, mixtures, mock data."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import check_taskless_twins, check_tokenized_examples  # noqa: E402

from spot_jax.data import metrics, mixtures  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.tasks import base, gem  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
CONFIGS = (
    "common_gen",
    "dart",
    "e2e_nlg",
    "schema_guided_dialog",
    "web_nlg_en",
    "wiki_auto_asset_turk",
    "xsum",
    "wiki_lingua_english_en",
)
NAMES = tuple(f"spot_gem_{c}_v110" for c in CONFIGS)


def _run(config, example):
    """One hand-made raw example through the config's text preprocessor: (inputs, targets)."""
    spot_tasks.register_all()
    ds = tf.data.Dataset.from_tensors({**example, "target": "The reference."})
    (x,) = list(base.SPECS[gem.task_name(config)].text_preprocessor(ds).as_numpy_iterator())
    assert x["targets"].decode() == "The reference."
    return x["inputs"].decode()


def test_names_sources_splits_and_sizes():
    spot_tasks.register_all()
    assert tuple(gem.task_name(c) for c in gem.TASKS) == NAMES
    registered = set(seqio.TaskRegistry.names())
    for config, name in zip(CONFIGS, NAMES, strict=True):
        assert {name, name + "_taskless"} <= registered, name
        assert base.SPECS[name].tfds_name == f"gem/{config}:1.1.0"
        assert base.KNOWN_TRAIN_SIZES[name] > 0, name
    asset_turk = base.SPECS["spot_gem_wiki_auto_asset_turk_v110"].splits
    assert set(asset_turk) == {"train", "validation", "test_asset", "test_turk"}
    assert base.SPECS["spot_gem_xsum_v110"].splits["test"] == "test"


def test_list_sources_are_joined_by_a_backslash_n():
    # SPoT's separator is ' \n ' with a literal backslash, not a newline.
    assert _run("common_gen", {"concepts": ["dog", "frisbee", "catch"]}) == (
        "common_gen dog \\n frisbee \\n catch"
    )
    dart = {"tripleset": ["Cotto eatType coffee shop", "Cotto near The Portland Arms"]}
    assert _run("dart", dart) == ("dart Cotto eatType coffee shop \\n Cotto near The Portland Arms")
    web_nlg = {"input": ["Aenir | author | Garth_Nix", "Aenir | country | Australians"]}
    assert _run("web_nlg_en", web_nlg) == (
        "web_nlg_en Aenir | author | Garth_Nix \\n Aenir | country | Australians"
    )


def test_dialog_puts_the_prompt_before_the_turns():
    sgd = {"prompt": "Yes,  book it.", "context": ["Find a hotel.", "Hotel X has 3 stars."]}
    assert _run("schema_guided_dialog", sgd) == (
        "schema_guided_dialog prompt: Yes, book it. context: Find a hotel. \\n Hotel X has 3 stars."
    )


def test_single_sources_follow_the_task_word_and_prefix_collapsed():
    mr = {"meaning_representation": "name[Cotto], food[Chinese]"}
    assert _run("e2e_nlg", mr) == "e2e_nlg name[Cotto], food[Chinese]"
    assert _run("wiki_auto_asset_turk", {"source": "It is  verbose."}) == (
        "wiki_auto_asset_turk simplify: It is verbose."
    )
    assert _run("xsum", {"document": "Line one.\n\nLine two."}) == (
        "xsum summarize: Line one. Line two."
    )
    assert _run("wiki_lingua_english_en", {"source": "Step 1. Do it."}) == (
        "wiki_lingua_english_en summarize: Step 1. Do it."
    )


def test_rouge_and_bleu_on_hand_computed_predictions():
    spot_tasks.register_all()
    task = seqio.get_mixture_or_task("spot_gem_dart_v110")
    assert base.SPECS[task.name].metric_fns == [metrics.rouge, metrics.bleu]
    target = task.postprocess_fn(b"the dog ran to the park", example={}, is_target=True)
    prediction = task.postprocess_fn(b"the dog ran to the house", example={})
    scores = {}
    for metric in task.metric_fns:
        scores.update(metric([target], [prediction]))
    # 5 of 6 unigrams, 4 of 5 bigrams, LCS 'the dog ran to the' (5 of 6) on both sides.
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"] == pytest.approx(100 * 4 / 5)
    assert scores["rougeLsum"] == pytest.approx(100 * 5 / 6)
    # n-gram precisions 5/6, 4/5, 3/4, 2/3, equal lengths (no brevity penalty).
    assert scores["bleu"] == pytest.approx(100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    exact = metrics.bleu([target], [target])["bleu"]
    assert exact == pytest.approx(100.0)


def test_gem_mixture_and_all():
    spot_tasks.register_all()
    rates = mixtures.rates("spot_gem_mixture")
    assert set(rates) == set(NAMES)
    assert rates["spot_gem_wiki_auto_asset_turk_v110"] == 483_801.0  # under the 2**19 cap
    assert rates["spot_gem_xsum_v110"] == 23_206.0
    all_rates = mixtures.rates("spot_all_mixture")
    assert set(NAMES) <= set(all_rates)
    assert len(all_rates) == len(set(mixtures.ALL_TASKS))


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)  # the process's first call sets the size; any size works


def test_tasks_and_twins_yield_examples_under_mock_data(mock_data):
    check_taskless_twins(dict(zip(NAMES, CONFIGS, strict=True)))


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_yield_tokenized_examples_under_mock_data(mock_data, monkeypatch):
    check_tokenized_examples(NAMES, monkeypatch, SPM)
