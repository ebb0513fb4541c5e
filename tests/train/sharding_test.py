"""Mesh, param shardings from the logical rules, and host-local batches to global arrays."""

import re

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from spot_jax import axes
from spot_jax.train import sharding

LENGTHS = {"inputs": 16, "targets": 8}

# T5X's standard_logical_axis_rules on a ('data', 'model') mesh, written out by hand so the test
# does not just re-derive the rules it checks. Order matters: first match wins.
EXPECTED = [
    (r".*/attention/(query|key|value)/kernel", P(None, "model")),
    (r".*_attention/(query|key|value)/kernel", P(None, "model")),
    (r".*attention/out/kernel", P("model", None)),
    (r".*/mlp/wi_[01]/kernel", P(None, "model")),
    (r".*/mlp/wo/kernel", P("model", None)),
    (r"token_embedder/embedding", P("model", None)),
    (r"decoder/logits_dense/kernel", P(None, "model")),
    (r".*/relpos_bias/rel_embedding", P("model", None)),
    (r".*/scale", P()),
    (r"encoder/prompt/prompt/prompt", P()),
]


def _normalise(spec):
    """P('model', None) and P('model') mean the same; drop trailing Nones."""
    parts = list(spec)
    while parts and parts[-1] is None:
        parts.pop()
    return tuple(parts)


def _expected(name):
    for pattern, spec in EXPECTED:
        if re.fullmatch(pattern, name):
            return spec
    raise AssertionError(f"no expected spec for {name}; add it to EXPECTED")


@pytest.fixture(scope="module")
def sharded_params(tiny_sharded):
    _, mesh, params, shardings = tiny_sharded
    return mesh, params, shardings


def test_mesh_is_data_by_model():
    mesh = sharding.make_mesh(2)
    assert mesh.axis_names == ("data", "model")
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    # The model axis is innermost: a replica's two devices are neighbours.
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    np.testing.assert_array_equal(ids, np.arange(8).reshape(4, 2))
    with pytest.raises(ValueError, match="MODEL_PARALLEL=3"):
        sharding.make_mesh(3)


def test_every_param_is_sharded_by_the_standard_rules(sharded_params):
    mesh, params, shardings = sharded_params
    assert len(params) == 53
    for name, value in params.items():
        want = _expected(name)
        assert _normalise(value.sharding.spec) == _normalise(want), name
        assert _normalise(shardings[name].spec) == _normalise(want), name
        assert value.sharding.mesh.shape == mesh.shape
        # The physical layout agrees: a 'model'-sharded dim holds half the rows per device.
        shard = value.sharding.shard_shape(value.shape)
        expected_shard = tuple(
            d // 2 if ax == "model" else d
            for d, ax in zip(value.shape, tuple(want) + (None,) * value.ndim, strict=False)
        )
        assert shard == expected_shard, name


def test_prompt_and_scales_are_replicated(sharded_params):
    _, params, _ = sharded_params
    prompt = params["encoder/prompt/prompt/prompt"]
    assert prompt.shape == (5, 8)
    assert prompt.sharding.is_fully_replicated
    assert all(params[k].sharding.is_fully_replicated for k in params if k.endswith("/scale"))
    # And something really is sharded (the check above is not vacuous).
    assert not params["token_embedder/embedding"].sharding.is_fully_replicated


def test_prompt_stays_replicated_under_2d_parameter_partitioning():
    rules = dict(axes.standard_rules(parameter_partitioning_dims=2))
    # 'prompt_embed' never maps to a mesh axis even when 'embed' does.
    assert rules[axes.EMBED] == "data" and rules[axes.PROMPT_EMBED] is None
    assert rules[axes.PROMPT] is None
    with pytest.raises(ValueError):
        axes.standard_rules(3, 1)


def test_global_batch_splits_rows_over_the_data_axis():
    mesh = sharding.make_mesh(2)
    local = {
        "encoder_input_tokens": np.arange(8 * 16, dtype=np.int32).reshape(8, 16),
        "decoder_target_tokens": np.arange(8 * 4, dtype=np.int32).reshape(8, 4),
    }
    batch = sharding.global_batch(local, mesh)
    for name, value in local.items():
        array = batch[name]
        assert array.shape == value.shape
        assert _normalise(array.sharding.spec) == ("data",)
        np.testing.assert_array_equal(np.asarray(array), value)
        for shard in array.addressable_shards:
            # Device at mesh row r holds rows [2r, 2r+2), replicated over 'model'.
            row = int(np.argwhere(mesh.devices == shard.device)[0][0])
            np.testing.assert_array_equal(np.asarray(shard.data), value[2 * row : 2 * row + 2])


def test_batch_size_must_fit_the_data_axis():
    mesh = sharding.make_mesh(2)
    sharding.check_batch_size(8, mesh)
    with pytest.raises(ValueError, match="BATCH_SIZE=6"):
        sharding.check_batch_size(6, mesh)
    assert sharding.data_shard_info(mesh) == (0, 1)  # one process owns the whole data axis
