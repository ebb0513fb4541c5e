"""The Adafactor states of a scanned T5X checkpoint, presented layer by layer.

A scanned model (scalable_t5, flaxformer `scan_layers`; `scanned_layout`) stacks each stack's
layers on `param_scan_axis`, and its logical axes name that axis 'layers', a BATCH axis in
T5X's `standard_logical_factor_rules`. With a BATCH axis T5X's Adafactor factors by the
logical rules even at rank <= 2 (`_parse_rule` falls back to the size heuristic only for
params of rank <= 2 without one), and keeps the batch axis in both factored moments:

  encoder/encoder/mlp/wi_0/kernel          [embed, layers, mlp]      v_row [embed, layers]
                                                                     v_col [layers, mlp]
  encoder/encoder/attention/query/kernel   [embed, layers, heads, kv] v_row [embed, layers]
                                           (scalable_t5)             v_col [layers, heads, kv]
  encoder/encoder/pre_mlp_layer_norm/scale [embed, layers]           v [embed, layers] (no ROW
                                                                     and COLUMN pair)

So layer i's moments are the stacked slots taken at i on the layers axis, and they keep the
axes T5X's rules say (v_row the 'embed' ROW axis, v_col the COLUMN ones), which for some
kernels differ from what the size heuristic keeps for an unscanned layer (a square out
kernel; query/key/value where heads * kv < embed): `factorings` gives, per layer, which
per-layer axes each slot reduced, and `optimizer_states.map_param` matches them to ours.
scalable_t5's 3-D attention kernels are presented 2-D, heads and kv joined, as their weights.
"""

from collections.abc import Mapping

import numpy as np

from spot_jax.interop.scanned_layout import ScannedLayout
from spot_jax.train.checkpoints import CheckpointError
from spot_jax.train.optimizer_states import Factoring, kept_axes, t5x_factoring

FACTORED_SLOTS = ("v_row", "v_col")


def layer_logical_axes(rest: str, ndim: int) -> tuple[str, ...]:
    """T5X's logical axis names of one T5 1.1 layer's param (its path after the layer)."""
    module = rest.split("/")[0]
    leaf = rest.split("/")[-2:]
    if rest.endswith("/scale"):
        axes = ("embed",)
    elif rest.endswith("relpos_bias/rel_embedding"):
        axes = ("heads", "relpos_buckets")
    elif module == "mlp" and leaf[-1] == "kernel":
        axes = ("mlp", "embed") if leaf[0] == "wo" else ("embed", "mlp")
    elif leaf[-1] == "kernel" and leaf[0] in ("query", "key", "value", "out"):
        heads = ("heads", "kv") if ndim == 3 else ("joined_kv",)
        axes = (*heads, "embed") if leaf[0] == "out" else ("embed", *heads)
    else:
        axes = ()
    if len(axes) != ndim:
        raise CheckpointError(
            f"scanned parameter .../{rest} (rank {ndim} per layer) is not one of T5 1.1's "
            "layer params; its Adafactor states cannot be cut into layers. Set "
            "RESTORE_OPTIMIZER_STATE=False"
        )
    return axes


class ScannedStates:
    """Per-layer names, slot shapes and factorings of a scanned checkpoint's Adafactor states.

    Args:
      layout: the checkpoint's `ScannedLayout` (from its `target` shapes).
      target_shapes: the stored {param: shape} of `target`.
      slots: the stored {param: {slot: shape}} of `state/param_states`.
      source: how to name the checkpoint in errors.
    """

    def __init__(
        self,
        layout: ScannedLayout,
        target_shapes: Mapping[str, tuple[int, ...]],
        slots: Mapping[str, Mapping[str, tuple[int, ...]]],
        source: str,
    ):
        self.layout = layout
        self.params: dict[str, dict[str, tuple[int, ...]]] = {}  # per-layer name -> slots
        self.factorings: dict[str, Factoring] = {}  # per-layer name -> the writer's
        self._stored: dict[str, tuple[str, int]] = {}  # per-layer name -> (stored param, layer)
        self._kept: dict[str, dict[str, tuple[int, ...]]] = {}  # stored param -> slot -> axes
        for param, stored_slots in slots.items():
            stack = param.split("/", 1)[0]
            prefix = f"{stack}/{stack}/"
            if stack not in layout.axes or not param.startswith(prefix):
                self.params[param] = dict(stored_slots)  # not scanned: as stored
                continue
            if param not in target_shapes:
                raise CheckpointError(f"{source}: optimizer state of {param}, not a parameter")
            self._add_stacked(param, tuple(target_shapes[param]), stored_slots, source)

    def _add_stacked(self, param: str, shape, stored_slots, source: str) -> None:
        stack, rest = param.split("/", 1)[0], param.split("/", 2)[2]
        axis, count = self.layout.axes[stack], self.layout.layers[stack]
        one_axes = layer_logical_axes(rest, len(shape) - 1)
        axes = one_axes[:axis] + ("layers",) + one_axes[axis:]
        full_v = tuple(stored_slots.get("v", (1,))) != (1,)
        stacked = None if full_v else t5x_factoring(shape, axes, min_dim=1, name=param)
        if not full_v and stacked is None:
            raise CheckpointError(
                f"{source}: {param} (axes {axes}) is not factored by T5X's rules, yet its "
                "state holds no second moment `v`; set RESTORE_OPTIMIZER_STATE=False"
            )
        kept = {"v": tuple(range(len(shape))), "m": tuple(range(len(shape)))}
        if stacked is not None:
            kept.update(
                (slot, kept_axes(len(shape), reduced))
                for slot, reduced in zip(FACTORED_SLOTS, stacked, strict=True)
            )
        for slot in FACTORED_SLOTS if stacked is not None else ():
            want = tuple(shape[i] for i in kept[slot])
            if tuple(stored_slots.get(slot, ())) != want:
                raise CheckpointError(
                    f"{source}: {param}/{slot} has shape {list(stored_slots.get(slot, ()))}; "
                    f"T5X's standard_logical_factor_rules give {list(want)} for the scanned "
                    f"parameter of shape {list(shape)} (axes {axes}). Written with other factor "
                    "rules? Set RESTORE_OPTIMIZER_STATE=False"
                )
        self._kept[param] = kept
        # A stacked axis -> the layer's axis: `axis` dropped, heads and kv joined (as the
        # weights are presented).
        joined = [a for a in one_axes if a != "kv"]
        to_layer = [joined.index("heads" if a == "kv" else a) for a in one_axes]

        def layer_axes(stacked_axes) -> tuple[int, ...]:
            return tuple(sorted({to_layer[d - (d > axis)] for d in stacked_axes if d != axis}))

        for i in range(count):
            name = f"{stack}/layers_{i}/{rest}"
            one = self.layout.shapes[name]
            self._stored[name] = (param, i)
            self.params[name] = {
                slot: (1,) if tuple(s) == (1,) else tuple(one[a] for a in layer_axes(kept[slot]))
                for slot, s in stored_slots.items()
            }
            self.factorings[name] = (
                None if stacked is None else (layer_axes(stacked[0]), layer_axes(stacked[1]))
            )

    def stored(self, name: str) -> str:
        """The stored param whose slots hold layer `name`'s (itself when not scanned)."""
        return self._stored[name][0] if name in self._stored else name

    def cut(self, name: str, slot: str, stored_value: np.ndarray) -> np.ndarray:
        """Layer `name`'s `slot` out of the stored (stacked) slot array."""
        if name not in self._stored or stored_value.shape == (1,):
            return stored_value
        param, layer = self._stored[name]
        stack_axis = self.layout.axes[param.split("/", 1)[0]]
        position = self._kept[param][slot].index(stack_axis)
        value = np.take(stored_value, layer, axis=position)
        return value.reshape(self.params[name][slot])
