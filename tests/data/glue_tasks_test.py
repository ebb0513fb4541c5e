"""GLUE/SuperGLUE tasks: T5's exact strings, every task through the pipeline, mixtures, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from spot_jax.data import mixtures, preprocessors  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.commands import show_examples, tasks_main  # noqa: E402
from spot_jax.data.tasks import base, few_shot, glue, super_glue  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
SPM = Path(os.environ.get("SPOT_JAX_TEST_SPM", SPM))


def _run(preprocessor, example):
    ds = tf.data.Dataset.from_tensors(example)
    out = list(preprocessor(ds).as_numpy_iterator())
    return [(x["inputs"].decode(), x["targets"].decode()) for x in out]


def _text_pp(task_name):
    spot_tasks.register_all()
    return base.SPECS[task_name].text_preprocessor


GLUE_CASES = [
    (
        "rte",
        {"sentence1": "A cat sat.", "sentence2": "A cat is sitting.", "label": 0, "idx": 3},
        "rte sentence1: A cat sat. sentence2: A cat is sitting.",
        "entailment",
    ),
    (
        "qqp",
        {
            "question1": "Why do I easily get bored of my friends?",
            "question2": "Why do I get bored of friends so quickly?",
            "label": 1,
            "idx": 10,
        },
        "qqp question1: Why do I easily get bored of my friends? question2: "
        "Why do I get bored of friends so quickly?",
        "duplicate",
    ),
    (
        "mnli",
        {"premise": "P.", "hypothesis": "H.", "label": -1, "idx": 0},
        "mnli hypothesis: H. premise: P.",
        "<unk>",
    ),
    ("sst2", {"sentence": "good", "label": 1, "idx": 0}, "sst2 sentence: good", "positive"),
    ("cola", {"sentence": "Him went.", "label": 0, "idx": 0}, "cola sentence: Him went.",
     "unacceptable"),
    (
        "qnli",
        {"question": "Q?", "sentence": "S.", "label": 1, "idx": 0},
        "qnli question: Q? sentence: S.",
        "not_entailment",
    ),
    (
        "stsb",
        {"sentence1": "Three more US soldiers killed in Afghanistan",
         "sentence2": "NATO Soldier Killed in Afghanistan", "label": 1.8, "idx": 0},
        "stsb sentence1: Three more US soldiers killed in Afghanistan "
        "sentence2: NATO Soldier Killed in Afghanistan",
        "1.8",
    ),
    ("stsb", {"sentence1": "a", "sentence2": "b", "label": 2.93, "idx": 0},
     "stsb sentence1: a sentence2: b", "3.0"),
    ("stsb", {"sentence1": "a", "sentence2": "b", "label": 0.0, "idx": 0},
     "stsb sentence1: a sentence2: b", "0.0"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "example", "inputs", "targets"), GLUE_CASES)
def test_glue_strings_are_t5s(task, example, inputs, targets):
    assert _run(_text_pp(glue.task_name(task)), example) == [(inputs, targets)]


SUPER_GLUE_CASES = [
    ("boolq", {"question": "is it?", "passage": "It is.", "label": 1, "idx": 0},
     "boolq passage: It is. question: is it?", "True"),
    ("cb", {"premise": "P.", "hypothesis": "H.", "label": 2, "idx": 0},
     "cb hypothesis: H. premise: P.", "neutral"),
    ("copa", {"premise": "The man broke his toe.", "choice1": "He dropped a hammer.",
              "choice2": "He got a hole in his sock.", "question": "cause", "label": 0, "idx": 0},
     "copa choice1: He dropped a hammer. choice2: He got a hole in his sock. "
     "premise: The man broke his toe. question: cause", "choice1"),
    ("rte", {"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 0},
     "rte hypothesis: H. premise: P.", "not_entailment"),
    ("wic", {"word": "bank", "sentence1": "S1.", "sentence2": "S2.", "start1": 0, "start2": 0,
             "end1": 1, "end2": 1, "label": 0, "idx": 0},
     "wic sentence1: S1. sentence2: S2. word: bank", "False"),
    ("wsc", {"text": "This is a test sentence .", "span1_text": "test", "span1_index": 3,
             "span2_text": "This", "span2_index": 0, "label": 0, "idx": 0},
     "wsc text: # This # is a * test * sentence .", "False"),
    ("wsc", {"text": "Mark told Pete he was late .", "span1_text": "Pete", "span1_index": 2,
             "span2_text": "he", "span2_index": 3, "label": 1, "idx": 0},
     "wsc text: Mark told * Pete * # he # was late .", "True"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "example", "inputs", "targets"), SUPER_GLUE_CASES)
def test_super_glue_strings_are_t5s(task, example, inputs, targets):
    assert _run(_text_pp(super_glue.task_name(task)), example) == [(inputs, targets)]


def test_multirc_removes_html_and_keeps_question_ids():
    example = {
        "paragraph": "One.<br>Two <b>bold</b>.",
        "question": "Q?",
        "answer": "A",
        "label": 1,
        "idx": {"paragraph": 4, "question": 5, "answer": 6},
    }
    ds = _text_pp(super_glue.task_name("multirc"))(tf.data.Dataset.from_tensors(example))
    (out,) = list(ds.as_numpy_iterator())
    assert out["inputs"].decode() == "multirc question: Q? answer: A paragraph: One. Two bold."
    assert out["targets"].decode() == "True"
    assert (out["idx/paragraph"], out["idx/question"], out["idx/answer"]) == (4, 5, 6)


def test_record_makes_one_example_per_answer():
    example = {
        "passage": "This is the passage.\n@highlight\nA bird\n@highlight\nMore",
        "query": "A @placeholder is a bird.",
        "entities": ["penguin", "potato", "pigeon"],
        "answers": ["penguin", "pigeon"],
        "idx": {"passage": 1, "query": 2},
    }
    inputs = (
        "record query: A @placeholder is a bird. entities: penguin, potato, pigeon "
        "passage: This is the passage. A bird. More"
    )
    pp = _text_pp(super_glue.task_name("record"))
    assert _run(pp, example) == [(inputs, "penguin"), (inputs, "pigeon")]
    no_answer = dict(example, answers=tf.constant([], tf.string))
    assert _run(pp, no_answer) == [(inputs, "<unk>")]


def test_taskless_twin_drops_the_task_word():
    ds = tf.data.Dataset.from_tensors({"inputs": "rte sentence1: a sentence2: b", "targets": "x"})
    (out,) = list(preprocessors.remove_task_prefix(ds).as_numpy_iterator())
    assert out["inputs"].decode() == "sentence1: a sentence2: b"


def test_few_shot_subsets_are_seeded_balanced_and_disjoint():
    labels = np.array([0] * 30 + [1] * 10)
    ds = tf.data.Dataset.from_tensor_slices({"label": labels, "idx": np.arange(40)})

    def subset(seed, block, k=8):
        out = preprocessors.few_shot(ds, k=k, seed=seed, num_classes=2, block=block)
        return [(int(x["idx"]), int(x["label"])) for x in out.as_numpy_iterator()]

    train, dev = subset(0, 0), subset(0, 1)
    assert sorted(lab for _, lab in train) == [0] * 4 + [1] * 4
    assert sorted(lab for _, lab in dev) == [0] * 4 + [1] * 4
    assert not {i for i, _ in train} & {i for i, _ in dev}
    assert subset(0, 0) == train  # same seed, same subset
    assert {i for i, _ in subset(1, 0)} != {i for i, _ in train}
    assert preprocessors.class_quotas(32, 3) == [11, 11, 10]


def test_mixture_rates_are_examples_proportional_with_a_cap():
    spot_tasks.register_all()
    rates = mixtures.rates("spot_glue_mixture")
    assert rates == {name: float(min(base.train_size(name), 2**19)) for name in mixtures.GLUE_TASKS}
    assert rates[glue.task_name("rte")] == 2490.0
    # GLUE's 8 + SuperGLUE's 7 + WSC's simple train/eval pair (RTE kept in both benchmarks).
    assert len(mixtures.rates("spot_glue_super_glue_mixture")) == 17
    names = [glue.task_name("qqp"), glue.task_name("mnli"), glue.task_name("rte")]
    mixtures.register_mixture("spot_test_capped_mixture", names, cap=100_000)
    assert mixtures.rates("spot_test_capped_mixture") == {
        glue.task_name("qqp"): 100_000.0,
        glue.task_name("mnli"): 100_000.0,
        glue.task_name("rte"): 2490.0,
    }
    with pytest.raises(ValueError, match="unregistered"):
        mixtures.register_mixture("spot_test_bad_mixture", ["no_such_task"])


@pytest.fixture(scope="module")
def mock_data():
    spot_tasks.enable_mock_data(4)


def test_every_registered_task_yields_examples_under_mock_data(mock_data):
    spot_tasks.register_all()
    # C4's objectives tokenize before their cache point (they need the SentencePiece file);
    # catalog_sources_test shows them.
    names = [n for n in seqio.TaskRegistry.names() if n.startswith("spot_") and "spot_c4_" not in n]
    assert len(names) >= 2 * (len(glue.TASKS) + len(super_glue.TASKS))
    shown = {}
    for name in sorted(names):
        # Few-shot dev sets come from the train split, which mock data keeps tiny.
        split = "test" if "shot_seed" in name else "validation"
        if split not in seqio.get_mixture_or_task(name).splits:  # SPoT's train-only MNLI
            split = "train"
        examples = shown[name] = list(show_examples(name, split, n=2))
        assert examples, name
        assert all(isinstance(x["inputs"], str) and x["targets"] for x in examples), name
        if name.startswith(("spot_glue", "spot_super_glue")) and "taskless" not in name:
            first_word = name.split("_v")[0].rsplit("_", 1)[-1]
            if "mnli" in name:
                first_word = "mnli"
            prefixes = ("record query:", "wsc: ", first_word + " ")  # wsc: T5's simple WSC
            assert examples[0]["inputs"].startswith(prefixes), name
    # Every taskless twin reads its task's example less the leading task word.
    twins = [n for n in shown if n.endswith("_taskless")]
    with_twins = [s for s in base.SPECS.values() if s.taskless_twin and s.name.startswith("spot_")]
    assert len(twins) >= len(with_twins) - 1
    for twin in twins:
        task = shown[twin.removesuffix("_taskless")]
        for full, short in zip(task, shown[twin], strict=True):
            assert full["inputs"].split(" ", 1)[1] == short["inputs"], twin
            assert full["targets"] == short["targets"], twin


def test_tasks_show_prints_json_lines(mock_data, capsys):
    assert (
        tasks_main(["show", "spot_glue_rte_v200_16shot_seed7", "--split", "test", "-n", "2"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[0])
    assert row["inputs"].startswith("rte sentence1: ")
    assert row["targets"] in ("entailment", "not_entailment")
    assert few_shot.few_shot_name(glue.task_name("rte"), 16, 7) in seqio.TaskRegistry.names()
    assert tasks_main(["list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "spot_super_glue_wsc_v102" in listed and "spot_glue_mnli_v200" in listed
    with pytest.raises(ValueError, match="No task named"):
        list(show_examples("spot_glue_nope_v200"))


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_tokenized_features_use_t5_vocab_with_eos(mock_data, monkeypatch):
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    # The vocabulary path is fixed when a task is registered: re-register under the env var.
    name = glue.task_name("rte")
    spot_tasks.register_all()
    seqio.TaskRegistry.remove(name)
    base.register_spec(base.SPECS[name])
    task = seqio.get_mixture_or_task(name)
    from spot_jax.data import vocab

    spm = vocab.get_vocabulary()
    ds = task.get_dataset({"inputs": 64, "targets": 8}, split="validation", shuffle=False)
    for x in ds.take(2).as_numpy_iterator():
        assert x["targets"][-1] == 1 and x["inputs"][-1] == 1
        assert spm.decode(x["targets"].tolist()) in ("entailment", "not_entailment")


@pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available")
def test_spot_jax_train_runs_glue_and_super_glue_tasks_on_mock_data(tmp_path):
    env = dict(os.environ, SPOT_JAX_TFDS_MOCK="4", SPOT_JAX_VOCAB=str(SPM))
    runs = {}
    for task in (glue.task_name("rte"), super_glue.task_name("boolq")):
        model_dir = tmp_path / task
        cmd = [
            sys.executable, "-m", "spot_jax.cli", "train",
            "--gin_file=test/tiny_prompt.gin",
            "--gin_file=models/t5_1_1/t5x_test_tiny.gin",
            f"--gin.MODEL_DIR={model_dir}",
            f"--gin.MIXTURE_OR_TASK_NAME={task}",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
            "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8",
        ]  # fmt: skip
        runs[task] = (model_dir, subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE))
    for task, (model_dir, proc) in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert (model_dir / "numpy_checkpoints").is_dir(), task
        assert (model_dir / "metrics.jsonl").read_text().strip(), task


def test_few_shot_test_split_reads_through_the_training_pipeline(mock_data, monkeypatch):
    if not SPM.exists():
        pytest.skip("needs the T5 SentencePiece fixture")
    from spot_jax.data import pipeline
    from spot_jax.data.config import DatasetConfig

    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    # A seed no other test registers: the vocabulary is fixed when the task is registered.
    name = few_shot.few_shot_name(glue.task_name("rte"), 32, 7)
    cfg = DatasetConfig(name, {"inputs": 64, "targets": 8}, split="test", batch_size=2)
    # seqio asks the source for every split's size; `test` (the original validation split)
    # has none before TFDS prepares it, which must not be an error.
    batch = next(iter(pipeline.eval_batches(cfg)))
    assert batch["encoder_input_tokens"].shape == (2, 64)
