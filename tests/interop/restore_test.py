"""INITIAL_CHECKPOINT_PATH naming a T5X checkpoint: read straight into the shardings."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

from spot_jax import axes
from spot_jax.interop import t5x
from spot_jax.models.config import named_config
from spot_jax.models.prompted import PROMPT_PATH, PromptedT5, unstack_flat
from spot_jax.train import checkpoints, initial_params, sharding, trainer

PT_TINY = (
    Path(os.environ["SPOT_JAX_TEST_SHARED"])
    / "fixtures/t5x/prompt_tuning_test_t5_1_1_tiny/checkpoint_3"
)
pytestmark = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")


def build(model, mesh, path):
    return initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=8,
        feature_lengths={"inputs": 8, "targets": 4},
        initial_checkpoint_path=str(path),
        seed=0,
    )


def test_build_params_from_t5x_equals_converted(tmp_path):
    model = PromptedT5(named_config("pt_test_tiny"), prompt_length=3)
    mesh = sharding.make_mesh(2)
    direct, shardings = build(model, mesh, PT_TINY)
    t5x.convert(PT_TINY, tmp_path / "frozen", log=lambda _: None)
    converted, _ = build(model, mesh, tmp_path / "frozen")
    assert set(direct) == set(converted) == set(shardings)
    for name in direct:
        assert direct[name].sharding == shardings[name], name
        np.testing.assert_array_equal(
            np.asarray(direct[name]), np.asarray(converted[name]), err_msg=name
        )
    # The embedding is really split across devices, so shards were read separately.
    emb = direct[t5x.EMBEDDING]
    assert len({str(s.index) for s in emb.addressable_shards}) > 1
    assert PROMPT_PATH in direct


def test_a_scanned_model_reads_the_t5x_checkpoint_layer_by_layer():
    mesh = sharding.make_mesh(2)
    looped, _ = build(PromptedT5(named_config("pt_test_tiny"), prompt_length=3), mesh, PT_TINY)
    model = PromptedT5(named_config("pt_test_tiny", scan_layers=True), prompt_length=3)
    stacked, shardings = build(model, mesh, PT_TINY)
    assert "decoder/layers/self_attention/query/kernel" in stacked
    for name, value in stacked.items():
        assert value.sharding == shardings[name], name
    per_layer = unstack_flat(stacked)
    assert set(per_layer) == set(looped)
    for name, value in looped.items():
        np.testing.assert_array_equal(np.asarray(per_layer[name]), np.asarray(value), err_msg=name)


def test_t5x_checkpoint_of_another_model_names_the_parameter():
    model = PromptedT5(named_config("t5x_test_tiny"), prompt_length=3)
    with pytest.raises(checkpoints.CheckpointError, match=r"parameter \S+ has shape \[.*needs \["):
        build(model, sharding.make_mesh(1), PT_TINY)


def _decay_count(run_dir, step):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(run_dir / "checkpoints" / str(step) / "state")
    assert int(state["step"]) == step
    return [
        int(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state["opt_state"])
        if getattr(path[-1], "key", getattr(path[-1], "name", None)) == "count"
    ]


@pytest.mark.parametrize("pretrained_step, want", [(None, 3 + 4), (100, 100 + 4)])
def test_training_from_a_t5x_checkpoint_continues_its_global_step(
    tmp_path, capsys, pretrained_step, want
):
    # T5X's Adafactor reads the global step, which continues from the checkpoint's (3 here;
    # 1,100,000 for LM-adapted T5 1.1): after 4 steps the decay count is 7, the run's step 4.
    # PRETRAINED_STEP overrides it (HF weights record none).
    from spot_jax.data import DatasetConfig

    lengths = {"inputs": 8, "targets": 4}
    trainer.train(
        model=PromptedT5(named_config("pt_test_tiny"), prompt_length=3),
        train_data=DatasetConfig("synthetic", lengths, batch_size=8, vocab_size=64),
        model_dir=str(tmp_path / "run"),
        train_steps=4,
        initial_checkpoint_path=str(PT_TINY),
        model_parallel=2,
        pretrained_step=pretrained_step,
        progress=False,
    )
    assert _decay_count(tmp_path / "run", 4) == [want]
    # TRAIN_STEPS past the checkpoint's step reads like T5X's total: the run says what it does.
    noted = "TRAIN_STEPS=4 counts from 0 here, not from the checkpoint's step 3"
    assert (noted in capsys.readouterr().out) == (pretrained_step is None)
