"""Shared fixtures of the train tests."""

import pytest

TINY_LENGTHS = {"inputs": 16, "targets": 8}


@pytest.fixture(scope="module")
def tiny_sharded():
    """The tiny float32 prompted T5 built by the trainer on a (4, 2) mesh.

    Returns:
      (model, mesh, flat params, flat shardings).
    """
    import jax

    from spot_jax import axes
    from spot_jax.models import config, prompted
    from spot_jax.train import initial_params, sharding

    assert jax.device_count() == 8, "conftest sets 8 CPU devices"
    model = prompted.PromptedT5(config.named_config("tiny", dtype="float32"), prompt_length=5)
    mesh = sharding.make_mesh(2)
    params, shardings = initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=8,
        feature_lengths=TINY_LENGTHS,
        initial_checkpoint_path=None,
        seed=0,
    )
    return model, mesh, params, shardings
