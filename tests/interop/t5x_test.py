"""T5X checkpoints -> spot_jax: both real fixtures, read independently here and compared."""

import dataclasses
import gzip
import json
import os
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from flax import traverse_util

from spot_jax.interop import t5x
from spot_jax.models.config import named_config
from spot_jax.models.prompted import PromptedT5
from spot_jax.train import checkpoints, frozen_checkpoint
from spot_jax.train import state as state_lib

FIXTURES = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5x"
T5X_TINY = FIXTURES / "t5x_test_t5_tiny.checkpoint_0"
PT_TINY = FIXTURES / "prompt_tuning_test_t5_1_1_tiny" / "checkpoint_3"
needs_fixtures = pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not present")


def reference_read(msgpack_file: Path) -> dict[str, np.ndarray]:
    """An independent reader: plain msgpack + numpy, zarr chunks gunzipped by hand."""

    def hook(code, data):
        assert code == 1
        shape, dtype, buf = msgpack.unpackb(data)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    root = msgpack.unpackb(msgpack_file.read_bytes(), ext_hook=hook, strict_map_key=False)
    out = {}

    def walk(node, prefix):
        if isinstance(node, np.ndarray):
            out[prefix] = node
        elif "driver" in node:
            out[prefix] = read_zarr(msgpack_file.parent / node["kvstore"]["path"])
        else:
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else k)

    walk(root["optimizer"]["target"], "")
    return out


def _state_step(msgpack_file: Path):
    """optimizer/state/step of a legacy T5X msgpack, read with plain msgpack."""

    def hook(code, data):
        if code == 1:  # an ndarray: (shape, dtype, bytes)
            shape, dtype, buf = msgpack.unpackb(data)
            return np.frombuffer(buf, dtype=dtype).reshape(shape)
        if code == 3:  # a numpy scalar: (dtype, bytes)
            dtype, buf = msgpack.unpackb(data)
            return np.frombuffer(buf, dtype=dtype)[0]
        return msgpack.ExtType(code, data)

    root = msgpack.unpackb(msgpack_file.read_bytes(), ext_hook=hook, strict_map_key=False)
    return root["optimizer"]["state"]["step"]


def nest(flat: dict) -> dict:
    """{'a/b': x} -> {'a': {'b': x}}."""
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def read_zarr(array_dir: Path) -> np.ndarray:
    meta = json.loads((array_dir / ".zarray").read_text())
    assert meta["compressor"]["id"] == "gzip" and meta["order"] == "C"
    shape, chunks = meta["shape"], meta["chunks"]
    out = np.zeros(shape, np.dtype(meta["dtype"]))
    for f in array_dir.iterdir():
        if f.name.startswith("."):
            continue
        idx = [int(i) for i in f.name.split(".")]
        block = np.frombuffer(gzip.decompress(f.read_bytes()), meta["dtype"]).reshape(chunks)
        where = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True)
        )
        out[where] = block[tuple(slice(0, w.stop - w.start) for w in where)]
    return out


def restore(path, config) -> dict[str, jax.Array]:
    model = PromptedT5(config, prompt_length=0)
    abstract = state_lib.flatten_params(nn.unbox(model.abstract_params(1, 4, 4)))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in abstract.items()
    }
    return frozen_checkpoint.restore_frozen(path, abstract, config)


def forward(config, params) -> np.ndarray:
    model = PromptedT5(config, prompt_length=0)
    tokens = jnp.array([[5, 6, 7, 1, 0, 0]], jnp.int32)
    batch = {
        "encoder_input_tokens": tokens,
        "decoder_input_tokens": jnp.array([[0, 8, 9, 0]], jnp.int32),
        "decoder_target_tokens": jnp.array([[8, 9, 1, 0]], jnp.int32),
    }
    return np.asarray(model.logits(traverse_util.unflatten_dict(params, sep="/"), batch))


@needs_fixtures
@pytest.mark.parametrize(
    "source,msgpack_file,name",
    [
        (T5X_TINY, T5X_TINY, "t5x_test_tiny"),
        (PT_TINY, PT_TINY / "checkpoint", "pt_test_tiny"),
    ],
)
def test_converts_fixture_equal_to_independent_read(
    tmp_path, monkeypatch, source, msgpack_file, name
):
    # Route every array through the disk-backed path XXL conversions take.
    monkeypatch.setattr(t5x, "MEMMAP_MIN_ELEMENTS", 0)
    config = t5x.convert(source, tmp_path / "frozen", log=lambda _: None)
    assert config == named_config(name)
    want = reference_read(msgpack_file)
    got = restore(tmp_path / "frozen", config)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)
    # The global step T5X saved (state/step) travels with the weights: Adafactor reads it.
    step = int(np.asarray(_state_step(msgpack_file)))
    assert step == {"t5x_test_tiny": 0, "pt_test_tiny": 3}[name]
    assert frozen_checkpoint.pretrained_step(source) == step
    assert frozen_checkpoint.pretrained_step(tmp_path / "frozen") == step
    logits = forward(config, got)
    assert logits.shape == (1, 4, 32128) and np.isfinite(logits).all()
    # Real weights, not a fresh init: logits differ from zero-embedding logits' flat profile.
    assert np.std(logits) > 0


@needs_fixtures
def test_shard_reads_match_whole_reads():
    ckpt = t5x.T5XCheckpoint(PT_TINY)
    whole = ckpt.read(t5x.EMBEDDING)
    part = ckpt.read_slice(t5x.EMBEDDING, (slice(4000, 9000), slice(1, 3)))
    np.testing.assert_array_equal(part, whole[4000:9000, 1:3])


@needs_fixtures
def test_config_mismatch_names_parameter_and_shapes():
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"token_embedder/embedding has shape \[32128, 4\].*needs \[32128, 8\]",
    ):
        t5x.infer_config(t5x.T5XCheckpoint(PT_TINY).shapes, "t5x_test_tiny")


@needs_fixtures
def test_missing_and_truncated_chunks_are_errors(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(PT_TINY, copy)
    for p in copy.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    emb = copy / "target.token_embedder.embedding"
    (emb / "3.0").unlink()
    with pytest.raises(checkpoints.CheckpointError, match=r"token_embedder/embedding.*3\.0"):
        t5x.T5XCheckpoint(copy).read(t5x.EMBEDDING)
    logits = copy / "target.decoder.logits_dense.kernel" / "0.2"
    logits.write_bytes(logits.read_bytes()[:100])
    with pytest.raises(checkpoints.CheckpointError, match=r"logits_dense/kernel.*truncated"):
        t5x.T5XCheckpoint(copy).read(t5x.LOGITS)
    shutil.rmtree(copy / "target.encoder.layers_0.mlp.wo.kernel")
    with pytest.raises(checkpoints.CheckpointError, match=r"layers_0/mlp/wo/kernel.*missing"):
        t5x.T5XCheckpoint(copy).read("encoder/layers_0/mlp/wo/kernel")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="not a T5X checkpoint"):
        t5x.T5XCheckpoint(tmp_path)


@needs_fixtures
def test_orbax_t5x_checkpoint(tmp_path):
    import orbax.checkpoint as ocp

    want = reference_read(PT_TINY / "checkpoint")
    tree = {"target": nest(want), "state": {"step": np.int32(3)}}
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(tmp_path / "checkpoint_3" / "state", tree)
    assert t5x.detect_format(tmp_path / "checkpoint_3") == "t5x_orbax"
    config = t5x.convert(tmp_path / "checkpoint_3", tmp_path / "frozen", log=lambda _: None)
    got = restore(tmp_path / "frozen", config)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)
    assert frozen_checkpoint.pretrained_step(tmp_path / "checkpoint_3") == 3
    assert frozen_checkpoint.pretrained_step(tmp_path / "frozen") == 3
    assert frozen_checkpoint.pretrained_step(None) == 0


def test_an_orbax_tree_without_target_is_a_checkpoint_error(tmp_path):
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt" / "state", {"params": {"w": np.zeros(3, np.float32)}})
    with pytest.raises(checkpoints.CheckpointError, match="has no `target` params"):
        t5x.T5XCheckpoint(tmp_path / "ckpt")


def test_shapes_tell_a_relpos_table_per_layer():
    # umT5's layout: a table in every layer, none per stack; the widths are T5 1.1 base's.
    base = named_config("base")
    umt5 = dataclasses.replace(base, relpos_per_layer=True)
    shapes = t5x.param_shapes(umt5)
    assert "encoder/relpos_bias/rel_embedding" not in shapes
    assert shapes["decoder/layers_11/relpos_bias/rel_embedding"] == (12, 32)
    assert t5x.infer_config(shapes) == dataclasses.replace(umt5, relpos_max_distance=128)
    assert t5x.infer_config(shapes, "base").relpos_per_layer
    assert not t5x.infer_config(t5x.param_shapes(base)).relpos_per_layer
