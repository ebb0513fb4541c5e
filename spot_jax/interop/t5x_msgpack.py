"""The legacy T5X checkpoint's msgpack tree: its leaves, read lazily.

A format-3 checkpoint (t5x `Checkpointer`) is `checkpoint_<step>/checkpoint`, a msgpack
`{'version': 3, 'optimizer': {'target': ..., 'state': ...}}`: small arrays inline as flax's
msgpack ext type 1 (`[shape, dtype, bytes]`), huge inline ones chunked
(`__msgpack_chunked_array__`), and large ones as tensorstore zarr specs whose `kvstore.path`
is relative to the checkpoint directory (`target.<dotted path>/`, gzip chunks). Nothing is
decoded until a leaf is loaded.
"""

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import tensorstore as ts

from spot_jax.interop import storage
from spot_jax.train.checkpoints import CheckpointError


@dataclasses.dataclass
class InlineLeaf:
    """An ndarray stored in the msgpack itself (flax's ext type 1), decoded only when read."""

    payload: bytes

    def load(self) -> np.ndarray:
        shape, dtype_name, buffer = msgpack.unpackb(self.payload)
        dtype = ml_dtypes.bfloat16 if dtype_name == "bfloat16" else np.dtype(dtype_name)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(msgpack.unpackb(self.payload)[0])


@dataclasses.dataclass
class ChunkedLeaf:
    """flax's `__msgpack_chunked_array__`: a huge inline array split into flat pieces."""

    shape: tuple[int, ...]
    chunks: list[Any]

    def load(self) -> np.ndarray:
        return np.concatenate([load_inline(c).reshape(-1) for c in self.chunks]).reshape(self.shape)


@dataclasses.dataclass
class TensorstoreLeaf:
    """A zarr array beside the msgpack file (T5X writes every partitioned leaf this way)."""

    name: str
    array_dir: str
    shape: tuple[int, ...]
    bf16_as_uint16: bool = False  # format version 2 stored bfloat16 as uint16

    def _open(self):
        try:
            meta = storage.read_bytes(storage.join(self.array_dir, ".zarray"))
        except Exception as e:  # noqa: BLE001 - any storage error is the same fact for users
            raise CheckpointError(
                f"cannot read array of {self.name} at {self.array_dir}: {e}"
            ) from e
        if meta is None:
            raise CheckpointError(
                f"array file of parameter {self.name} is missing: {self.array_dir}/.zarray "
                "(an incomplete copy of the checkpoint?)"
            )
        self._check_chunks(json.loads(meta))
        spec = {"driver": "zarr", "kvstore": storage.kvstore_spec(self.array_dir)}
        return ts.open(spec, read=True, open=True).result()

    def _check_chunks(self, zarray: Mapping[str, Any]) -> None:
        # A missing chunk reads silently as the fill value; refuse it instead.
        counts = [math.ceil(s / c) for s, c in zip(zarray["shape"], zarray["chunks"], strict=True)]
        sep = zarray.get("dimension_separator") or "."
        want = {sep.join(map(str, i)) for i in itertools.product(*map(range, counts))}
        if not zarray["shape"]:
            want = {"0"}
        missing = sorted(want - storage.list_keys(self.array_dir))
        if missing:
            raise CheckpointError(
                f"array of parameter {self.name} lacks chunk file(s) {missing[:3]} in "
                f"{self.array_dir} ({len(missing)} of {len(want)} missing; an incomplete copy?)"
            )

    def read(self, index=...) -> np.ndarray:
        store = getattr(self, "_store", None) or self._open()
        self._store = store
        try:
            value = store[index].read().result()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"cannot read parameter {self.name} from {self.array_dir} (truncated or "
                f"corrupt chunk?): {str(e)[:200]}"
            ) from e
        return value.view(ml_dtypes.bfloat16) if self.bf16_as_uint16 else value

    def load(self) -> np.ndarray:
        return self.read()


def load_inline(leaf) -> np.ndarray:
    """A msgpack leaf's array (decoded now, or read from tensorstore)."""
    return leaf.load() if hasattr(leaf, "load") else np.asarray(leaf)


def ext_hook(code: int, data: bytes):
    """msgpack's ext hook for flax's serialization: arrays stay bytes until loaded."""
    if code == 1:  # ndarray: keep the bytes, decode on demand
        return InlineLeaf(data)
    if code == 3:  # numpy scalar, e.g. state/step
        shape_dtype = msgpack.unpackb(data)
        return np.frombuffer(shape_dtype[1], dtype=shape_dtype[0])[0]
    return msgpack.ExtType(code, data)


def read_msgpack(path: str) -> tuple[Any, str, str, int]:
    """(root, msgpack file, checkpoint dir, format version) of a legacy T5X checkpoint: `path`
    is its directory or the msgpack file itself; arrays stay unread (`ext_hook`)."""
    msgpack_path = storage.join(path, "checkpoint")
    raw = storage.read_bytes(msgpack_path)
    if raw is None:  # the path is the msgpack file itself
        msgpack_path, raw = path, storage.read_bytes(path)
    ckpt_dir = msgpack_path.rsplit("/", 1)[0] if "/" in msgpack_path else "."
    try:
        root = msgpack.unpackb(raw, ext_hook=ext_hook, strict_map_key=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{msgpack_path} is not a readable T5X msgpack: {e}") from e
    version = int(root.get("version", 0)) if isinstance(root, Mapping) else 0
    return root, msgpack_path, ckpt_dir, version


def _is_ts_spec(node) -> bool:
    return isinstance(node, Mapping) and "driver" in node and ("kvstore" in node or "path" in node)


def flatten_leaves(node, ckpt_dir: str, version: int, prefix: str = "") -> dict[str, Any]:
    """'a/b/c' -> leaf of a msgpack tree (inline arrays or tensorstore specs, rebased)."""
    if isinstance(node, InlineLeaf):
        return {prefix: node}
    if _is_ts_spec(node):
        rel = (node.get("kvstore") or {}).get("path") or node.get("path")
        # Old writers stored absolute paths; rebase on where the checkpoint is now.
        rel = rel.rstrip("/").rsplit("/", 1)[-1]
        meta = node.get("metadata", {})
        dtype = str(meta.get("dtype", node.get("dtype", "")))
        return {
            prefix: TensorstoreLeaf(
                prefix,
                storage.join(ckpt_dir, rel),
                tuple(meta.get("shape", ())),
                bf16_as_uint16=version < 3 and "u2" in dtype,
            )
        }
    if isinstance(node, Mapping) and node.get("__msgpack_chunked_array__"):
        shape = tuple(node["shape"][str(i)] for i in range(len(node["shape"])))
        chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
        return {prefix: ChunkedLeaf(shape, chunks)}
    if isinstance(node, Mapping):
        out = {}
        for k, v in node.items():
            out.update(flatten_leaves(v, ckpt_dir, version, f"{prefix}/{k}" if prefix else k))
        return out
    return {prefix: node}  # a plain scalar/list leaf; np.asarray handles it
