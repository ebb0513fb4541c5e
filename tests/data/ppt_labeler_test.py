"""The saved-prompt labeler: rank classification over label words, batching-invariant, margin
filter, and a pseudo-labelled PPT task built from it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")

from spot_jax.data import ppt  # noqa: E402
from spot_jax.data.ppt_labeler import PromptLabeler  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPM = Path(
    os.environ.get("SPOT_JAX_TEST_SPM")
    or Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
)
SENTENCES = ["the food was cold", "great service", "we waited an hour", "fine", "never again"]


@pytest.fixture(scope="module")
def labeler(tmp_path_factory):
    """A 2-step prompt run on the tiny model with T5's vocabulary size."""
    if not SPM.exists():
        pytest.skip("T5 SentencePiece model not available")
    run = tmp_path_factory.mktemp("labeler") / "run"
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    cmd = [
        sys.executable, "-m", "spot_jax.cli", "train", "--gin_file=test/tiny_prompt.gin",
        "--gin_file=models/t5_1_1/t5x_test_tiny.gin", f"--gin.MODEL_DIR={run}",
        "--gin.TRAIN_STEPS=2", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=2",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "XLA_FLAGS": flags},
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    vocab = seqio.SentencePieceVocabulary(str(SPM), extra_ids=100)
    return PromptLabeler(
        str(run), ppt.SENTIMENT_LABEL_WORDS, template="review: {sentence} <extra_id_0>",
        vocabulary=vocab, input_length=16, batch_size=4,
    )  # fmt: skip


def test_scores_are_log_likelihoods_independent_of_batching(labeler):
    scores = labeler.scores(SENTENCES)  # two model calls, the second padded
    assert scores.shape == (5, 5) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    alone = np.concatenate([labeler.scores([s]) for s in SENTENCES])
    np.testing.assert_allclose(scores, alone, rtol=1e-5)
    assert len({tuple(row) for row in scores.round(4)}) > 1  # the sentence matters
    assert labeler(SENTENCES) == [int(i) for i in scores.argmax(1)]
    labeler.min_margin = 1e9
    try:
        assert labeler(SENTENCES) == [-1] * 5
    finally:
        labeler.min_margin = 0.0


def test_pseudo_labelled_task_uses_the_labeler(labeler):
    from spot_jax.data import tasks
    from spot_jax.data.commands import show_examples
    from spot_jax.data.tasks import ppt as ppt_tasks

    tasks.enable_mock_data(8)
    name = ppt_tasks.register_pseudo_label_task(labeler, name="labeler_test")
    assert name == "ppt_cls_labeler_test"
    rows = list(show_examples(name, split="train", n=4))
    assert rows
    for row in rows:
        assert row["inputs"].endswith(" <extra_id_0>")
        assert row["targets"] == f"<extra_id_0> {ppt.SENTIMENT_LABEL_WORDS[row['label']]}"
        sentence = row["inputs"].removesuffix(" <extra_id_0>")
        assert row["label"] == labeler([sentence])[0]
    with pytest.raises(ValueError, match="module:function"):
        ppt_tasks.register_pseudo_label_task("no_colon", name="bad")


def test_bad_labeler_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        PromptLabeler("run", ["only"])
    with pytest.raises(ValueError, match="sentence"):
        PromptLabeler("run", ["a", "b"], template="no slot")
