"""Evaluator: a mixture evaluated task by task (T5X's per-task metrics), steps compiled once."""

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np
import pytest

seqio = pytest.importorskip("seqio")
pytest.importorskip("tensorflow")

from spot_jax import axes, data  # noqa: E402
from spot_jax.data import DatasetConfig  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.tasks import base  # noqa: E402
from spot_jax.models import config, prompted  # noqa: E402
from spot_jax.train import evaluation, initial_params, optim, sharding  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
pytestmark = [
    pytest.mark.tf,
    pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available"),
]
LENGTHS = {"inputs": 32, "targets": 8}
COLA, RTE = "spot_glue_cola_v200", "spot_glue_rte_v200"
MIXTURE = f"spot_mix__{COLA}__{RTE}"


@pytest.fixture(scope="module")
def setup():
    """Mock TFDS data; a tiny prompted T5 (T5 vocabulary) sharded on a (4, 2) mesh."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPOT_JAX_VOCAB", str(SPM))
    spot_tasks.enable_mock_data(4)
    spot_tasks.register_all()
    for name in (COLA, RTE):  # registered earlier in the process with the default vocabulary
        seqio.TaskRegistry.remove(name)
        base.register_spec(base.SPECS[name])
    model = prompted.PromptedT5(config.named_config("t5x_test_tiny", dtype="float32"), 3)
    mesh, rules = sharding.make_mesh(2), axes.standard_rules()
    params, _ = initial_params.build_params(
        model,
        mesh,
        rules,
        batch_size=8,
        feature_lengths=LENGTHS,
        initial_checkpoint_path=None,
        seed=0,
    )
    trainable, frozen = optim.split_trainable(params, prompted.PROMPT_PATH)
    yield model, mesh, rules, trainable, frozen
    mp.undo()


def _loss_weight(cfg):
    return sum(float(b["decoder_loss_weights"].sum()) for b in data.make_eval_iterator(cfg))


def test_a_mixture_is_evaluated_task_by_task_and_pooled(setup):
    model, mesh, rules, trainable, frozen = setup
    cfg = DatasetConfig(MIXTURE, LENGTHS, split="validation", batch_size=8)
    assert data.eval_task_names(cfg) == [COLA, RTE]
    got = evaluation.Evaluator(model, cfg, mesh, rules, rank_classification=True)(trainable, frozen)
    weights, losses, sequence_accuracies = [], [], []
    for task, metric in ((COLA, "matthews_corrcoef"), (RTE, "accuracy")):
        task_cfg = dataclasses.replace(cfg, mixture_or_task_name=task)
        alone = evaluation.Evaluator(model, task_cfg, mesh, rules, rank_classification=True)(
            trainable, frozen
        )
        # The mixture's numbers for a task are that task's own eval, under its name.
        assert {f"eval/{task}/{k.removeprefix('eval/')}": v for k, v in alone.items()} == {
            k: v for k, v in got.items() if k.startswith(f"eval/{task}/")
        }
        assert {f"eval/{metric}", f"eval/rank_{metric}", "eval/sequence_accuracy"} <= set(alone)
        weights.append(_loss_weight(task_cfg))
        losses.append(alone["eval/loss"])
        sequence_accuracies.append(alone["eval/sequence_accuracy"])
    # Pooled over all examples: token-weighted loss; both mock splits hold 4 examples.
    assert got["eval/loss"] == pytest.approx(np.average(losses, weights=weights), rel=1e-5)
    assert got["eval/sequence_accuracy"] == pytest.approx(np.mean(sequence_accuracies))
    assert {"eval/loss", "eval/token_accuracy", "eval/sequence_accuracy"} <= set(got)


def test_steps_compile_once_across_evals(setup):
    model, mesh, rules, trainable, frozen = setup
    cfg = DatasetConfig(RTE, LENGTHS, split="validation", batch_size=8)
    evaluator = evaluation.Evaluator(model, cfg, mesh, rules, max_batches=1, progress=True)
    first, second = evaluator(trainable, frozen), evaluator(trainable, frozen)
    assert first == second
    assert evaluator._eval_predict_fn._cache_size() == 1
    # Without decoding: loss and token accuracy only, the same as with it.
    without = evaluator(trainable, frozen, predict=False)
    assert set(without) == {"eval/loss", "eval/token_accuracy"}
    assert without["eval/loss"] == pytest.approx(first["eval/loss"], rel=1e-6)
    assert evaluator._eval_fn._cache_size() == 1


def test_eval_steps_bound_the_loss_but_task_metrics_see_every_example(setup):
    model = setup[0]
    # Two devices: batches of 2, so the mock split (4 examples, or more) is several batches.
    mesh, rules = sharding.make_mesh(2, jax.devices()[:2]), axes.standard_rules()
    params, _ = initial_params.build_params(
        model, mesh, rules, batch_size=2, feature_lengths=LENGTHS, initial_checkpoint_path=None,
        seed=0,
    )  # fmt: skip
    trainable, frozen = optim.split_trainable(params, prompted.PROMPT_PATH)
    cfg = DatasetConfig(COLA, LENGTHS, split="validation", batch_size=2)

    scored_rows = []

    class CountingScorer:  # the task's scorer, counting the predictions it is given
        def __init__(self, scorer):
            self.scorer = scorer

        def __call__(self, predicted):
            scored_rows.append(len(predicted))
            return self.scorer(predicted)

        def rank_metrics(self, chosen):
            scored_rows.append(len(chosen))
            return self.scorer.rank_metrics(chosen)

    def evaluate(max_batches, predict=True):
        evaluator = evaluation.Evaluator(
            model, cfg, mesh, rules, max_batches=max_batches, rank_classification=True
        )
        evaluator._parts[0].scorer = CountingScorer(evaluator._parts[0].scorer)
        return evaluator(trainable, frozen, predict)

    whole, bounded = evaluate(None), evaluate(1)
    # Decoded and rank-scored: every example, both times (the split is more than one batch).
    examples = sum(
        int(np.sum(b["decoder_target_tokens"][:, 0] != 0)) for b in data.make_eval_iterator(cfg)
    )
    assert examples > 2 and scored_rows == [examples] * 4
    scored = ["eval/matthews_corrcoef", "eval/rank_matthews_corrcoef", "eval/sequence_accuracy"]
    assert {k: bounded[k] for k in scored} == {k: whole[k] for k in scored}
    # The loss is the first batch's alone (teacher-forced pass only), not the split's.
    first = evaluate(1, predict=False)
    assert bounded["eval/loss"] == pytest.approx(first["eval/loss"], rel=1e-6)
    assert bounded["eval/loss"] != pytest.approx(whole["eval/loss"], rel=1e-4)


def test_eval_lengths_none_are_the_splits_longest(setup, capsys):
    # T5X's infer_eval: task_feature_lengths=None decodes every example untruncated.
    model, mesh, rules, trainable, frozen = setup
    cfg = data.with_lengths(DatasetConfig(MIXTURE, None, split="validation", batch_size=8))
    assert "eval lengths" in capsys.readouterr().out
    # Independently: the real token counts with room to spare.
    longest = {"inputs": 0, "targets": 0}
    for task in (COLA, RTE):
        roomy = DatasetConfig(task, {"inputs": 512, "targets": 64}, split="validation")
        for batch in data.make_eval_iterator(roomy):
            for key, feature in (
                ("inputs", "encoder_input_tokens"),
                ("targets", "decoder_target_tokens"),
            ):
                longest[key] = max(longest[key], int((batch[feature] != 0).sum(axis=1).max()))
    assert dict(cfg.task_feature_lengths) == longest and longest["inputs"] > LENGTHS["inputs"]
    metrics = evaluation.Evaluator(model, cfg, mesh, rules)(trainable, frozen)
    assert {f"eval/{COLA}/matthews_corrcoef", f"eval/{RTE}/accuracy"} <= set(metrics)
    with pytest.raises(ValueError, match="fixed lengths"):
        DatasetConfig("synthetic", None, split="validation")
    with pytest.raises(ValueError, match="fixed lengths"):
        DatasetConfig(COLA, None, split="train")


def test_a_mixture_without_the_split_says_which_splits_it_has(setup):
    cfg = DatasetConfig(MIXTURE, LENGTHS, split="dev", batch_size=8)
    with pytest.raises(ValueError, match="No task of mixture .* has a 'dev' split.*validation"):
        data.eval_task_names(cfg)
