"""CR, αNLI and CxC read from their published files: strings, splits, errors, few-shot, mock
data."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from catalog_checks import check_taskless_twins, check_tokenized_examples  # noqa: E402

from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples  # noqa: E402
from spot_jax.data.tasks import base, few_shot, files  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
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
        assert all(files.hash_split(t) == split for t in names)
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


def _write_cxc(root, pairs):
    """CxC's STS csv files (pairs split over both) + a Karpathy-style dataset_coco.json."""
    folder = root / "cxc"
    folder.mkdir()
    captions = {sid: f"caption {sid} of a dog ." for p in pairs for sid in p[:2]}
    images = [
        {"split": "val", "sentids": [sid], "sentences": [{"sentid": sid, "raw": f" {text} "}]}
        for sid, text in captions.items()
    ]
    images.append({"split": "train", "sentids": [9], "sentences": [{"sentid": 9, "raw": "x"}]})
    (folder / "dataset_coco.json").write_text(json.dumps({"images": images}))
    header = "caption1,caption2,agg_score,sampling_method\n"
    for name, part in (("sts_val.csv", pairs[::2]), ("sts_test.csv", pairs[1::2])):
        lines = [
            f"COCO_val2014:sentid:{a},COCO_val2014:sentid:{b},{s},c2c_isim\n" for a, b, s in part
        ]
        (folder / name).write_text(header + "".join(lines))
    return captions


def test_cxc_pairs_captions_and_scores_into_a_hash_split(data_dir):
    pairs = [(i, 100 + i, round(i * 0.13 % 5, 2)) for i in range(60)]
    captions = _write_cxc(data_dir, pairs)
    want = {(captions[a], captions[b]): s for a, b, s in pairs}
    got = {}
    for split in ("train", "validation", "test"):
        for x in _raw(files.CXC_NAME, split):
            key = (x["sentence1"].decode(), x["sentence2"].decode())
            ids = key[0].split()[1], key[1].split()[1]
            assert (
                files.hash_split(f"COCO_val2014:sentid:{ids[0]},COCO_val2014:sentid:{ids[1]}")
                == split
            )
            got[key] = float(x["label"])
    assert got.keys() == want.keys()  # every pair of both files, once
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-6)
    shown = show_examples(files.CXC_NAME, "train", n=60)
    one = next(x for x in shown if x["inputs"].startswith("cxc sentence1: caption 7 "))
    assert one["inputs"] == "cxc sentence1: caption 7 of a dog . sentence2: caption 107 of a dog ."
    assert one["targets"] == "1.0"  # 7 * 0.13 = 0.91, to the nearest 0.2


def test_cxc_caption_missing_from_the_coco_file_is_named(data_dir):
    _write_cxc(data_dir, [(1, 2, 3.0), (3, 4, 1.0)] * 6)
    with (data_dir / "cxc" / "sts_val.csv").open("a") as f:
        f.write("COCO_val2014:sentid:777,COCO_val2014:sentid:1,2.0,c2c_isim\n")
    with pytest.raises(ValueError, match=r"COCO_val2014:sentid:777.*dataset_coco.json"):
        for split in ("train", "validation", "test"):
            _raw(files.CXC_NAME, split)


def test_missing_files_say_which_and_where(data_dir, monkeypatch):
    monkeypatch.setattr(spot_tasks, "mock_data_enabled", lambda: False)
    with pytest.raises(FileNotFoundError, match=r"custrev.pos, custrev.neg from .*/cr/"):
        _raw(files.CR_NAME, "train")
    with pytest.raises(FileNotFoundError, match=r"SPOT_JAX_DATA_DIR"):
        _raw(files.ALPHA_NLI_NAME, "train")
    with pytest.raises(FileNotFoundError, match=r"sts_val.csv, sts_test.csv, dataset_coco.json"):
        _raw(files.CXC_NAME, "train")


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
    check_taskless_twins(
        {files.CR_NAME: "cr", files.ALPHA_NLI_NAME: "alpha_nli", files.CXC_NAME: "cxc"}
    )


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_yield_tokenized_examples_under_mock_data(mock_data, tmp_path, monkeypatch):
    monkeypatch.setenv(files.DATA_DIR_ENV_VAR, str(tmp_path))
    check_tokenized_examples(
        (files.CR_NAME, files.ALPHA_NLI_NAME, files.CXC_NAME), monkeypatch, SPM
    )
