"""PPT's downstream formats: exact strings, fitting long fields, answers, mock data, few-shot."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import RACE_ARTICLE  # noqa: E402

from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.tasks import base, few_shot, reading  # noqa: E402
from spot_jax.data.tasks import ppt_downstream as pd  # noqa: E402

SPM = Path(
    os.environ.get("SPOT_JAX_TEST_SPM")
    or Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
)
X = "<extra_id_0>"
CORRECT = f"? The correct one is {X}"


def _strings(task, fmt, examples):
    ds = pd.classification(tf.data.Dataset.from_tensor_slices(examples), task=task, fmt=fmt)
    return [(x["inputs"].decode(), x["targets"].decode()) for x in ds.as_numpy_iterator()]


def test_ppt_formats_match_pre_training():
    sst2 = {"sentence": ["a gem .", "dull"], "label": [1, 0]}
    assert _strings("sst2", "ppt", sst2) == [
        (f"a gem . {X}", f"{X} good"),
        (f"dull {X}", f"{X} bad"),
    ]
    # RTE: premise first (nsp3's 's1 <X> s2'); CB: hypothesis first, as PPT's data code has it.
    pair = {"premise": ["P one."], "hypothesis": ["H one."], "label": [1]}
    assert _strings("rte", "ppt", pair) == [(f"P one. {X} H one.", f"{X} no")]
    cb = {**pair, "label": [2]}
    assert _strings("cb", "ppt", cb) == [(f"H one. {X} P one.", f"{X} maybe")]
    boolq = {"question": ["is it"], "passage": ["It is."], "label": [1]}
    assert _strings("boolq", "ppt", boolq) == [(f"is it {X} It is.", f"{X} yes")]
    # Test splits have no labels (-1): dropped.
    assert _strings("rte", "ppt", {**pair, "label": [-1]}) == []


def test_unified_formats_list_the_label_words_as_options():
    sst2 = {"sentence": ["a gem ."], "label": [1]}
    assert _strings("sst2", "unified", sst2) == [(f"a gem ? A. bad. B. good. {CORRECT}", f"{X} B")]
    pair = {"premise": ["P one."], "hypothesis": ["H one?"], "label": [0]}
    assert _strings("rte", "unified", pair) == [
        (f"H one ? P one . A. no. B. yes. {CORRECT}", f"{X} B")
    ]
    # CB's classes (entailment, contradiction, neutral) as Unified PPT's A. no B. maybe C. yes.
    cb = [_strings("cb", "unified", {**pair, "label": [c]})[0][1] for c in (0, 1, 2)]
    assert cb == [f"{X} C", f"{X} A", f"{X} B"]
    boolq = {"question": ["is it"], "passage": ["It is."], "label": [0]}
    assert _strings("boolq", "unified", boolq) == [
        (f"is it ? It is . A. no. B. yes. {CORRECT}", f"{X} A")
    ]


def test_hybrid_formats_are_ppts_hard_templates():
    # PPT's data code without a soft prompt (data_utils/*Datasets.py): Hybrid PT / PPT.
    sst2 = {"sentence": ["a gem ."], "label": [1]}
    assert _strings("sst2", "hybrid", sst2) == [(f"a gem . It was {X}.", f"{X} good")]
    pair = {"premise": ["P one."], "hypothesis": ["H one"], "label": [1]}
    assert _strings("rte", "hybrid", pair) == [(f"H one? {X}. P one.", f"{X} no")]
    assert _strings("cb", "hybrid", {**pair, "label": [2]}) == [
        (f"H one? {X}. P one.", f"{X} maybe")
    ]
    boolq = {"question": ["is it"], "passage": ["It is."], "label": [0]}
    assert _strings("boolq", "hybrid", boolq) == [(f"question: is it? {X}. It is.", f"{X} no")]
    with pytest.raises(ValueError, match="fmt must be one of"):
        _strings("rte", "hard", pair)


def test_sst5_formats_use_ppts_five_label_words():
    sst5 = {"sentence": ["a gem ."], "label": [4]}
    assert _strings("sst5", "ppt", sst5) == [(f"a gem . {X}", f"{X} great")]
    listed = "A. terrible. B. bad. C. maybe. D. good. E. great."
    assert _strings("sst5", "unified", sst5) == [(f"a gem ? {listed} {CORRECT}", f"{X} E")]
    assert _strings("sst5", "hybrid", sst5) == [(f"a gem . It was {X}.", f"{X} great")]


def test_sst5_reads_the_treebanks_ptb_files(tmp_path, monkeypatch):
    from spot_jax.data.tasks import files

    assert files.ptb_sentence("(3 (2 It) (4 (4 (2 -LRB-) (4 works) (2 -RRB-)) (2 .)))") == (
        "It ( works ) .",
        3,
    )
    with pytest.raises(ValueError, match="not a labelled PTB tree"):
        files.ptb_sentence("It works.")
    folder = tmp_path / "sst5"
    folder.mkdir()
    trees = [f"({c} (2 film) (2 {c}))" for c in range(5)] * 4  # 4 sentences per class
    for name in files.SST5_FILES.values():
        (folder / name).write_text("\n".join(trees) + "\n")
    monkeypatch.setenv(files.DATA_DIR_ENV_VAR, str(tmp_path))
    spot_tasks.register_all()
    rows = base.data_source(base.SPECS["ppt_sst5"]).get_dataset("validation", shuffle=False)
    assert [(x["sentence"], x["label"]) for x in rows.as_numpy_iterator()][:2] == [
        (b"film 0", 0),
        (b"film 1", 1),
    ]
    # Few-shot sets balance the 5 classes.
    name = few_shot.register_few_shot("ppt_sst5", k=10, seed=0)
    from spot_jax.data.commands import show_examples

    targets = sorted(x["targets"] for x in show_examples(name, "train", n=10))
    assert targets == sorted(f"{X} {w}" for w in ("terrible", "bad", "maybe", "good", "great") * 2)


def test_race_makes_one_example_per_question():
    ds = pd.race(reading.race_questions(tf.data.Dataset.from_tensor_slices(RACE_ARTICLE)))
    rows = [
        (x["inputs"].decode(), x["targets"].decode(), x["label"]) for x in ds.as_numpy_iterator()
    ]
    first = "The cat sat. ; Who sat ? A. a dog. B. the cat. C. a man. D. nobody."
    second = "The cat sat. ; Where _ ? A. mat. B. hat. C. bed. D. chair."
    assert rows == [(f"{first} {CORRECT}", f"{X} B", 1), (f"{second} {CORRECT}", f"{X} D", 3)]


def test_answers_map_back_to_class_ids():
    specs = {s.name: s for s in pd.specs()}
    rte = specs["ppt_rte"]
    assert rte.label_names == (f"{X} yes", f"{X} no")
    assert [rte.postprocess_fn(t) for t in (f"{X} yes", f"{X} no", b"<extra_id_0> no", "yes!")] == [
        0, 1, 1, -1
    ]  # fmt: skip
    cb_uni = specs["ppt_cb_unified"]
    assert cb_uni.label_names == (f"{X} C", f"{X} A", f"{X} B")
    assert cb_uni.postprocess_fn(f"{X} A") == 1
    # RACE's classes are the answer letters (few-shot balances questions over them).
    assert specs["ppt_race_high"].label_names == tuple(f"{X} {c}" for c in "ABCD")
    assert not any(s.taskless_twin for s in specs.values())


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_a_long_passage_is_cut_not_the_question_or_the_options():
    vocabulary = seqio.SentencePieceVocabulary(str(SPM), extra_ids=100)
    features = {"inputs": seqio.Feature(vocabulary, add_eos=True)}
    passage = " ".join(f"word{i}" for i in range(300))
    boolq = {"question": ["is it"], "passage": [passage], "label": [1]}
    ds = pd.classification(tf.data.Dataset.from_tensor_slices(boolq), task="boolq", fmt="unified")
    ds = seqio.preprocessors.tokenize(ds, features)
    ds = pd.fit_inputs(ds, features, {"inputs": 64})
    ds = seqio.preprocessors.append_eos_after_trim(ds, features, {"inputs": 64})
    x = next(ds.as_numpy_iterator())
    assert len(x["inputs"]) == 64 and not set(pd._PARTS) & set(x)
    text = vocabulary.decode(x["inputs"][:-1].tolist())
    assert text.startswith("is it ? word0 word1") and text.endswith(f"B. yes. {CORRECT}")
    # Short enough: nothing cut, the same ids as tokenizing the whole input.
    ds = pd.classification(tf.data.Dataset.from_tensor_slices(boolq), task="boolq", fmt="unified")
    whole = next(seqio.preprocessors.tokenize(ds, features).as_numpy_iterator())
    fitted = pd.fit_inputs(seqio.preprocessors.tokenize(ds, features), features, {"inputs": 999})
    fitted = next(fitted.as_numpy_iterator())
    assert fitted["inputs"].tolist() == whole["inputs"].tolist()


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(8)


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
@pytest.mark.parametrize(
    "name",
    [
        "ppt_rte",
        "ppt_cb_unified",
        "ppt_sst2",
        "ppt_sst5_unified",
        "ppt_boolq_hybrid",
        "ppt_race_middle",
    ],
)
def test_tasks_yield_fitted_examples_under_mock_data(mock_data, monkeypatch, name):
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    for spec in pd.specs():  # tasks read the vocabulary when registered
        if spec.name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(spec.name)
    pd.register()
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset({"inputs": 24, "targets": 4}, split="validation", shuffle=False)
    rows = list(ds.as_numpy_iterator())
    assert rows, name
    mask = task.output_features["targets"].vocabulary.encode(X)[0]
    for x in rows:
        assert len(x["inputs"]) <= 24 and x["inputs"][-1] == 1
        assert mask in x["inputs"].tolist() and x["targets"][0] == mask


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_few_shot_variants_keep_the_format(mock_data, monkeypatch):
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    pd.register()
    name = few_shot.resolve("ppt_boolq_unified_4shot_seed0")
    assert name == "ppt_boolq_unified_4shot_seed0"
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 32, "targets": 4}, split="train", shuffle=False
    )
    rows = list(ds.as_numpy_iterator())
    assert 0 < len(rows) <= 4
    for x in rows:
        assert x["inputs_pretokenized"].decode().endswith(CORRECT)
        assert len(x["inputs"]) <= 32 and "inputs_body" not in x
    assert base.SPECS["ppt_boolq_unified"].token_preprocessors == (pd.fit_inputs,)
