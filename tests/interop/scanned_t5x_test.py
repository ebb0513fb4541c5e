"""T5X checkpoints of scanned models (scalable_t5 / umT5, flaxformer scan_layers), read as the
per-layer weights they stack.

The scanned checkpoints are made here from the real (unscanned) fixture with plain numpy
stacking, written in T5X's legacy layout (msgpack + zarr arrays written by tensorstore) and its
Orbax layout, and read back through the importer; the expected values are the fixture's own.
"""

import dataclasses
import re
from pathlib import Path

import jax
import msgpack
import numpy as np
import optax
import pytest
import tensorstore as ts
from restore_test import build  # this directory's test helpers
from t5x_test import PT_TINY, forward, nest, reference_read, restore

from spot_jax.interop import t5x
from spot_jax.models.config import named_config
from spot_jax.models.prompted import PromptedT5, unstack_flat
from spot_jax.train import checkpoints, frozen_checkpoint, optim, optimizer_states, sharding
from spot_jax.train import state as state_lib

pytestmark = pytest.mark.skipif(not PT_TINY.exists(), reason="shared fixtures not present")
HEADS = 2  # pt_test_tiny's
ATTENTION = ("attention", "self_attention", "encoder_decoder_attention")


def per_layer_relpos(flat: dict, offset: float) -> dict:
    """umT5's layout: every layer gets its stack's table (+ offset x layer), none per stack."""
    out = dict(flat)
    for stack in ("encoder", "decoder"):
        table = out.pop(f"{stack}/relpos_bias/rel_embedding")
        for i in range(2):
            out[f"{stack}/layers_{i}/relpos_bias/rel_embedding"] = table + offset * i
    return out


def scan(flat: dict, axis: int = 1, split_heads: bool = False) -> dict:
    """The `target` a scanned model would save: `<stack>/layers_<i>/X` stacked into
    `<stack>/<stack>/X` on `axis`; with `split_heads`, scalable_t5's 3-D attention kernels."""
    out, stacks = {}, {}
    for name, value in flat.items():
        m = re.fullmatch(r"(encoder|decoder)/layers_(\d+)/(.*)", name)
        if not m:
            out[name] = value
            continue
        stack, layer, rest = m.groups()
        module = rest.split("/")[0]
        if split_heads and module in ATTENTION:
            if rest.endswith("out/kernel"):  # [heads * kv, embed] -> [heads, kv, embed]
                value = value.reshape(HEADS, -1, value.shape[1])
            else:  # [embed, heads * kv] -> [embed, heads, kv]
                value = value.reshape(value.shape[0], HEADS, -1)
        stacks.setdefault(f"{stack}/{stack}/{rest}", {})[int(layer)] = value
    for name, layers in stacks.items():
        out[name] = np.stack([layers[i] for i in sorted(layers)], axis=axis)
    return out


def inline(value) -> msgpack.ExtType:
    value = np.asarray(value)
    return msgpack.ExtType(1, msgpack.packb([list(value.shape), value.dtype.name, value.tobytes()]))


def write_legacy(directory: Path, target: dict, param_states: dict | None = None) -> Path:
    """A format-3 T5X checkpoint: arrays of >= 16 elements as gzip zarr (2 chunks on axis 0)
    beside the msgpack, smaller ones inline."""
    directory.mkdir(parents=True)
    leaves = {}
    for name, value in target.items():
        if value.size < 16:
            leaves[name] = inline(value)
            continue
        rel = "target." + name.replace("/", ".")
        meta = {
            "shape": list(value.shape),
            "chunks": [max(1, value.shape[0] // 2), *value.shape[1:]],
            "dtype": "<f4",
            "compressor": {"id": "gzip"},
        }
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(directory / rel)}}
        ts.open({**spec, "metadata": meta}, create=True).result().write(value).result()
        leaves[name] = {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": rel},
            "metadata": meta,
        }
    state = {"step": inline(np.int32(7))}
    if param_states:
        state["param_states"] = nest({k: inline(v) for k, v in param_states.items()})
    root = {"version": 3, "optimizer": {"target": nest(leaves), "state": state}}
    (directory / "checkpoint").write_bytes(msgpack.packb(root))
    return directory


@pytest.fixture(scope="module")
def unscanned():
    return {k: v.astype(np.float32) for k, v in reference_read(PT_TINY / "checkpoint").items()}


@pytest.mark.parametrize(
    "layout,axis",
    [("flaxformer", 1), ("scalable_t5", 1), ("scalable_t5", 0)],
)
def test_scanned_checkpoint_converts_to_its_layers(tmp_path, monkeypatch, unscanned, layout, axis):
    scalable = layout == "scalable_t5"
    # Equal tables in every layer: the logits must then be the unscanned model's.
    want = per_layer_relpos(unscanned, 0.0) if scalable else unscanned
    stored = scan(want, axis=axis, split_heads=scalable)
    path = write_legacy(tmp_path / "checkpoint_7", stored)
    loads = []
    real_load = t5x.load_inline
    monkeypatch.setattr(t5x, "load_inline", lambda leaf: loads.append(leaf) or real_load(leaf))

    config = t5x.convert(path, tmp_path / "frozen", log=lambda _: None)
    base = named_config("pt_test_tiny")
    assert config == dataclasses.replace(base, relpos_per_layer=scalable)
    assert len(loads) == len(stored) + 1  # each stacked array read once (+ state/step)
    got = restore(tmp_path / "frozen", config)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)
    np.testing.assert_allclose(forward(config, got), forward(base, unscanned), rtol=1e-6, atol=1e-6)
    assert frozen_checkpoint.pretrained_step(path) == 7


def test_scanned_orbax_checkpoint_with_a_table_per_layer(tmp_path, unscanned):
    import orbax.checkpoint as ocp

    want = per_layer_relpos(unscanned, 0.25)  # distinct tables: each layer gets its own
    tree = {"target": nest(scan(want, split_heads=True)), "state": {"step": np.int32(5)}}
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(tmp_path / "checkpoint_5" / "state", tree)
    ckpt = t5x.T5XCheckpoint(tmp_path / "checkpoint_5")
    assert ckpt.shapes["encoder/layers_1/attention/out/kernel"] == (4, 4)
    config = t5x.convert(tmp_path / "checkpoint_5", tmp_path / "frozen", log=lambda _: None)
    assert config.relpos_per_layer
    got = restore(tmp_path / "frozen", config)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)
    layer_1 = got["decoder/layers_1/relpos_bias/rel_embedding"]
    assert not np.array_equal(layer_1, got["decoder/layers_0/relpos_bias/rel_embedding"])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_initial_checkpoint_path_reads_a_scanned_checkpoint(tmp_path, unscanned, scan_layers):
    want = per_layer_relpos(unscanned, 0.25)
    path = write_legacy(tmp_path / "checkpoint_7", scan(want, split_heads=True))
    config = named_config("pt_test_tiny", relpos_per_layer=True, scan_layers=scan_layers)
    params, shardings = build(PromptedT5(config, prompt_length=3), sharding.make_mesh(2), path)
    for name, value in params.items():
        assert value.sharding == shardings[name], name
    got = unstack_flat(params) if scan_layers else params
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)


def test_a_table_per_layer_into_a_t5_1_1_model_names_the_setting(tmp_path, unscanned):
    path = write_legacy(tmp_path / "checkpoint_7", scan(per_layer_relpos(unscanned, 0.0)))
    model = PromptedT5(named_config("pt_test_tiny"), prompt_length=3)
    with pytest.raises(checkpoints.CheckpointError, match="relpos_per_layer=True"):
        build(model, sharding.make_mesh(1), path)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_scanned_adafactor_states_restore_layer_by_layer(tmp_path, unscanned, scan_layers):
    # The tiny model's dims are < 128, so ours keeps full second moments; so did this writer
    # (T5X with factored=False). Distinct random moments per layer: each must land in its own.
    want = per_layer_relpos(unscanned, 0.25)
    rng = np.random.default_rng(0)
    moments = {k: rng.uniform(1e-6, 1e-4, a.shape).astype(np.float32) for k, a in want.items()}
    dummy = np.zeros((1,), np.float32)
    states = {
        f"{k}/{slot}": a if slot == "v" else dummy
        for k, a in scan(moments, split_heads=True).items()
        for slot in ("v", "v_row", "v_col", "m")
    }
    path = write_legacy(tmp_path / "checkpoint_7", scan(want, split_heads=True), states)
    config = named_config("pt_test_tiny", relpos_per_layer=True, scan_layers=scan_layers)
    model = PromptedT5(config, prompt_length=0)
    mesh = sharding.make_mesh(2)
    params, _ = build(model, mesh, path)
    with sharding.active(mesh):
        state = jax.jit(lambda t: state_lib.create(t, optim.adafactor(), 7))(params)
    lengths = {"inputs": 8, "targets": 4}
    restored = optimizer_states.restore_for_run(str(path), state, model, lengths, log=print)
    is_fs = lambda n: isinstance(n, optax.FactoredState)  # noqa: E731
    fs = next(n for n in jax.tree.leaves(restored.opt_state, is_leaf=is_fs) if is_fs(n))
    got = unstack_flat({k: np.asarray(v) for k, v in fs.v.items()})
    assert set(got) == set(moments)
    for k in moments:
        np.testing.assert_array_equal(got[k], moments[k], err_msg=k)


def test_a_stacked_param_without_the_layers_is_an_error(tmp_path, unscanned):
    stored = scan(unscanned)
    name = "encoder/encoder/mlp/wo/kernel"
    stored[name] = stored[name][:, :1]  # one layer of two
    path = write_legacy(tmp_path / "checkpoint_7", stored)
    with pytest.raises(checkpoints.CheckpointError, match=f"{name} has shape \\[8, 1, 4\\]"):
        t5x.T5XCheckpoint(path)
