"""CR and αNLI read from their published files: strings, splits, errors, few-shot, mock data."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import check_taskless_twins, check_tokenized_examples  # noqa: E402

from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples  # noqa: E402
from spot_jax.data.tasks import base, few_shot, files  # noqa: E402

SPM = Path("/work/shared/fixtures/t5_sentencepiece.model")
POSITIVE = [f"the zoom on camera {i} is great ." for i in range(40)]
NEGATIVE = [f"battery {i} died after a week ." for i in range(30)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_ENV_VAR, str(tmp_path))
    spot_tasks.register_all()
    return tmp_path


def _write_cr(root):
    (root / "cr").mkdir()
    (root / "cr" / "custrev.pos").write_text("\n".join(POSITIVE) + "\n\n")
    (root / "cr" / "custrev.neg").write_text("\n".join(NEGATIVE) + "\n")


def _raw(name, split):
    source = base.data_source(base.SPECS[name])
    return list(source.get_dataset(split=split, shuffle=False).as_numpy_iterator())


def test_cr_reads_senteval_files_into_a_stable_hash_split(data_dir):
    _write_cr(data_dir)
    splits = {s: _raw(files.CR_NAME, s) for s in ("train", "validation", "test")}
    sentences = {s: [x["sentence"].decode() for x in rows] for s, rows in splits.items()}
    assert sorted(sum(sentences.values(), [])) == sorted(POSITIVE + NEGATIVE)  # each once
    for split, names in sentences.items():
        assert all(files.cr_split(t) == split for t in names)
    assert splits["train"] and splits["validation"] and splits["test"]
    labels = {x["sentence"].decode(): x["label"] for rows in splits.values() for x in rows}
    assert all(labels[t] == 1 for t in POSITIVE) and all(labels[t] == 0 for t in NEGATIVE)
    shown = show_examples(files.CR_NAME, "train", n=40)
    pos = next(x for x in shown if x["inputs"].endswith("is great ."))
    assert pos["inputs"].startswith("cr sentence: the zoom on camera ")
    assert pos["targets"] == "positive"


def test_alpha_nli_reads_jsonl_and_labels(data_dir):
    folder = data_dir / "alpha_nli"
    folder.mkdir()
    rows = [
        {"story_id": "s", "obs1": "Ann left early.", "obs2": "She made the train.",
         "hyp1": "She ran.", "hyp2": "She slept in."},
        {"story_id": "t", "obs1": "Bo cooked.", "obs2": "Dinner burned.",
         "hyp1": "He watched TV.", "hyp2": "He tasted it."},
    ]  # fmt: skip
    for stem in ("train", "dev"):
        (folder / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{stem}-labels.lst").write_text("1\n1\n")
    shown = show_examples(files.ALPHA_NLI_NAME, "validation", n=2)
    assert [(x["inputs"], x["targets"]) for x in shown] == [
        (
            "alpha_nli obs1: Ann left early. hyp1: She ran. hyp2: She slept in. "
            "obs2: She made the train.",
            "She ran.",
        ),
        (
            "alpha_nli obs1: Bo cooked. hyp1: He watched TV. hyp2: He tasted it. "
            "obs2: Dinner burned.",
            "He watched TV.",
        ),
    ]
    (folder / "dev-labels.lst").write_text("1\n")
    with pytest.raises(ValueError, match="2 examples but .* 1 labels"):
        _raw(files.ALPHA_NLI_NAME, "validation")


def test_missing_files_say_which_and_where(data_dir, monkeypatch):
    monkeypatch.setattr(spot_tasks, "mock_data_enabled", lambda: False)
    with pytest.raises(FileNotFoundError, match=r"custrev.pos, custrev.neg from .*/cr/"):
        _raw(files.CR_NAME, "train")
    with pytest.raises(FileNotFoundError, match=r"SPOT_JAX_DATA_DIR"):
        _raw(files.ALPHA_NLI_NAME, "train")


def test_cr_few_shot_sets_come_from_the_files(data_dir):
    _write_cr(data_dir)
    name = few_shot.register_few_shot(files.CR_NAME, k=8, seed=0)
    train = [x["targets"] for x in show_examples(name, "train", n=8)]
    assert len(train) == 8 and sorted(train) == ["negative"] * 4 + ["positive"] * 4


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)  # the process's first call sets the size; any size works


def test_absent_files_serve_mock_examples_under_mock_data(mock_data, tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_ENV_VAR, str(tmp_path))  # empty
    check_taskless_twins({files.CR_NAME: "cr", files.ALPHA_NLI_NAME: "alpha_nli"})


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_yield_tokenized_examples_under_mock_data(mock_data, tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_ENV_VAR, str(tmp_path))
    check_tokenized_examples((files.CR_NAME, files.ALPHA_NLI_NAME), monkeypatch, SPM)
