"""Sentiment140, GoEmotions, MRQA, summarization and C4 tasks: strings, metrics, mock data."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import preprocessed_strings  # noqa: E402

from spot_jax.data import metrics, postprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples  # noqa: E402
from spot_jax.data.tasks import base, c4, qa, sentiment, summarization  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"


def test_every_new_task_and_its_twin_is_registered():
    spot_tasks.register_all()
    names = set(seqio.TaskRegistry.names())
    main = (
        [sentiment.sentiment140_spec().name, sentiment.goemotions_spec().name]
        + [qa.mrqa_task_name(s) for s in qa.MRQA_IN_DOMAIN + qa.MRQA_OUT_OF_DOMAIN]
        + [summarization.task_name(t) for t in summarization.TASKS]
    )
    assert "spot_mrqa_natural_questions_v100" in main and "spot_cnn_dailymail_v340" in main
    for name in main:
        assert name in names and name + "_taskless" in names, name
        if "train" in base.SPECS[name].splits:  # mixture rates exist before any download
            assert base.KNOWN_TRAIN_SIZES[name] > 0, name
    assert {c4.SPAN_CORRUPTION_NAME, c4.PREFIX_LM_NAME} <= names
    assert c4.SPAN_CORRUPTION_NAME + "_taskless" not in names


def test_sentiment140_polarity_and_goemotions_label_lists():
    # SPoT fbfab63 `preprocess_sentiment140` / `preprocess_goemotions` strings.
    tweets = {"text": ["ugh.", "meh", "yay!  so\n\tgood", "odd"], "polarity": [0, 2, 4, 7]}
    assert preprocessed_strings("spot_sentiment140_v100", tweets) == [
        ("sentiment140 text: ugh.", "negative"),
        ("sentiment140 text: meh", "neutral"),
        ("sentiment140 text: yay! so good", "positive"),  # T5's _string_join collapses
        ("sentiment140 text: odd", "<unk>"),
    ]
    comments = {"comment_text": ["So  sweet\n", "Hm", "Wow?"]}
    for emotion in sentiment.EMOTIONS:
        comments[emotion] = [emotion in ("love", "joy"), False, emotion == "neutral"]
    # Emotions in TFDS feature order, joined by a backslash-n between spaces (not a newline).
    assert preprocessed_strings("spot_goemotions_v010", comments) == [
        ("goemotions comment: So sweet ", "joy \\n love"),
        ("goemotions comment: Hm", ""),
        ("goemotions comment: Wow?", "neutral"),
    ]


def test_doc_nli_strings():
    examples = {
        "premise": ["A long\n\ndocument.  Two  spaces."],
        "hypothesis": ["A claim."],
        "label": [1],
    }
    assert preprocessed_strings("spot_doc_nli_v100", examples) == [
        ("doc_nli hypothesis: A claim. premise: A long document. Two spaces.", "entailment")
    ]


def test_goemotions_metrics_compare_label_sets():
    parse = postprocessors.label_set
    targets = [parse("joy \\n love"), parse("anger"), parse("")]
    predictions = [parse("love \\n joy"), parse("anger \\n fear"), parse("")]
    assert metrics.accuracy(targets, predictions)["accuracy"] == pytest.approx(200 / 3)
    # joy 1, love 1, anger 1, fear 0 (one false positive); the other 24 labels never occur.
    f1 = metrics.mean_label_f1(sentiment.EMOTIONS)(targets, predictions)["mean_label_f1"]
    assert f1 == pytest.approx(100 * 3 / 28)


def test_mrqa_strings_keep_every_answer():
    example = {
        "qid": ["q7"],
        "question": ["Who won?"],
        "context": ["The Broncos won, 24-10."],
        "answers": [["Broncos", "The Broncos"]],
    }
    spot_tasks.register_all()
    ds = base.SPECS["spot_mrqa_news_qa_v100"].text_preprocessor(
        tf.data.Dataset.from_tensor_slices(example)
    )
    (x,) = list(ds.as_numpy_iterator())
    assert (
        x["inputs"].decode() == "news_qa question: Who won ? context: The Broncos won , 24 - 10 . "
    )
    assert x["targets"].decode() == "Broncos" and x["qid"] == b"q7"
    assert [a.decode() for a in x["answers"]] == ["Broncos", "The Broncos"]
    assert base.SPECS["spot_mrqa_drop_v100"].splits == {"validation": "test", "test": "test"}


def test_summarization_strings_use_each_sets_features():
    assert preprocessed_strings(
        "spot_aeslc_v100", {"email_body": ["Meet at 5."], "subject_line": ["Meeting"]}
    ) == [("aeslc summarize: Meet at 5.", "Meeting")]
    assert preprocessed_strings(
        "spot_cnn_dailymail_v340", {"article": ["A b."], "highlights": ["A."]}
    ) == [("cnn_dailymail summarize: A b.", "A.")]
    assert base.SPECS["spot_billsum_v300"].splits["validation"] == "test"


def test_rouge_on_hand_computed_values():
    # 'the cat on the mat' vs 'the cat sat on the mat': unigrams P 5/5 R 5/6 -> F 10/11;
    # bigrams 3 of 4 predicted, 3 of 5 reference -> F 2/3; LCS 5 -> F 10/11 (one sentence,
    # so rougeLsum is rougeL).
    scores = metrics.rouge(["the cat sat on the mat", "a b"], ["the cat on the mat", "a b"])
    assert set(scores) == {"rouge1", "rouge2", "rougeLsum"}  # T5's score keys
    assert scores["rouge1"] == pytest.approx(100 * (10 / 11 + 1) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["rougeLsum"] == pytest.approx(100 * (10 / 11 + 1) / 2)
    assert metrics.rouge(["dogs"], ["cats"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeLsum": 0.0}


def test_rouge_has_no_stemmer_and_splits_sentences_at_spaced_periods():
    # T5 scores without a stemmer: 'cats running' shares no token with 'cat run'.
    assert metrics.rouge(["cat run"], ["cats running"])["rouge1"] == 0.0
    # ' . ' becomes ' .\n', so rougeLsum takes the union LCS per reference sentence: both
    # sentences are found (F 1). One unsplit sequence would have LCS 3 of 6 (F 1/2).
    swapped = metrics.rouge(["the cat sat . the dog ran"], ["the dog ran . the cat sat"])
    assert swapped["rougeLsum"] == pytest.approx(100.0)
    assert swapped["rouge1"] == pytest.approx(100.0)
    assert metrics.prepare_summary_for_rouge("A b . C d .") == "A b .\nC d ."


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_show_prints_every_new_task_on_mock_data(monkeypatch):
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    spot_tasks.enable_mock_data(3)
    spot_tasks.register_all()
    for name in [c4.SPAN_CORRUPTION_NAME, c4.PREFIX_LM_NAME]:
        # The vocabulary is fixed at registration: re-register under the env var.
        seqio.TaskRegistry.remove(name)
    c4.register()
    shown = {
        name: list(show_examples(name, "validation", n=2))
        for name in (
            "spot_sentiment140_v100",
            "spot_goemotions_v010",
            "spot_doc_nli_v100",
            "spot_mrqa_hotpot_qa_v100",
            "spot_mrqa_race_v100_taskless",
            "spot_samsum_v100",
            c4.SPAN_CORRUPTION_NAME,
            c4.PREFIX_LM_NAME,
        )
    }
    for name, examples in shown.items():
        # Span corruption concatenates the few short mock documents into one example.
        assert examples and all(x["inputs"] and x["targets"] for x in examples), name
    assert shown["spot_mrqa_hotpot_qa_v100"][0]["inputs"].startswith("hotpot_qa question: ")
    assert shown["spot_mrqa_race_v100_taskless"][0]["inputs"].startswith("question: ")
    assert shown["spot_samsum_v100"][0]["inputs"].startswith("samsum summarize: ")
    span = shown[c4.SPAN_CORRUPTION_NAME][0]
    assert "<extra_id_0>" in span["inputs"] and span["targets"].startswith("<extra_id_0>")
    assert "<extra_id" not in "".join(x["inputs"] for x in shown[c4.PREFIX_LM_NAME])


def test_family_mixtures_cap_the_big_sets():
    from spot_jax.data import mixtures

    spot_tasks.register_all()
    assert mixtures.rates("spot_sentiment_mixture") == {
        "spot_goemotions_v010": 43_410.0,
        "spot_sentiment140_v100": 524_288.0,  # 1.6M tweets, capped at 2**19
        "spot_glue_sst2_v200": 67_349.0,
        "spot_yelp_polarity_reviews_v020": 524_288.0,
        "spot_cr_v100": 3_020.0,  # read from SentEval's files (tasks.files)
    }
    assert set(mixtures.rates("spot_mrqa_mixture")) == {
        qa.mrqa_task_name(s) for s in qa.MRQA_IN_DOMAIN
    }
    nli_tasks = set(mixtures.rates("spot_nli_mixture"))
    assert {"spot_doc_nli_v100", "spot_snli_v110", "spot_super_glue_cb_v102"} <= nli_tasks
    assert len(mixtures.rates("spot_summarization_mixture")) == len(summarization.TASKS)


def _reregister_c4():
    for name in (c4.SPAN_CORRUPTION_NAME, c4.PREFIX_LM_NAME):
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
    c4.register()


def test_show_says_how_to_fix_an_unreadable_vocabulary(monkeypatch, tmp_path):
    spot_tasks.enable_mock_data(3)
    spot_tasks.register_all()
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(tmp_path / "missing.model"))
    _reregister_c4()
    try:
        with pytest.raises(ValueError, match="missing.model: .* set SPOT_JAX_VOCAB"):
            list(show_examples(c4.PREFIX_LM_NAME, "validation", n=1))
    finally:
        monkeypatch.undo()
        _reregister_c4()
