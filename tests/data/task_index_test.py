"""Task-index variants (`task_index_<i>__<task>`) and multi-task mixtures
(`spot_multitask__a__b`): the task's own examples with `<extra_id_i>` leading the inputs."""

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")

from spot_jax.data import mixtures, pipeline, scoring  # noqa: E402
from spot_jax.data import tasks as spot_tasks  # noqa: E402
from spot_jax.data.config import DatasetConfig  # noqa: E402
from spot_jax.data.tasks import base, glue, super_glue, task_index  # noqa: E402

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
SPM = Path(os.environ.get("SPOT_JAX_TEST_SPM", SPM))
RTE, CB = glue.task_name("rte"), super_glue.task_name("cb")


@pytest.fixture
def mock_data(monkeypatch):
    if not SPM.exists():
        pytest.skip("needs the T5 SentencePiece fixture")
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(SPM))
    spot_tasks.enable_mock_data(4)
    spot_tasks.register_all()
    # The vocabulary is fixed at registration: re-register the tasks (and drop their index
    # variants, copies of them) under the env var.
    for name in list(seqio.TaskRegistry.names()):
        if name.startswith(task_index.PREFIX):
            seqio.TaskRegistry.remove(name)
    for name in (RTE, CB):
        seqio.TaskRegistry.remove(name)
        base.register_spec(base.SPECS[name])


def _inputs(name, length):
    cfg = DatasetConfig(name, {"inputs": length, "targets": 8}, split="validation", batch_size=4)
    return next(iter(pipeline.eval_batches(cfg)))["encoder_input_tokens"]


def test_the_variant_leads_each_input_with_its_tasks_sentinel(mock_data):
    name = task_index.task_index_name(3, RTE)
    assert name == f"task_index_3__{RTE}"
    indexed, plain = _inputs(name, 65), _inputs(RTE, 64)
    real = np.any(plain != 0, axis=1)
    assert real.any()
    np.testing.assert_array_equal(indexed[real, 0], 32100 - 1 - 3)  # <extra_id_3>
    np.testing.assert_array_equal(indexed[real, 1:], plain[real])
    # It reads as the task it indexes: its labels, its train size, its metrics.
    assert (
        scoring._label_names(name) == scoring._label_names(RTE) == ("entailment", "not_entailment")
    )
    assert base.train_size(name) == base.train_size(RTE)
    task, source = seqio.get_mixture_or_task(name), seqio.get_mixture_or_task(RTE)
    assert task.metric_fns == source.metric_fns and task.postprocessor == source.postprocessor


def test_a_multitask_mixture_indexes_its_tasks_in_order(mock_data):
    name = task_index.multitask_mixture_name([RTE, CB])
    assert name == f"spot_multitask__{RTE}__{CB}"
    provider = pipeline.get_provider(DatasetConfig(name, {"inputs": 32, "targets": 8}))
    assert [t.name for t in provider.tasks] == [f"task_index_0__{RTE}", f"task_index_1__{CB}"]
    rates = mixtures.rates(name)
    assert rates[f"task_index_1__{CB}"] == mixtures.examples_proportional_rate(CB)
    first = _inputs(f"task_index_1__{CB}", 16)[:, 0]
    assert set(first[first != 0].tolist()) == {32100 - 1 - 1}


def test_bad_names_say_what_to_do():
    with pytest.raises(ValueError, match="tasks 0..99"):
        task_index.register_task_index(100, RTE)
    with pytest.raises(ValueError, match="No SeqIO task 'spot_glue_mixture'.*one by one"):
        task_index.resolve("task_index_0__spot_glue_mixture")
    assert task_index.resolve(RTE) is None
    assert task_index.source_task(f"task_index_12__{RTE}") == RTE
