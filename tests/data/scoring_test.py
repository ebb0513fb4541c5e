"""TaskScorer: decoded ids -> postprocess -> the task's metric fns, on mock catalog tasks."""

import os
from pathlib import Path

import numpy as np
import pytest

seqio = pytest.importorskip("seqio")
tf = pytest.importorskip("tensorflow")

from spot_jax import data  # noqa: E402
from spot_jax.data import DatasetConfig, scoring  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.tasks import base, c4, glue  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available"),
]
LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture
def registered(monkeypatch):
    """Mock TFDS data, and the scored tasks registered with the fixture's vocabulary."""
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    spot_tasks.enable_mock_data(4)
    spot_tasks.register_all()
    for name in ("spot_glue_rte_v200", "spot_squad_v11_v300", "spot_cnn_dailymail_v340"):
        seqio.TaskRegistry.remove(name)
        base.register_spec(base.SPECS[name])


def _scorer(name):
    cfg = DatasetConfig(name, LENGTHS, split="validation", batch_size=4)
    return data.make_task_scorer(cfg)


def _ids(scorer, texts):
    vocabulary = scorer.task.output_features["targets"].vocabulary
    # EOS then padding after it, as the decoder emits them.
    return [vocabulary.encode(t) + [1, 0, 0] for t in texts]


def _size(scorer):
    """Examples in the mock split (the first test to switch mock data on sets the count)."""
    return sum(1 for _ in scorer.task.source.get_dataset(split="validation").as_numpy_iterator())


def _targets(scorer, n=None):
    n = _size(scorer) if n is None else n
    return [scorer._example(i)["targets_pretokenized"].decode() for i in range(n)]


def test_classification_accuracy_from_decoded_labels(registered):
    scorer = _scorer(glue.task_name("rte"))
    targets = _targets(scorer)
    assert len(targets) >= 3
    assert scorer(_ids(scorer, targets)) == {"eval/accuracy": 100.0}
    flipped = {"entailment": "not_entailment", "not_entailment": "entailment"}
    wrong_first = [flipped[targets[0]], *targets[1:]]
    expected = 100.0 * (len(targets) - 1) / len(targets)
    assert scorer(_ids(scorer, wrong_first)) == {"eval/accuracy": pytest.approx(expected)}
    # An unknown label is postprocessed to -1 and counted wrong.
    assert scorer(_ids(scorer, ["maybe", *targets[1:3]]))["eval/accuracy"] == pytest.approx(200 / 3)


def test_squad_scores_against_all_answers_and_rouge_on_summaries(registered):
    squad = _scorer("spot_squad_v11_v300")
    answers = [list(squad._example(i)["answers"]) for i in range(2)]
    # The last answer of each example, not the target (the first): still EM 100.
    predictions = [a[-1].decode() for a in answers]
    assert squad(_ids(squad, predictions)) == {"eval/em": 100.0, "eval/f1": 100.0}
    summaries = _scorer("spot_cnn_dailymail_v340")
    result = summaries(_ids(summaries, _targets(summaries)))
    assert set(result) == {"eval/rouge1", "eval/rouge2", "eval/rougeLsum"}
    assert result["eval/rouge1"] == pytest.approx(100.0)


def test_no_scorer_without_metrics_and_too_many_predictions_refused(registered):
    assert data.make_task_scorer(DatasetConfig("synthetic", LENGTHS)) is None
    assert data.make_task_scorer(DatasetConfig(c4.PREFIX_LM_NAME, LENGTHS)) is None
    assert data.make_task_scorer(DatasetConfig("spot_glue_mixture", LENGTHS)) is None
    scorer = _scorer(glue.task_name("rte"))
    n = _size(scorer)
    with pytest.raises(ValueError, match=f"more predictions than the {n} examples"):
        scorer(_ids(scorer, ["entailment"] * (n + 1)))
    assert isinstance(scorer, scoring.TaskScorer)


def test_rank_classification_candidates_and_metrics(registered):
    scorer = _scorer(glue.task_name("rte"))
    assert scorer.labels == ("entailment", "not_entailment")
    vocabulary = scorer.task.output_features["targets"].vocabulary
    ids = scorer.candidate_ids(16)
    assert ids.shape == (2, 16) and ids.dtype == np.int32
    for row, label in zip(ids, scorer.labels, strict=True):
        n = int(np.count_nonzero(row))
        assert row[n - 1] == 1 and vocabulary.decode(row[: n - 1].tolist()) == label
    targets = _targets(scorer)
    right = [scorer.labels.index(t) for t in targets]
    assert scorer.rank_metrics(right) == {"eval/rank_accuracy": 100.0}
    assert scorer.rank_metrics([1 - c for c in right]) == {"eval/rank_accuracy": 0.0}
    with pytest.raises(ValueError, match="raise TASK_FEATURE_LENGTHS"):
        scorer.candidate_ids(2)
    # Generation tasks have no label set to rank.
    assert _scorer("spot_squad_v11_v300").candidate_ids(16) is None
