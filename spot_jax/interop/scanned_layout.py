"""T5X checkpoints of scanned models, read under per-layer names.

A model that scans over layers (T5X's `examples/scalable_t5`, whose checkpoints umT5 ships;
flaxformer's `scan_layers=True`) stores each stack's layers as one module named like the
stack, every param stacked on `param_scan_axis` (1 by default in both):

  encoder/encoder/attention/query/kernel   [embed, layers, heads, kv]   (scalable_t5)
  encoder/encoder/mlp/wi_0/kernel          [embed, layers, mlp]
  encoder/encoder/pre_mlp_layer_norm/scale [embed, layers]
  encoder/encoder/relpos_bias/rel_embedding [heads, layers, buckets]   (a table per layer)

scalable_t5 keeps attention kernels 3-D ([embed, heads, kv]; out: [heads, kv, embed]);
flaxformer keeps them 2-D ([embed, heads * kv]). `ScannedLayout` presents such a checkpoint
under the names of an unscanned one (`encoder/layers_<i>/...`, 2-D kernels), which is all the
rest of the reader knows; names outside the scanned modules (embedding, final norms, logits,
flaxformer's per-stack relpos table) pass through unchanged.
"""

from collections.abc import Iterable, Mapping

import numpy as np

from spot_jax.train.checkpoints import CheckpointError

STACKS = ("encoder", "decoder")
# A param every T5 layer has: its shape tells the scan axis and the number of layers.
NORM = "pre_mlp_layer_norm/scale"


def is_scanned(names: Iterable[str]) -> bool:
    """Whether a checkpoint with these param names stacks a stack's layers (scanned)."""
    return any(f"{s}/{s}/{NORM}" in names for s in STACKS)


class ScannedLayout:
    """Per-layer names of a scanned checkpoint's params, and how to cut each from its stack.

    Args:
      shapes: the stored {name: shape} of the checkpoint's `target`.
      source: how to name the checkpoint in errors.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], source: str = "checkpoint"):
        self.axes: dict[str, int] = {}  # stack -> scan axis
        self.layers: dict[str, int] = {}  # stack -> number of layers
        self._cut: dict[str, tuple[str, int]] = {}  # per-layer name -> (stored name, layer)
        self.shapes: dict[str, tuple[int, ...]] = {}
        emb = shapes.get("token_embedder/embedding")
        for stack in STACKS:
            norm = shapes.get(f"{stack}/{stack}/{NORM}")
            if norm is None:
                continue
            self.axes[stack] = axis = _scan_axis(norm, emb[1] if emb else None, stack, source)
            self.layers[stack] = norm[axis]
        for name, shape in shapes.items():
            stack = name.split("/", 1)[0]
            prefix = f"{stack}/{stack}/"
            if stack not in self.axes or not name.startswith(prefix):
                self.shapes[name] = tuple(shape)
                continue
            axis, count = self.axes[stack], self.layers[stack]
            if len(shape) <= axis or shape[axis] != count:
                raise CheckpointError(
                    f"{source}: scanned parameter {name} has shape {list(shape)}, without the "
                    f"{count} layers of {stack} on axis {axis}"
                )
            one = _joined_heads(name, tuple(shape[:axis]) + tuple(shape[axis + 1 :]))
            for i in range(count):
                per_layer = f"{stack}/layers_{i}/{name[len(prefix) :]}"
                self._cut[per_layer] = (name, i)
                self.shapes[per_layer] = one

    def stored(self, name: str) -> str:
        """The stored name holding `name` (itself when it is not scanned)."""
        return self._cut[name][0] if name in self._cut else name

    def cut(self, name: str, stored_value: np.ndarray) -> np.ndarray:
        """`name`'s array out of its stored (stacked) array."""
        if name not in self._cut:
            return stored_value
        stored, layer = self._cut[name]
        axis = self.axes[stored.split("/", 1)[0]]
        value = np.take(stored_value, layer, axis=axis)
        return value.reshape(self.shapes[name])

    def read_order(self, names: Iterable[str]) -> list[str]:
        """`names` ordered so that each stored array is needed over one stretch (read once)."""

        def key(name):
            stored, layer = self._cut.get(name, (name, 0))
            return (stored, layer)

        return sorted(names, key=key)


def _scan_axis(norm_shape, emb_dim, stack: str, source: str) -> int:
    """The layers axis of a stacked [embed] norm scale: the one that is not the model width."""
    if len(norm_shape) != 2:
        raise CheckpointError(
            f"{source}: {stack}/{stack}/{NORM} has shape {list(norm_shape)}; a scanned stack's "
            "norm scale is [embed, layers] or [layers, embed]"
        )
    if emb_dim is None or norm_shape[0] == norm_shape[1]:
        return 1  # scalable_t5's and flaxformer's default param_scan_axis
    if emb_dim not in norm_shape:
        raise CheckpointError(
            f"{source}: {stack}/{stack}/{NORM} has shape {list(norm_shape)} but the embedding "
            f"width is {emb_dim}"
        )
    return 1 if norm_shape[0] == emb_dim else 0


def _joined_heads(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """scalable_t5's 3-D attention kernels as T5 1.1's 2-D ones (heads and kv joined)."""
    if len(shape) != 3 or not name.endswith("/kernel"):
        return shape
    if name.endswith("/out/kernel"):  # [heads, kv, embed]
        return (shape[0] * shape[1], shape[2])
    return (shape[0], shape[1] * shape[2])  # query/key/value: [embed, heads, kv]
