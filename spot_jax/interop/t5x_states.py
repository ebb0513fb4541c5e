"""The Adafactor states of a T5X checkpoint: `state/param_states/<param path>/<slot>`.

T5X's own Adafactor keeps, per param, the slots `v` (the full second moment when the param is
not factored), `v_row` and `v_col` (the factored moments when it is) and `m` (the first moment
when beta1 is set); a slot not in use is a shape-(1,) zero. Checkpoints imported from Mesh
TensorFlow (t5x/checkpoint_importer.py) carry its `_slot_vr`/`_slot_vc`/`_slot_v` under the
same names. Which axes `v_row`/`v_col` keep is `spot_jax.train.optimizer_states`' business.

Legacy layout: `optimizer/state/param_states/...` in the msgpack (small leaves inline, large
ones as tensorstore arrays `state.param_states.<dotted path>/`). Orbax layout: the same tree
under `state/param_states/...` of the `state/` PyTree. A scanned model's states stack the
layers; `scanned_states` presents them layer by layer, as `scanned_layout` does the weights.
"""

from collections.abc import Mapping

import numpy as np
from etils import epath

from spot_jax.interop import storage, t5x, t5x_msgpack
from spot_jax.interop.orbax_tree import OrbaxParams
from spot_jax.interop.scanned_layout import ScannedLayout, is_scanned
from spot_jax.interop.scanned_states import ScannedStates
from spot_jax.train.checkpoints import CheckpointError

SLOTS = ("v", "v_row", "v_col", "m")


class T5XParamStates:
    """The per-param Adafactor slots of a T5X checkpoint, read lazily one param at a time.

    `params` maps each param path with states to {slot: shape}; it is empty when the
    checkpoint stores no `param_states` (then `step` may still be known). A scanned
    checkpoint's are listed per layer (`encoder/layers_<i>/...`), and `factorings` says how
    its writer factored each layer (T5X's logical rules, not the unscanned size heuristic).
    """

    def __init__(self, path: epath.PathLike):
        self.path = str(path).rstrip("/")
        self.kind = t5x.detect_format(self.path)
        self._leaves: dict[str, object] = {}
        self._orbax: OrbaxParams | None = None
        self.step: int | None = None
        if self.kind == "t5x":
            self._open_legacy()
        elif self.kind == "t5x_orbax":
            self._open_orbax()
        else:
            raise CheckpointError(t5x.format_message(self.path, self.kind))
        self.params: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, shape in self._shapes.items():
            param, _, slot = name.rpartition("/")
            if slot in SLOTS and param:
                self.params.setdefault(param, {})[slot] = tuple(shape)
        self.factorings: dict = {}
        self._scanned: ScannedStates | None = None
        self._cache: tuple[str, dict[str, np.ndarray]] | None = None
        if self.params and is_scanned(self._target_shapes):
            layout = ScannedLayout(self._target_shapes, self.path)
            self._scanned = ScannedStates(layout, self._target_shapes, self.params, self.path)
            self.params, self.factorings = self._scanned.params, self._scanned.factorings

    def _open_legacy(self) -> None:
        root, _, ckpt_dir, version = t5x_msgpack.read_msgpack(self.path)
        optimizer = root.get("optimizer") if isinstance(root, Mapping) else None
        state = optimizer.get("state") if isinstance(optimizer, Mapping) else None
        state = state if isinstance(state, Mapping) else {}
        if state.get("step") is not None:
            self.step = int(t5x_msgpack.load_inline(state["step"]))
        param_states = state.get("param_states")
        if isinstance(param_states, Mapping):
            self._leaves = t5x_msgpack.flatten_leaves(param_states, ckpt_dir, version)
        self._shapes = {k: _leaf_shape(v) for k, v in self._leaves.items()}
        target = optimizer.get("target") if isinstance(optimizer, Mapping) else None
        target = t5x_msgpack.flatten_leaves(target, ckpt_dir, version) if target else {}
        self._target_shapes = {k: _leaf_shape(v) for k, v in target.items()}

    def _open_orbax(self) -> None:
        state_dir = (
            self.path
            if storage.read_bytes(storage.join(self.path, "_METADATA"))
            else self.path + "/state"
        )
        tree = OrbaxParams(state_dir)
        if "state/step" in tree.shapes:
            self.step = int(tree.read("state/step"))
        prefix = "state/param_states/"
        self._orbax = tree
        self._shapes = {k[len(prefix) :]: v for k, v in tree.shapes.items() if k.startswith(prefix)}
        self._target_shapes = {
            k[len("target/") :]: v for k, v in tree.shapes.items() if k.startswith("target/")
        }

    def read(self, param: str) -> dict[str, np.ndarray]:
        """All stored slots of one param (one layer's, for a scanned checkpoint), as float32
        numpy arrays."""
        slots = self.params.get(param)
        if not slots:
            raise CheckpointError(f"T5X checkpoint {self.path} has no optimizer state of {param}")
        if self._scanned is None:
            return self._read_stored(param, slots)
        stored = self._scanned.stored(param)
        if self._cache is None or self._cache[0] != stored:
            # One stacked param's slots are kept: its layers are read one after another.
            self._cache = (stored, self._read_stored(stored, slots))
        return {s: self._scanned.cut(param, s, v) for s, v in self._cache[1].items()}

    def _read_stored(self, param: str, slots) -> dict[str, np.ndarray]:
        names = [f"{param}/{s}" for s in slots]
        if self._orbax is not None:
            keys = [f"state/param_states/{n}" for n in names]
            values = self._orbax.read_many(keys, what="optimizer states")
            values = dict(zip(names, values, strict=True))
        else:
            values = {n: t5x_msgpack.load_inline(self._leaves[n]) for n in names}
        return {s: np.asarray(values[f"{param}/{s}"], np.float32) for s in slots}


def _leaf_shape(leaf) -> tuple[int, ...]:
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else tuple(np.shape(leaf))


def open_param_states(path: epath.PathLike | None) -> T5XParamStates | None:
    """The Adafactor states of INITIAL_CHECKPOINT_PATH, or None where it can hold none (no
    path, a spot_jax frozen checkpoint, Hugging Face weights). A T5X checkpoint without
    `param_states` gives an object whose `params` is empty."""
    if not path:
        return None
    kind = t5x.detect_format(str(path))
    if kind not in ("t5x", "t5x_orbax"):
        return None
    return T5XParamStates(path)
