"""T5X checkpoints as a source of frozen weights: legacy msgpack + tensorstore, and Orbax.

A T5X checkpoint holds the model params under `target` and the optimizer state under
`state`; this module reads `target` (`t5x_states.py` reads the Adafactor states that model
tuning restores). Arrays are read one at a time (or one shard at a time), so
converting XXL never holds its 44 GB of float32 weights in memory at once.

Legacy layout (t5x `Checkpointer`, format version 3):
  checkpoint_<step>/checkpoint   msgpack `{'version': 3, 'optimizer': {'target': ..., ...}}`;
      small leaves inline as msgpack ext type 1 (`[shape, dtype, bytes]`), large ones as a
      tensorstore zarr spec whose `kvstore.path` is relative to the checkpoint directory;
  checkpoint_<step>/target.<dotted path>/   one zarr v2 array (gzip chunks) per large leaf
  (`t5x_msgpack` reads that tree).
Orbax layout (T5X since 2024): checkpoint_<step>/state/ written by a PyTreeCheckpointHandler.
Scanned models (scalable_t5, flaxformer scan_layers) stack each stack's layers; `scanned_layout`
presents them under per-layer names.

File access goes through `storage` (tensorstore key-value stores: local paths and gs:// alike).
"""

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from spot_jax.interop import storage
from spot_jax.interop.orbax_tree import OrbaxParams  # noqa: F401 (re-exported: t5x.OrbaxParams)
from spot_jax.interop.scanned_layout import ScannedLayout, is_scanned
from spot_jax.interop.shapes import (  # noqa: F401 (re-exported: t5x.param_shapes, ...)
    EMBEDDING,
    LAYER_RELPOS,
    LOGITS,
    STACK_RELPOS,
    check_shapes,
    infer_config,
    param_shapes,
    resize_vocab,
)
from spot_jax.interop.t5x_msgpack import (
    InlineLeaf,
    TensorstoreLeaf,
    flatten_leaves,
    load_inline,
    read_msgpack,
)
from spot_jax.models import prompted
from spot_jax.models.config import T5Config
from spot_jax.train.checkpoints import CheckpointError
from spot_jax.train.frozen_checkpoint import FROZEN_META, save_frozen

_RELPOS_LAYOUT = {True: "in every layer (umT5)", False: "per stack (T5 1.1)"}
# Arrays this large go through a disk-backed buffer while converting; smaller ones stay in RAM.
MEMMAP_MIN_ELEMENTS = 1 << 20


# ---------------------------------------------------------------------------------------------
# Checkpoints.


class T5XCheckpoint:
    """The `target` params of a T5X checkpoint, read lazily one array (or shard) at a time.

    Args:
      path: a checkpoint directory (`checkpoint_<step>/`), its `checkpoint` msgpack file, a
        lone msgpack file, or an Orbax T5X checkpoint directory; local or gs://.
    """

    def __init__(self, path: epath.PathLike):
        self.path = str(path).rstrip("/")
        self.kind = detect_format(self.path)
        if self.kind == "t5x":
            self._open_legacy()
        elif self.kind == "t5x_orbax":
            self._open_orbax()
        else:
            raise CheckpointError(format_message(self.path, self.kind))
        self._cache: tuple[str, np.ndarray] | None = None
        # A scanned model's stacks are presented layer by layer (`scanned_layout`).
        self.layout = ScannedLayout(self.shapes, self.path) if is_scanned(self.shapes) else None
        if self.layout is not None:
            self.shapes = self.layout.shapes

    def _open_legacy(self) -> None:
        root, msgpack_path, ckpt_dir, version = read_msgpack(self.path)
        if version < 2 or "optimizer" not in root:
            raise CheckpointError(
                f"{msgpack_path} is not a T5X checkpoint of format version >= 2 (version {version})"
            )
        state = root["optimizer"].get("state")
        self._step_leaf = state.get("step") if isinstance(state, Mapping) else None
        target = root["optimizer"].get("target")
        if not isinstance(target, Mapping):
            raise CheckpointError(f"{msgpack_path} has no optimizer/target params")
        self._leaves = flatten_leaves(target, ckpt_dir, version)
        self.shapes = {
            k: tuple(v.shape) if not isinstance(v, InlineLeaf) else v.shape
            for k, v in self._leaves.items()
        }

    def _open_orbax(self) -> None:
        state = (
            self.path
            if storage.read_bytes(storage.join(self.path, "_METADATA"))
            else self.path + "/state"
        )
        self._orbax = OrbaxParams(state, prefix="target")
        self._leaves = self._orbax.shapes
        self.shapes = dict(self._orbax.shapes)

    def names(self) -> list[str]:
        return sorted(self.shapes)

    def read_order(self, names) -> list[str]:
        """`names` in the order that reads each stored array once (a scanned stack's layers
        are cut from one cached array)."""
        return self.layout.read_order(names) if self.layout else sorted(names)

    def step(self) -> int | None:
        """The global training step the checkpoint was saved at (T5X's `state/step`: 1,100,000
        for the T5 1.1 LM-adapted checkpoints), or None where it is not recorded."""
        if self.kind == "t5x":
            return None if self._step_leaf is None else int(load_inline(self._step_leaf))
        tree = OrbaxParams(self._orbax.dir)
        return int(tree.read("state/step")) if "state/step" in tree.shapes else None

    def read(self, name: str) -> np.ndarray:
        """One whole array, in its stored dtype."""
        if name not in self.shapes:
            raise CheckpointError(f"T5X checkpoint {self.path} has no parameter {name}")
        if self.layout is None:
            return self._read_stored(name)
        return self.layout.cut(name, self._read_stored(self.layout.stored(name)))

    def _read_stored(self, stored: str) -> np.ndarray:
        # One array is kept: a scanned stack's layers are read one after another from it.
        if self._cache and self._cache[0] == stored:
            return self._cache[1]
        if self.kind == "t5x_orbax":
            value = self._orbax.read(stored)
        else:
            value = load_inline(self._leaves[stored])
        self._cache = (stored, value)
        return value

    def read_slice(self, name: str, index) -> np.ndarray:
        """One shard of an array (a tuple of slices); tensorstore arrays read only that part."""
        leaf = self._leaves.get(name)  # None for a scanned stack's layer: cut from its stack
        if isinstance(leaf, TensorstoreLeaf):
            return leaf.read(index)
        return self.read(name)[index]


def detect_format(path: epath.PathLike) -> str | None:
    """'spot_jax' (our frozen format), 't5x' (legacy msgpack), 't5x_orbax', 'tf', None, or
    what is no frozen model at all: 'spot_jax_train' (a run's `checkpoints/<step>`) and
    'spot_jax_run' (a training MODEL_DIR)."""
    path = str(path).rstrip("/")
    if storage.read_bytes(storage.join(path, FROZEN_META)) is not None:
        return "spot_jax"
    # Checked before T5X's Orbax layout: our train checkpoints also have a `state/_METADATA`.
    # TrainCheckpointer writes the JSON item `meta` beside `state`; T5X writes no such item.
    if storage.read_bytes(storage.join(path, "_CHECKPOINT_METADATA")) is not None and (
        storage.read_bytes(storage.join(path, "meta", "metadata")) is not None
    ):
        return "spot_jax_train"
    if storage.read_bytes(storage.join(path, "model.json")) is not None and (
        storage.read_bytes(storage.join(path, "config.gin")) is not None
    ):
        return "spot_jax_run"
    if any(
        storage.read_bytes(storage.join(path, *p)) is not None
        for p in (("state", "_METADATA"), ("_METADATA",))
    ):
        return "t5x_orbax"
    for candidate in (storage.join(path, "checkpoint"), path):
        try:
            head = storage.read_bytes(candidate)
        except Exception:  # noqa: BLE001 - a directory read as a file
            head = None
        if head is None:
            continue
        if head.startswith(b"model_checkpoint_path"):
            return "tf"
        return "t5x"
    return None


def format_message(path: str, kind: str | None) -> str:
    """Why `path` is no T5X checkpoint, and what to pass instead."""
    if kind == "tf":
        return (
            f"{path} is a TensorFlow (Mesh TF) checkpoint; convert it to T5X first "
            "(t5x.checkpoint_importer) and pass that"
        )
    if kind in ("spot_jax_train", "spot_jax_run"):
        what = (
            "a spot_jax training checkpoint" if kind == "spot_jax_train" else "a training MODEL_DIR"
        )
        return (
            f"{path} is {what}, which holds only the trained params, not a whole model; pass "
            "the run's own INITIAL_CHECKPOINT_PATH (eval and infer with MODEL_DIR=<the run> "
            "apply its trained params) or make one model with "
            "`spot-jax export --to hf --input <the run's MODEL_DIR>`"
        )
    return (
        f"{path} is not a T5X checkpoint: expected a `checkpoint` msgpack file (legacy T5X) or "
        "an Orbax `state/_METADATA` in it"
    )


# ---------------------------------------------------------------------------------------------
# Restoring straight into shardings (INITIAL_CHECKPOINT_PATH naming a T5X checkpoint).


def restore_sharded(path, abstract_flat: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """Reads a T5X checkpoint's params into the shardings of `abstract_flat`.

    Each device's shard is read on its own (tensorstore arrays read only that slice), one
    param at a time, so no host ever holds the whole model.

    Raises:
      CheckpointError: a param is missing or of another shape (names it and both shapes).
    """
    import jax

    ckpt = T5XCheckpoint(path)
    for name, spec in abstract_flat.items():
        if name not in ckpt.shapes:
            per_layer = LAYER_RELPOS in ckpt.shapes and STACK_RELPOS not in ckpt.shapes
            hint = (
                f"; the checkpoint has a relative-position table {_RELPOS_LAYOUT[per_layer]}: "
                f"set T5Config.relpos_per_layer={per_layer}"
                if per_layer != config.relpos_per_layer
                else ""
            )
            raise CheckpointError(f"T5X checkpoint {path} lacks parameter {name}{hint}")
        if tuple(ckpt.shapes[name]) != tuple(spec.shape):
            raise CheckpointError(
                f"parameter {name} has shape {list(ckpt.shapes[name])} in {path} but the model "
                f"needs {list(spec.shape)} (model config: {config.shape_dict()})"
            )
    out = {}
    for name in ckpt.read_order(abstract_flat):
        spec = abstract_flat[name]

        def shard(index, name=name, dtype=spec.dtype):
            return np.asarray(ckpt.read_slice(name, index)).astype(dtype)

        out[name] = jax.make_array_from_callback(tuple(spec.shape), spec.sharding, shard)
    return out


# ---------------------------------------------------------------------------------------------
# Conversion.


def convert(
    input_path: epath.PathLike,
    output_path: epath.PathLike,
    config: T5Config | str | None = None,
    vocab_rows: int | None = None,
    log=print,
    **overrides,
) -> T5Config:
    """Converts a T5X checkpoint's `target` into a spot_jax frozen checkpoint.

    Arrays are read one at a time into memory-mapped files under the output directory, so the
    process holds only one array in RAM (plus what the OS pages in while Orbax writes).

    Returns:
      the model's T5Config (vocab resized to `vocab_rows` if given).
    """
    ckpt = T5XCheckpoint(input_path)
    if ckpt.layout is not None:
        stacks = ", ".join(
            f"{s} {n} on axis {ckpt.layout.axes[s]}" for s, n in ckpt.layout.layers.items()
        )
        log(f"scanned model: layers stacked ({stacks}); read layer by layer")
    config = infer_config(ckpt.shapes, config, source=f"T5X checkpoint {input_path}", **overrides)
    if vocab_rows and vocab_rows != config.vocab_size:
        log(f"resizing vocab rows {config.vocab_size} -> {vocab_rows} (embedding, logits)")
        config = dataclasses.replace(config, vocab_size=vocab_rows)
    found = sorted(n for n in ckpt.shapes if prompted.is_prompt_path(n))
    if found:  # the input prompt and any per-layer ones (prompt-tuning's extended models)
        log(f"note: {', '.join(found)} in the checkpoint: prompts, not the frozen model; skipped")
    write_frozen_streaming(
        output_path,
        param_shapes(config),
        lambda name: resize_vocab(name, ckpt.read(name), config.vocab_size),
        config,
        step=ckpt.step(),
        order=ckpt.read_order,
    )
    return config


def write_frozen_streaming(
    output_path, shapes, read_fn, config: T5Config, step: int | None = None, order=sorted
) -> None:
    """`save_frozen` fed through disk-backed arrays filled one param at a time, read in the
    source's `order` (a function of the names)."""
    output = epath.Path(output_path)
    output.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=output) if output.is_dir() else None
    try:
        flat = {}
        for i, name in enumerate(order(shapes)):
            value = np.asarray(read_fn(name))
            if tuple(value.shape) != tuple(shapes[name]):
                raise CheckpointError(
                    f"parameter {name} has shape {list(value.shape)} but the model needs "
                    f"{list(shapes[name])}"
                )
            if tmp is None or value.size < MEMMAP_MIN_ELEMENTS:
                flat[name] = np.array(value)
                continue
            mm = np.lib.format.open_memmap(
                f"{tmp}/{i}.npy", mode="w+", dtype=value.dtype, shape=value.shape
            )
            mm[...] = value
            mm.flush()
            flat[name] = mm
            del value
        save_frozen(output, flat, config, step=step)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
