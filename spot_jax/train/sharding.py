"""Mesh, parameter shardings from logical axis rules, and host-local batches to global arrays.

One rule set (`axes.standard_rules`) drives everything: params are annotated with logical axes
when created, `nn.get_partition_spec` reads them back, and the rules map them onto the
('data', 'model') mesh. The prompt's axes map to None, so it is always replicated.
"""

import functools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from spot_jax import axes

Rules = Sequence[tuple[str, str | None]]


def make_mesh(model_parallel: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'model') mesh: `model_parallel` devices per model replica, data fills the rest.

    Devices are laid out so that the model axis is innermost: on GPUs it stays within a host's
    NVLink domain, and every process owns whole rows of the data axis.
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if model_parallel < 1 or n % model_parallel:
        raise ValueError(f"MODEL_PARALLEL={model_parallel} must divide the number of devices ({n})")
    # Order by (process, local id) so each process holds contiguous data rows.
    devices.sort(key=lambda d: (d.process_index, d.id))
    grid = np.array(devices, dtype=object).reshape(n // model_parallel, model_parallel)
    return Mesh(grid, axes.MESH_AXES)


def active(mesh: Mesh):
    """The context that makes `mesh` current for sharding constraints inside jitted code.

    `jax.set_mesh` where JAX has it (the `with mesh:` form is deprecated since jax 0.10),
    else the mesh itself as the context.
    """
    return jax.set_mesh(mesh) if hasattr(jax, "set_mesh") else mesh


def logical_shardings(boxed_tree, mesh: Mesh, rules: Rules):
    """Tree of NamedShardings for a tree of `nn.LogicallyPartitioned` (boxed) values."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split along the data axis only."""
    return NamedSharding(mesh, P(axes.DATA))


def data_shard_info(mesh: Mesh) -> tuple[int, int]:
    """(shard index, number of shards) of this process's slice of the global batch.

    Processes that hold the same rows of the data axis (a model axis spanning hosts) read the
    same shard, as T5X's LocalChunker arranges.
    """
    data_size = mesh.shape[axes.DATA]
    rows = sorted(
        {
            int(np.argwhere(mesh.devices == d)[0][0])
            for d in mesh.devices.flat
            if d.process_index == jax.process_index()
        }
    )
    if not rows:
        raise ValueError("this process owns no device of the mesh")
    per_process = len(rows)
    if data_size % per_process or rows != list(range(rows[0], rows[0] + per_process)):
        raise ValueError("each process must own a contiguous block of the mesh's data axis")
    return rows[0] // per_process, data_size // per_process


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    data_size = mesh.shape[axes.DATA]
    _, num_shards = data_shard_info(mesh)
    if batch_size % data_size or batch_size % num_shards:
        raise ValueError(
            f"BATCH_SIZE={batch_size} must be a multiple of the data-parallel size {data_size} "
            f"(devices / MODEL_PARALLEL) and of the number of data shards {num_shards}"
        )


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles host-local batches (this process's rows) into global arrays sharded on 'data'."""
    sharding = batch_sharding(mesh)
    _, num_shards = data_shard_info(mesh)
    out = {}
    for name, value in local.items():
        value = np.asarray(value)
        shape = (value.shape[0] * num_shards,) + value.shape[1:]
        out[name] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out


def to_host(x: jax.Array, mesh: Mesh) -> np.ndarray:
    """The whole value of a (possibly multi-host sharded) array, as numpy on every process."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(jax.device_get(_replicate(mesh)(x)))


@functools.lru_cache(maxsize=8)
def _replicate(mesh: Mesh):
    # One jitted all-gather per mesh: a fresh `jax.jit(lambda ...)` per call would trace and
    # compile again for every array brought to the host (several per eval batch).
    return jax.jit(lambda a: a, out_shardings=replicated(mesh))
