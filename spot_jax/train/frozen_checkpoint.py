"""Frozen-model checkpoints: what INITIAL_CHECKPOINT_PATH names, written by `convert`/`export`.

Layout of one (T5X param names, unscanned; scanned models restore layer by layer into their
stacks):
  spot_model.json                 the model's shape (T5Config fields) and pretraining step
  params/, params_1/, ...         Orbax checkpoints of at most FROZEN_GROUP_BYTES each

Frozen weights are restored straight into their shardings; T5X checkpoints (legacy msgpack or
Orbax) are read by `interop.t5x` through the same entry point.
"""

import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from spot_jax.models import prompted
from spot_jax.models.config import T5Config
from spot_jax.paths import absolute_path
from spot_jax.train.checkpoints import CheckpointError, field_diffs

FROZEN_META = "spot_model.json"


# Orbax buffers every array of one save in host memory, so a frozen model is written as several
# Orbax checkpoints of at most this many bytes each: converting XXL (44 GB in float32) then needs
# about one group of RAM, not the whole model.
FROZEN_GROUP_BYTES = 1 << 30


def frozen_groups(flat_params: Mapping[str, Any], group_bytes: int):
    """Splits params (sorted by name) into consecutive groups of at most `group_bytes`."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in sorted(flat_params):
        nbytes = int(np.prod(flat_params[name].shape)) * np.dtype(flat_params[name].dtype).itemsize
        if groups[-1] and size + nbytes > group_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    return groups


def _group_dir(i: int) -> str:
    return "params" if i == 0 else f"params_{i}"


def save_frozen(
    path: epath.PathLike,
    flat_params: Mapping[str, jax.Array],
    config: T5Config,
    group_bytes: int | None = None,
    step: int | None = None,
) -> None:
    """Writes a frozen-model checkpoint: Orbax params (T5X names, unscanned) + model JSON.

    Params go to `params/`, `params_1/`, ... (groups of at most `group_bytes`), each an Orbax
    checkpoint of a flat {name: array} dict; `spot_model.json` lists the groups and, when
    known, the global `step` the weights were trained to (see `pretrained_step`).
    """
    path = absolute_path(path)
    params = prompted.unstack_flat(
        {k: v for k, v in flat_params.items() if not prompted.is_prompt_path(k)}
    )
    groups = frozen_groups(params, group_bytes or FROZEN_GROUP_BYTES)
    for i, names in enumerate(groups):
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path / _group_dir(i), {k: params[k] for k in names}, force=True)
    if jax.process_index() == 0:
        (path / FROZEN_META).write_text(
            json.dumps(
                {
                    "format": "spot_jax/frozen/v1",
                    **config.shape_dict(),
                    # Not a shape, but needed to rebuild the model elsewhere (HF export).
                    "relpos_max_distance": config.relpos_max_distance,
                    "groups": [_group_dir(i) for i in range(len(groups))],
                    **({"step": int(step)} if step is not None else {}),
                },
                indent=2,
            )
        )


def frozen_group_dirs(path: epath.PathLike) -> list[epath.Path]:
    """The Orbax group directories of a frozen checkpoint (one, `params`, before groups)."""
    path = epath.Path(path)
    return [path / g for g in read_frozen_config(path).get("groups", ["params"])]


def pretrained_step(path: epath.PathLike | None) -> int:
    """The global step INITIAL_CHECKPOINT_PATH was trained to: a T5X checkpoint's `state/step`
    (also recorded by `spot-jax convert`); 0 for a seeded init or where no step is recorded
    (Hugging Face weights). T5X continues counting from it, and Adafactor's decay reads it."""
    if not path:
        return 0
    path = absolute_path(path)
    if (path / FROZEN_META).exists():
        return int(read_frozen_config(path).get("step") or 0)
    from spot_jax.interop import t5x

    if t5x.detect_format(path) in ("t5x", "t5x_orbax"):
        return t5x.T5XCheckpoint(path).step() or 0
    return 0


def read_frozen_config(path: epath.PathLike) -> dict[str, Any]:
    path = epath.Path(path)
    meta = path / FROZEN_META
    if not meta.exists():
        if not path.exists():
            raise CheckpointError(f"INITIAL_CHECKPOINT_PATH {path} does not exist")
        raise CheckpointError(
            f"{path} is not a spot_jax frozen checkpoint (no {FROZEN_META}); "
            "convert T5X or Hugging Face weights with `spot-jax convert`"
        )
    return json.loads(meta.read_text())


def restore_frozen(
    path: epath.PathLike, abstract_flat: Mapping[str, jax.ShapeDtypeStruct], config: T5Config
) -> dict[str, jax.Array]:
    """Restores the frozen params named in `abstract_flat` straight into their shardings.

    `path` is a spot_jax frozen checkpoint or a T5X checkpoint (legacy msgpack or Orbax).
    Both store layers one by one (`encoder/layers_3/...`, T5X's names); a model with
    `scan_layers` wants them stacked (`encoder/layers/...`, layer axis first): each layer is
    read into the sharding of one slice, and the layers are stacked on the devices.

    Raises:
      CheckpointError: the checkpoint is of another model (names the first differing field
        or parameter and both shapes), or files are missing.
    """
    path = absolute_path(path)
    stacked = {k: v for k, v in abstract_flat.items() if prompted.is_stacked(k)}
    if not stacked:
        return _restore_by_layer(path, abstract_flat, config)
    wanted = {k: v for k, v in abstract_flat.items() if k not in stacked}
    for name, spec in stacked.items():
        one = _layer_sharding(spec.sharding)
        for i in range(spec.shape[0]):
            wanted[prompted.layer_name(name, i)] = jax.ShapeDtypeStruct(
                spec.shape[1:], spec.dtype, sharding=one
            )
    restored = _restore_by_layer(path, wanted, config)
    out = {k: restored.pop(k) for k in abstract_flat if k not in stacked}
    for name, spec in stacked.items():
        layers = [restored.pop(prompted.layer_name(name, i)) for i in range(spec.shape[0])]
        out[name] = jax.jit(lambda *xs: jnp.stack(xs), out_shardings=spec.sharding)(*layers)
    return out


def _layer_sharding(sharding):
    """The sharding of one layer's slice of a stacked param (the layer axis is never split)."""
    spec = tuple(sharding.spec)
    if spec and spec[0] is not None:
        raise CheckpointError(
            f"stacked params sharded along the layer axis ({spec}) cannot be restored"
        )
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[1:]))


def _restore_by_layer(
    path: epath.PathLike, abstract_flat: Mapping[str, jax.ShapeDtypeStruct], config: T5Config
) -> dict[str, jax.Array]:
    if not (epath.Path(path) / FROZEN_META).exists():
        # A T5X checkpoint named directly: read it straight into the shardings.
        from spot_jax.interop import t5x

        kind = t5x.detect_format(path)
        if kind in ("t5x", "t5x_orbax"):
            return t5x.restore_sharded(path, abstract_flat, config)
        if kind in ("spot_jax_train", "spot_jax_run"):
            raise CheckpointError("INITIAL_CHECKPOINT_PATH " + t5x.format_message(str(path), kind))
    path = epath.Path(path)
    have = read_frozen_config(path)
    want = config.shape_dict()
    if "relpos_max_distance" in have:
        # Not a shape, so a mismatch would restore silently and change every logit.
        want["relpos_max_distance"] = config.relpos_max_distance
    if have.get("relpos_per_layer") or config.relpos_per_layer:  # umT5's layout vs T5 1.1's
        want["relpos_per_layer"] = config.relpos_per_layer
    diffs = field_diffs(have, want, "{k}={have} in checkpoint vs {want} configured")
    if diffs:
        raise CheckpointError(
            f"INITIAL_CHECKPOINT_PATH {path} is of another model: {'; '.join(diffs)}"
        )
    stored, where = {}, {}
    with ocp.StandardCheckpointer() as ckptr:
        for group in frozen_group_dirs(path):
            if not group.exists():
                raise CheckpointError(f"frozen checkpoint {path} lacks its folder {group.name}")
            meta = ckptr.metadata(group)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            for name, leaf in _flatten_meta(tree).items():
                stored[name], where[name] = leaf, group
    missing = sorted(set(abstract_flat) - set(stored))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks parameters {missing[:5]}")
    for name, spec in abstract_flat.items():
        if tuple(stored[name].shape) != tuple(spec.shape):
            raise CheckpointError(
                f"parameter {name} has shape {list(stored[name].shape)} in {path} but the "
                f"model needs {list(spec.shape)}"
            )
    restored = {}
    with ocp.StandardCheckpointer() as ckptr:
        for group in sorted(set(where.values()), key=str):
            # Leaves we do not need (e.g. a prompt saved with the model) are skipped, not loaded.
            target = {
                k: abstract_flat.get(k, ocp.PLACEHOLDER) for k, g in where.items() if g == group
            }
            try:
                restored.update(ckptr.restore(group, target))
            except Exception as e:
                raise CheckpointError(
                    f"cannot read {group}: {type(e).__name__}: {str(e)[:300]}"
                ) from e
    return {k: v for k, v in restored.items() if k in abstract_flat}


def _flatten_meta(tree, prefix=""):
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_flatten_meta(v, f"{prefix}{k}" if not prefix else f"{prefix}/{k}"))
        return out
    return {prefix: tree}
