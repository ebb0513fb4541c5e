"""spot_jax weights written as a legacy T5X checkpoint (format 3), which T5X restores as its own.

The layout T5X's `Checkpointer.save` writes (t5x checkpoints.py), for a local or gs:// dir:

  OUTPUT/checkpoint_<step>/checkpoint   msgpack (flax serialization)
      {'version': 3, 'optimizer': {'target': {...params...}, 'state': {'step': int32}}},
      each param a tensorstore spec whose `kvstore.path` is relative to the checkpoint dir;
  OUTPUT/checkpoint_<step>/target.<dotted name>/   one zarr v2 array per param (gzip chunks of
      at most 64 MiB, T5X's `_choose_chunk_shape` rule).

Written under `checkpoint_<step>.tmp-<time>` and renamed when complete, as T5X does, so a
stopped export never looks like a checkpoint. T5X's eval and infer jobs restore it as is
(`restore_checkpoint_cfg.mode='specific'`): they read `target` and `state/step`. With
`param_states` (a run's Adafactor moments, `run_weights.read_adafactor_states`) it also holds
`state/param_states` as T5X's MultiOptimizer saves them: the trained params' slots, None for
the rest, so a T5X prompt-tuning run resumes from it with its optimizer state (a scanned
run's stacked params' moments go to their layers, as the weights do). Without them, a
T5X training run that starts from it sets `RestoreCheckpointConfig.fallback_to_scratch=True`
(fresh Adafactor states, as prompt-tuning's runs start from the public checkpoints). A prompt
goes to T5X prompt-tuning's `encoder/prompt/prompt/prompt`.
"""

import math
import time
from collections.abc import Callable, Mapping, Sequence

import flax.serialization
import ml_dtypes
import numpy as np
import tensorstore as ts
from etils import epath

from spot_jax.interop import storage
from spot_jax.train.checkpoints import CheckpointError

VERSION = 3
CHUNK_BYTES = 64 * 1024 * 1024  # T5X's _DESIRED_CHUNK_SIZE_BYTES
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def chunk_shape(shape: Sequence[int], max_elements: int) -> list[int]:
    """T5X's chunking rule: each chunk dim divides the array's, and the largest chunk dim is
    cut to its next smaller divisor until the chunk holds at most `max_elements`."""
    divisors = [[d for d in range(1, n + 1) if n % d == 0] for n in shape]
    while math.prod(d[-1] for d in divisors) > max_elements:
        largest = max(range(len(shape)), key=lambda i: divisors[i][-1])
        if divisors[largest][-1] == 1:
            break
        divisors[largest].pop()
    return [d[-1] for d in divisors]


def array_dir_name(name: str, root: str = "target") -> str:
    """`encoder/layers_0/mlp/wi_0/kernel` -> `target.encoder.layers_0.mlp.wi_0.kernel`."""
    return f"{root}." + name.replace("/", ".")


def _write_array(ckpt_dir: str, rel: str, value: np.ndarray) -> dict:
    """Writes one array as zarr at `ckpt_dir/rel`; returns the spec that goes in the msgpack."""
    metadata = {
        "compressor": {"id": "gzip"},
        "shape": list(value.shape),
        "chunks": chunk_shape(value.shape, CHUNK_BYTES // value.dtype.itemsize),
    }
    spec = {"driver": "zarr", "dtype": value.dtype.name, "metadata": metadata}
    store = ts.open(
        {**spec, "kvstore": storage.kvstore_spec(storage.join(ckpt_dir, rel))},
        create=True,
        delete_existing=True,
    ).result()
    store.write(value).result()
    # Relative, as T5X writes it: the checkpoint stays readable wherever it is copied.
    return ts.Spec({**spec, "kvstore": {"driver": "file", "path": rel}}).to_json()


def _nest(flat: Mapping[str, object]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def write(
    read: Callable[[str], np.ndarray],
    shapes: Mapping[str, tuple[int, ...]],
    output: epath.PathLike,
    step: int,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
    param_states: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> str:
    """Writes `OUTPUT/checkpoint_<step>`, one param at a time; returns its path.

    Args:
      read: name -> array, for every name in `shapes` (T5X names, `layers_<i>`).
      shapes: the params to write and the shape each must have.
      output: the T5X model dir the checkpoint goes in (local or gs://).
      step: the checkpoint's global step (T5X's `state/step`; the directory's suffix).
      dtype: what the params are saved as (T5X's SaveCheckpointConfig.dtype, float32 there).
      param_states: Adafactor slots {v_row, v_col, v, m} of the trained params, written as
        `state/param_states` the way T5X's MultiOptimizer saves them (None for every param it
        does not train), so a T5X prompt-tuning run resumes with them; None: no optimizer state.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    final = storage.join(str(output), f"checkpoint_{step}")
    if storage.read_bytes(storage.join(final, "checkpoint")) is not None:
        raise CheckpointError(f"{final} already holds a T5X checkpoint; choose another output")
    tmp = f"{final}.tmp-{int(time.time())}"
    target = {}
    try:
        for name, shape in shapes.items():
            value = np.asarray(read(name))
            if tuple(value.shape) != tuple(shape):
                raise CheckpointError(
                    f"param {name} has shape {list(value.shape)}, the model needs {list(shape)}"
                )
            if not np.all(np.isfinite(np.asarray(value, np.float32))):
                raise CheckpointError(
                    f"param {name} holds NaN or inf: not exported (a diverged run? export an "
                    "earlier checkpoint)"
                )
            target[name] = _write_array(tmp, array_dir_name(name), value.astype(DTYPES[dtype]))
        state = {"step": np.asarray(step, np.int32)}
        if param_states is not None:
            state["param_states"] = _nest(_param_states(tmp, shapes, param_states))
        root = {"version": VERSION, "optimizer": {"target": _nest(target), "state": state}}
        epath.Path(tmp, "checkpoint").write_bytes(flax.serialization.msgpack_serialize(root))
        epath.Path(tmp).rename(final)
    except BaseException:
        if epath.Path(tmp).exists():  # a half-written checkpoint is never left behind
            epath.Path(tmp).rmtree()
        raise
    states = "" if param_states is None else f", Adafactor states of {len(param_states)}"
    log(f"wrote T5X checkpoint {final} ({len(target)} params, {dtype}, step {step}{states})")
    return final


def _param_states(ckpt_dir: str, shapes, param_states) -> dict[str, object]:
    """{'<param>/<slot>': array or spec, '<param>': None}: T5X keeps v_row, v_col and m inline
    (no partitioning axes) and a real `v` (the param's shape, its axes) in tensorstore."""
    unknown = sorted(set(param_states) - set(shapes))
    if unknown:
        raise CheckpointError(f"optimizer states of params not in the model: {unknown[:3]}")
    out: dict[str, object] = {}
    for name in shapes:
        if name not in param_states:
            out[name] = None  # not trained: MultiOptimizer's None
            continue
        for slot, value in param_states[name].items():
            value = np.asarray(value, np.float32)
            if slot == "v" and value.shape == tuple(shapes[name]):
                rel = array_dir_name(f"{name}/{slot}", root="state.param_states")
                out[f"{name}/{slot}"] = _write_array(ckpt_dir, rel, value)
            else:
                out[f"{name}/{slot}"] = value
    return out
