"""Few-shot task names resolve in the training pipeline's own lookup (no module needed)."""

import pytest

pytestmark = pytest.mark.tf


def test_pipeline_registers_a_few_shot_name_on_first_use():
    seqio = pytest.importorskip("seqio")
    from spot_jax.data import pipeline
    from spot_jax.data.config import DatasetConfig

    name = "spot_glue_rte_v200_8shot_seed11"
    assert name not in seqio.TaskRegistry.names()
    cfg = DatasetConfig(name, {"inputs": 64, "targets": 8}, batch_size=8)
    assert pipeline.get_provider(cfg).name == name
    with pytest.raises(ValueError, match="No SeqIO task or mixture"):
        pipeline.get_provider(
            DatasetConfig("spot_glue_nosuch_v200_8shot_seed1", {"inputs": 8, "targets": 8})
        )


def test_pipeline_registers_a_task_named_mixture_on_first_use():
    seqio = pytest.importorskip("seqio")
    from spot_jax.data import mixtures, pipeline
    from spot_jax.data.config import DatasetConfig

    tasks = ["spot_glue_rte_v200", "spot_glue_mrpc_v200_8shot_seed2"]
    name = mixtures.mixture_name(tasks)
    assert name == "spot_mix__spot_glue_rte_v200__spot_glue_mrpc_v200_8shot_seed2"
    provider = pipeline.get_provider(DatasetConfig(name, {"inputs": 64, "targets": 8}))
    assert sorted(t.name for t in provider.tasks) == sorted(tasks)
    assert name in seqio.MixtureRegistry.names()
