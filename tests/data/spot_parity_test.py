"""Catalog parity with T5 / SPoT: WSC simple, mixture weights, "All", MNLI names, few-shot."""

import math

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from spot_jax.data import metrics, mixtures, postprocessors, preprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples  # noqa: E402
from spot_jax.data.tasks import base, c4, few_shot, glue, super_glue, translation  # noqa: E402


def _wsc(examples, train):
    ds = tf.data.Dataset.from_tensor_slices(examples)
    out = preprocessors.wsc_simple(ds, correct_referent_only=train)
    return [
        (x["inputs"].decode(), x["targets"].decode(), x["label"]) for x in out.as_numpy_iterator()
    ]


WSC = {
    "text": [
        "Mark told Pete many lies about himself , which Pete included in his book .",
        "Mark told Pete many lies about himself , which Pete included in his book .",
        'John laughed. "Good for him," he said.',
        "Some day they might want to use it , but not now.",
    ],
    "span1_text": ["Mark", "Pete", "the pony", "the pebble"],
    "span2_text": ["his", "his", "him", "it"],
    # The last two as WSC's train split has them: a pronoun glued to '"', an index one short.
    "span2_index": [12, 12, 4, 6],
    "label": [0, 1, 1, 1],
    "idx": [0, 1, 2, 3],
}


def test_wsc_simple_marks_the_pronoun_and_targets_the_candidate():
    marked = "wsc: Mark told Pete many lies about himself , which Pete included in *his* book ."
    assert _wsc(WSC, train=False) == [
        (marked, "Mark", 0),
        (marked, "Pete", 1),
        ('wsc: John laughed. "Good for *him* ," he said.', "the pony", 1),
        ("wsc: Some day they might want to use *it* , but not now.", "the pebble", 1),
    ]
    # Training keeps the correct referents only (T5's correct_referent_only=True).
    assert [t for _, t, _ in _wsc(WSC, train=True)] == ["Pete", "the pony", "the pebble"]


def test_wsc_simple_postprocessor_is_t5s():
    def predicted(text, candidate):
        example = {"targets_pretokenized": candidate.encode(), "label": 1}
        return postprocessors.wsc_simple(text, example=example, is_target=False)

    assert postprocessors.wsc_simple("x", example={"label": 1}, is_target=True) == 1
    assert predicted("The Fuzzy Bunny", "bunny") == 1  # determiners and case ignored
    assert predicted("bunny", "the fuzzy bunny") == 1  # either word set may contain the other
    assert predicted("Bob", "Bob's hat") == 0  # only one is possessive
    assert predicted("the dog", "the cat") == 0
    assert predicted(" the ", "the cat") == -1  # nothing left: never equals a label


def test_super_glue_mixture_weighs_wsc_and_record_as_t5():
    spot_tasks.register_all()
    rates = mixtures.rates("spot_super_glue_mixture")
    # T5's SUPER_GLUE_WEIGHT_MAPPING (less DPR and the diagnostic sets).
    assert rates == {
        "spot_super_glue_boolq_v102": 9_427.0,
        "spot_super_glue_cb_v102": 250.0,
        "spot_super_glue_copa_v102": 400.0,
        "spot_super_glue_multirc_v102": 27_243.0,
        "spot_super_glue_record_v102": 138_854.0,
        "spot_super_glue_rte_v102": 2_490.0,
        "spot_super_glue_wic_v102": 5_428.0,
        "spot_super_glue_wsc_v102_simple_train": 259.0,
        "spot_super_glue_wsc_v102_simple_eval": 0.0,
    }
    assert seqio.get_mixture_or_task(super_glue.WSC_SIMPLE_TRAIN).splits == ("train",)
    eval_task = seqio.get_mixture_or_task(super_glue.WSC_SIMPLE_EVAL)
    assert set(eval_task.splits) == {"validation", "test"}


def test_all_mixture_is_c4_and_every_supervised_task_once():
    spot_tasks.register_all()
    rates = mixtures.rates("spot_all_mixture")
    assert len(rates) == len(mixtures.ALL_TASKS) == len(set(mixtures.ALL_TASKS))
    assert mixtures.ALL_TASKS[0] == c4.PREFIX_LM_NAME
    assert rates[c4.PREFIX_LM_NAME] == 2.0**19  # 365M documents, capped like every task
    supervised = set(mixtures.rates("spot_glue_super_glue_mixture"))
    for family in mixtures.FAMILY_TASKS:
        supervised |= set(mixtures.rates(f"spot_{family}_mixture"))
    assert set(rates) == supervised | {c4.PREFIX_LM_NAME}
    assert translation.task_name(("16", "ro")) in rates and "spot_snli_v110" in rates


def test_spot_mnli_names_and_mixture():
    spot_tasks.register_all()
    splits = {n: seqio.get_mixture_or_task(n).splits for n in glue.SPOT_MNLI_TASKS}
    assert splits == {
        "spot_glue_mnli_train_v200": ("train",),
        "spot_glue_mnli_validation_matched_v200": ("validation",),
        "spot_glue_mnli_validation_mismatched_v200": ("validation",),
    }
    matched = base.SPECS["spot_glue_mnli_validation_matched_v200"].splits["validation"]
    assert matched == "validation_matched"
    rates = mixtures.rates("spot_glue_mnli_and_dev_v200")
    assert rates == {
        "spot_glue_mnli_train_v200": 392_702.0,
        "spot_glue_mnli_validation_matched_v200": 0.0,
        "spot_glue_mnli_validation_mismatched_v200": 0.0,
    }


def test_translation_strings_are_t5s():
    spot_tasks.register_all()
    ds = tf.data.Dataset.from_tensor_slices({"en": ["That is good."], "de": ["Das ist gut."]})
    out = base.SPECS["spot_wmt14_ende_v100"].text_preprocessor(ds)
    assert [(x["inputs"].decode(), x["targets"].decode()) for x in out.as_numpy_iterator()] == [
        ("translate English to German: That is good.", "Das ist gut.")
    ]
    assert base.SPECS["spot_wmt16_enro_v100"].tfds_name == "wmt16_translate/ro-en:1.0.0"
    assert base.SPECS["spot_wmt16_enro_v100"].metric_fns == [metrics.bleu]


def test_bleu_is_corpus_bleu_by_hand():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 (the second 'the' is clipped), no brevity penalty.
    got = metrics.bleu(["the cat sat on a mat ."], ["the cat sat on the mat ."])["bleu"]
    want = 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert got == pytest.approx(want, rel=1e-6)
    assert metrics.bleu(["Das ist gut."], ["Das ist gut."])["bleu"] == pytest.approx(100.0)
    # Case-sensitive, and a short prediction pays the brevity penalty exp(1 - 8/4).
    assert metrics.bleu(["das ist gut ."], ["Das ist gut ."])["bleu"] < 100.0
    short = metrics.bleu(["a b c d e f g h"], ["a b c d"])["bleu"]
    assert short == pytest.approx(100 * math.exp(1 - 8 / 4), rel=1e-6)


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(40)


def test_few_shot_sentiment140_balances_its_polarity_classes(mock_data):
    spot_tasks.register_all()
    spec = base.SPECS["spot_sentiment140_v100"]
    tweets = tf.data.Dataset.from_tensor_slices(
        {"text": [f"t{i}" for i in range(12)], "polarity": [0, 4, 2, 0, 4, 2] * 2}
    )
    subset = preprocessors.few_shot(
        tweets,
        k=4,
        seed=0,
        num_classes=len(spec.label_names),
        label_key=spec.label_key,
        class_values=spec.few_shot_classes,
    )
    # Balanced over polarity 0 and 4 (train has no neutral tweets), 2 each; 2 never drawn.
    assert sorted(int(x["polarity"]) for x in subset.as_numpy_iterator()) == [0, 0, 4, 4]
    # The registered variant reads 'polarity' from TFDS (it failed with KeyError: 'label').
    name = few_shot.register_few_shot("spot_sentiment140_v100", k=4, seed=0)
    assert all(x["inputs"].startswith("sentiment140 text: ") for x in show_examples(name, "train"))


def test_few_shot_refuses_tasks_without_a_train_split(mock_data):
    spot_tasks.register_all()
    for task in ("spot_glue_mnli_mismatched_v200", super_glue.WSC_SIMPLE_EVAL):
        with pytest.raises(ValueError, match="no train and validation splits"):
            few_shot.register_few_shot(task, k=4, seed=0)
    with pytest.raises(ValueError, match="spot_glue_mnli_v200"):
        few_shot.resolve("spot_glue_mnli_mismatched_v200_4shot_seed0")
