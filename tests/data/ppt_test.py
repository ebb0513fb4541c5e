"""PPT pre-training formats: builders (labels, determinism, option counts), tasks, training."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spot_jax.data import ppt

REPO = Path(__file__).resolve().parents[2]
SPM = Path(os.environ.get("SPOT_JAX_TEST_SPM", "/work/shared/fixtures/t5_sentencepiece.model"))


def _corpus(num_docs=40, sentences=6):
    # Every sentence names its document and position, so a pair's relation can be read back.
    return [[f"d{d} s{i} words here." for i in range(sentences)] for d in range(num_docs)]


def _where(sentence):
    d, s = sentence.split()[:2]
    return int(d[1:]), int(s[1:])


def test_sentence_splitter_is_deterministic_and_chunks_long_sentences():
    split = ppt.SentenceSplitter(max_words=4)
    text = 'He said "go." Then left! Why? one two three four five six\nnext line'
    assert split(text) == [
        'He said "go."',
        "Then left!",
        "Why?",
        "one two three four",
        "five six",
        "next line",
    ]
    assert ppt.SentenceSplitter(min_words=2)("Yes. Two words. x") == ["Two words."]
    assert ppt.SentenceSplitter()("Dr. Smith met J. Doe at 5 p.m. today. Then Mr.\nNext.") == [
        "Dr. Smith met J. Doe at 5 p.m. today.",
        "Then Mr.",
        "Next.",
    ]
    with pytest.raises(ValueError, match="min_words <= max_words"):
        ppt.SentenceSplitter(min_words=5, max_words=2)


def test_nsp_labels_match_the_pair_and_are_balanced():
    examples = list(ppt.nsp_examples(_corpus(), seed=3, pool_size=8))
    assert len(examples) == 40
    assert sorted(Counter(x["label"] for x in examples).values()) == [13, 13, 14]
    for x in examples:
        s1, s2 = x["inputs"].split(f" {ppt.MASK} ")
        (d1, i1), (d2, i2) = _where(s1), _where(s2)
        want = 2 if d1 != d2 else (0 if abs(i1 - i2) == 1 else 1)
        assert x["label"] == want, x
        assert x["targets"] == f"{ppt.MASK} {ppt.NSP_LABEL_WORDS[want]}"
    assert examples == list(ppt.nsp_examples(_corpus(), seed=3, pool_size=8))
    assert examples != list(ppt.nsp_examples(_corpus(), seed=4, pool_size=8))


def test_nsp_skips_labels_a_document_cannot_support():
    docs = [["only one."], ["a0.", "a1."], ["b0.", "b1."]]
    labels = [x["label"] for x in ppt.nsp_examples(docs, seed=0, pool_size=2)]
    # No document has 3 sentences (label 1); the last block holds one document (no label 2).
    assert 1 not in labels and labels[-1] == 0


@pytest.mark.parametrize("num_options", [2, 6, 16, (2, 16)])
def test_mc_answer_is_the_next_sentence(num_options):
    examples = list(ppt.mc_examples(_corpus(), seed=1, num_options=num_options, pool_size=8))
    assert len(examples) == 40
    counts = set()
    for x in examples:
        body = x["inputs"].removesuffix(f" ? The correct one is {ppt.MASK}")
        query, listed = body.split(" ? ", 1)
        n = x["num_options"]
        counts.add(n)
        letters = ppt.OPTION_LETTERS[:n]
        options = [o.rstrip(".") for o in _split_options(listed, letters)]
        assert len(options) == n and len(set(options)) == n
        dq, iq = _where(query)
        answer = options[x["label"]]
        assert _where(answer) == (dq, iq + 1)
        assert x["targets"] == f"{ppt.MASK} {letters[x['label']]}"
        same = [o for o in options if _where(o)[0] == dq and o != answer]
        assert len(same) == (1 if n > 2 else 0)
    if isinstance(num_options, tuple):
        assert min(counts) >= 2 and max(counts) <= 16 and len(counts) > 5
    else:
        assert counts == {num_options}


def _split_options(listed, letters):
    parts = []
    rest = listed
    for k, letter in enumerate(letters):
        assert rest.startswith(f"{letter}. ")
        rest = rest[len(letter) + 2 :]
        if k + 1 < len(letters):
            option, rest = rest.split(f" {letters[k + 1]}. ", 1)
            rest = f"{letters[k + 1]}. " + rest
        else:
            option = rest
        parts.append(option)
    return parts


def test_mc_is_deterministic_and_rejects_bad_counts():
    a = list(ppt.examples("unified", _corpus(), seed=5, pool_size=8))
    assert a == list(ppt.examples("unified", _corpus(), seed=5, pool_size=8))
    with pytest.raises(ValueError, match="num_options"):
        list(ppt.mc_examples(_corpus(), num_options=17))
    with pytest.raises(ValueError, match="unknown PPT format"):
        ppt.examples("nss", _corpus())


def test_cls_uses_the_labeler_and_drops_minus_one():
    def labeler(sentences):
        return [-1 if "s0" in s else len(s.split()[1]) % 5 for s in sentences]

    examples = list(ppt.cls_examples(_corpus(3, 3), labeler, batch_size=4))
    assert len(examples) == 6
    for x in examples:
        assert x["inputs"].endswith(f" {ppt.MASK}")
        assert x["targets"] == f"{ppt.MASK} {ppt.SENTIMENT_LABEL_WORDS[x['label']]}"
    # A vocabulary without T5's sentinels passes its own mask token.
    for fmt, extra in (("nsp3", {}), ("unified", {}), ("cls", {"labeler": labeler})):
        x = next(ppt.examples(fmt, _corpus(3, 3), mask="[M]", **extra))
        assert "[M]" in x["inputs"] and x["targets"].startswith("[M] ")
        assert ppt.MASK not in x["inputs"] + x["targets"]
    with pytest.raises(ValueError, match="labeler returned class 7"):
        list(ppt.cls_examples(_corpus(1, 2), lambda s: [7] * len(s)))
    with pytest.raises(ValueError, match="labels for"):
        list(ppt.cls_examples(_corpus(1, 2), lambda s: [0]))


# -- SeqIO tasks (TF) ---------------------------------------------------------------------------


@pytest.mark.tf
def test_tasks_show_with_mock_data():
    pytest.importorskip("seqio")
    out = subprocess.run(
        [sys.executable, "-m", "spot_jax.cli", "tasks", "show", "ppt_unified_c4", "--mock-data",
         "--mock-examples", "8", "-n", "3", "--split", "train"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["inputs"].endswith("? The correct one is <extra_id_0>")
        assert row["targets"] == f"<extra_id_0> {ppt.OPTION_LETTERS[row['label']]}"


@pytest.mark.tf
@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_two_train_steps_on_a_ppt_task(tmp_path):
    env = dict(os.environ, SPOT_JAX_TFDS_MOCK="8", SPOT_JAX_VOCAB=str(SPM))
    cmd = [
        sys.executable, "-m", "spot_jax.cli", "train",
        "--gin_file=test/tiny_prompt.gin", "--gin_file=models/t5_1_1/t5x_test_tiny.gin",
        "--gin_file=ppt/pretrain_nsp3.gin",
        f"--gin.MODEL_DIR={tmp_path / 'run'}",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
        "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.EVAL_STEPS=1",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and "eval/loss" in records[-1]
    assert (tmp_path / "run" / "numpy_checkpoints" / "checkpoint_2").is_dir()
