"""PPT pre-training formats: builders (labels, determinism, option counts), tasks, training."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spot_jax.data import ppt, ppt_choice

REPO = Path(__file__).resolve().parents[2]
SPM = Path(
    os.environ.get("SPOT_JAX_TEST_SPM")
    or Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
)


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


@pytest.mark.parametrize("queries", ["every", "one"])
def test_nsp_labels_match_the_pair_and_are_balanced(queries):
    examples = list(ppt.nsp_examples(_corpus(), seed=3, pool_size=8, queries=queries))
    # PPT: every sentence of a document is a first sentence; 'one': one per document.
    assert len(examples) == (240 if queries == "every" else 40)
    counts = sorted(Counter(x["label"] for x in examples).values())
    assert counts == ([80, 80, 80] if queries == "every" else [13, 13, 14])
    firsts = Counter()
    for x in examples:
        s1, s2 = x["inputs"].split(f" {ppt.MASK} ")
        (d1, i1), (d2, i2) = _where(s1), _where(s2)
        firsts[d1, i1] += 1
        want = 2 if d1 != d2 else (0 if abs(i1 - i2) == 1 else 1)
        assert x["label"] == want, x
        assert x["targets"] == f"{ppt.MASK} {ppt.NSP_LABEL_WORDS[want]}"
    if queries == "every":
        assert set(firsts.values()) == {1} and len(firsts) == 240
        # Neighbours on both sides: PPT's s2 is the previous sentence half of the time.
        before = [
            _where(x["inputs"].split(f" {ppt.MASK} ")[1])[1] < _where(x["inputs"])[1]
            for x in examples
            if x["label"] == 0
        ]
        assert 0.3 < sum(before) / len(before) < 0.7
    assert examples == list(ppt.nsp_examples(_corpus(), seed=3, pool_size=8, queries=queries))
    assert examples != list(ppt.nsp_examples(_corpus(), seed=4, pool_size=8, queries=queries))


def test_nsp_random_labels_are_drawn_uniformly_as_ppt():
    examples = list(ppt.nsp_examples(_corpus(), seed=0, pool_size=8, label_draw="random"))
    counts = Counter(x["label"] for x in examples)
    assert len(examples) == 240 and all(55 <= counts[k] <= 105 for k in range(3))
    assert sorted(counts.values()) == [74, 82, 84]  # not the balanced draw's 80 each
    for x in examples:  # still the label of the pair
        (d1, i1), (d2, i2) = (_where(s) for s in x["inputs"].split(f" {ppt.MASK} "))
        assert x["label"] == (2 if d1 != d2 else (0 if abs(i1 - i2) == 1 else 1))
    with pytest.raises(ValueError, match="label_draw"):
        list(ppt.nsp_examples(_corpus(), label_draw="uniform"))


def test_nsp_skips_short_documents_and_labels_a_document_cannot_support():
    docs = [["only one."], ["a0.", "a1."], ["b0.", "b1."]]
    one = ppt.nsp_examples(docs, seed=0, pool_size=2, queries="one", min_sentences=2)
    labels = [x["label"] for x in one]
    # No document has 3 sentences (label 1); the last block holds one document (no label 2).
    assert len(labels) == 2 and 1 not in labels and labels[-1] == 0
    # PPT's minimum of 5 sentences.
    assert list(ppt.nsp_examples(_corpus(8, 4), pool_size=8)) == []
    assert len(list(ppt.nsp_examples(_corpus(8, 5), pool_size=8))) == 40
    with pytest.raises(ValueError, match="queries"):
        list(ppt.nsp_examples(docs, queries="all"))


def _parse_mc(x):
    body = x["inputs"].removesuffix(f" ? The correct one is {ppt.MASK}")
    query, listed = body.split(" ? ", 1)
    letters = ppt_choice.OPTION_LETTERS[: x["num_options"]]
    return query, [o.rstrip(".") for o in _split_options(listed, letters)]


@pytest.mark.parametrize("num_options", [2, 6, 7, 16, (2, 16)])
def test_mc_follows_ppts_layout(num_options):
    examples = list(ppt_choice.mc_examples(_corpus(), seed=1, num_options=num_options, pool_size=8))
    # Every sentence of every document is a query (PPT), none is skipped on this corpus.
    assert len(examples) == 240
    counts, before = Counter(), []
    for x in examples:
        query, options = _parse_mc(x)
        n = x["num_options"]
        counts[n] += 1
        shape = ppt_choice.NSS_LAYOUT if num_options == 6 else ppt_choice.layout(n)
        assert len(options) == n == shape.num_options and len(set(options)) == n
        dq, iq = _where(query)
        answer = options[x["label"]]
        da, ia = _where(answer)
        assert da == dq and abs(ia - iq) == 1  # a neighbour, either side
        before.append(ia < iq)
        assert x["targets"] == f"{ppt.MASK} {ppt_choice.OPTION_LETTERS[x['label']]}"
        distractors = [_where(o) for o in options if o != answer]
        same = [i for d, i in distractors if d == dq]
        # Never the query or its other neighbour; exactly the layout's same-document count.
        assert len(same) == shape.same_document and all(abs(i - iq) >= 2 for i in same)
        per_doc = Counter(d for d, _ in distractors if d != dq)
        assert sorted(per_doc.values(), reverse=True) == [c for c in shape.other_documents if c]
    assert 0.3 < sum(before) / len(before) < 0.7
    if isinstance(num_options, tuple):
        # n is drawn per document, so each document's 6 queries share it.
        assert all(c % 6 == 0 for c in counts.values()) and len(counts) > 3
    else:
        assert set(counts) == {num_options}


def test_unified_layout_is_ppts_table():
    # Same-document distractors and the spread over 4 other documents, as PPT's uni data.
    same = [ppt_choice.layout(n).same_document for n in range(2, 17)]
    assert same == [1] * 5 + [2] * 4 + [3] * 6
    assert ppt_choice.layout(2).other_documents == (0, 0, 0, 0)
    assert ppt_choice.layout(8).other_documents == (2, 1, 1, 1)
    assert ppt_choice.layout(15).other_documents == (3, 3, 3, 2)
    budgets = [ppt_choice.layout(n).query_tokens for n in (2, 5, 6, 7, 8, 10, 16)]
    assert budgets == [400, 400, 300, 250, 200, 150, 150]
    assert all(ppt_choice.layout(n).num_options == n for n in range(2, 17))


def test_mc_inputs_fit_512_tokens_and_keep_the_mask():
    # Long sentences: budgets shrink with n, so 16 options of 60-word sentences still fit.
    words = " ".join(f"w{k}" for k in range(60))
    docs = [[f"d{d} s{i} {words}." for i in range(8)] for d in range(8)]
    examples = list(ppt_choice.mc_examples(docs, num_options=16, pool_size=8))
    assert len(examples) == 64
    for x in examples:
        assert len(x["inputs"].split()) <= 512 * ppt_choice.WORDS_PER_TOKEN
        assert x["inputs"].endswith(f"The correct one is {ppt.MASK}")


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_token_cutter_counts_the_vocabularys_pieces_as_ppt():
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(model_file=str(SPM))
    cut = ppt_choice.token_cutter(spm)
    long = "Internationalization considerations notwithstanding, extraordinarily verbose " * 12
    assert len(spm.encode(cut(long, 20))) <= 20 < len(spm.encode(long))
    assert cut("a short one.", 20) == "a short one."
    # 16 options: every option within Unified PPT's 20 tokens, the query within 150 (in words
    # these sentences would keep 15 and 112 words, which tokenize to far more).
    docs = [[f"Document {d} sentence {i}: {long}" for i in range(8)] for d in range(8)]
    examples = list(ppt_choice.mc_examples(docs, num_options=16, pool_size=8, cut=cut))
    assert examples
    for x in examples:
        query, rest = x["inputs"].split(" ? A. ", 1)
        options = _split_options(
            "A. " + rest.rsplit(" ? The correct one is", 1)[0], "ABCDEFGHIJKLMNOP"
        )
        assert len(spm.encode(query)) <= 150
        assert all(len(spm.encode(o.rstrip("."))) <= 20 for o in options)
    word_cut = ppt_choice.word_cutter()(long, 20)
    assert len(spm.encode(word_cut)) > 20


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
        list(ppt_choice.mc_examples(_corpus(), num_options=17))
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
        x = next(ppt.examples(fmt, _corpus(6, 6), mask="[M]", **extra))
        assert "[M]" in x["inputs"] and x["targets"].startswith("[M] ")
        assert ppt.MASK not in x["inputs"] + x["targets"]
    with pytest.raises(ValueError, match="labeler returned class 7"):
        list(ppt.cls_examples(_corpus(1, 2), lambda s: [7] * len(s)))
    with pytest.raises(ValueError, match="labels for"):
        list(ppt.cls_examples(_corpus(1, 2), lambda s: [0]))


# -- SeqIO tasks (TF) ---------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tasks_show_with_mock_data():
    pytest.importorskip("seqio")
    env = dict(os.environ, SPOT_JAX_VOCAB=str(SPM))  # budgets count the vocabulary's tokens
    out = subprocess.run(
        [sys.executable, "-m", "spot_jax.cli", "tasks", "show", "ppt_unified_c4", "--mock-data",
         "--mock-examples", "64", "-n", "3", "--split", "train"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["inputs"].endswith("? The correct one is <extra_id_0>")
        assert row["targets"] == f"<extra_id_0> {ppt_choice.OPTION_LETTERS[row['label']]}"


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


@pytest.mark.tf
def test_overlong_inputs_lose_their_start_not_the_mask():
    seqio = pytest.importorskip("seqio")
    import tensorflow as tf

    from spot_jax.data.tasks import ppt as ppt_tasks

    features = {"inputs": seqio.Feature(seqio.PassThroughVocabulary(100, eos_id=1), add_eos=True)}
    ds = tf.data.Dataset.from_tensors({"inputs": tf.range(2, 12, dtype=tf.int64)})
    trimmed = ppt_tasks.keep_input_end(ds, features, {"inputs": 6, "targets": 2})
    trimmed = seqio.preprocessors.append_eos_after_trim(trimmed, features, {"inputs": 6})
    # The template's end (options, then the mask) is kept; SeqIO alone would keep 2..6.
    assert next(trimmed.as_numpy_iterator())["inputs"].tolist() == [7, 8, 9, 10, 11, 1]
    short = ppt_tasks.keep_input_end(ds, features, None)
    assert next(short.as_numpy_iterator())["inputs"].tolist() == list(range(2, 12))
