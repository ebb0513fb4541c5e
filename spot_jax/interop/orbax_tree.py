"""Orbax PyTree checkpoints read one leaf at a time (T5X Orbax `state/` and our frozen groups)."""

import os
from collections.abc import Mapping

import numpy as np
from etils import epath

from spot_jax.train.checkpoints import CheckpointError


class OrbaxParams:
    """The leaves under `prefix` of an Orbax PyTree checkpoint, read one at a time."""

    def __init__(self, directory: epath.PathLike, prefix: str = ""):
        import orbax.checkpoint as ocp

        # Orbax refuses relative paths; a local one is taken from the cwd.
        root = str(directory)
        self.dir = epath.Path(root if "://" in root else os.path.abspath(root))
        self.prefix = prefix
        try:
            meta = ocp.PyTreeCheckpointer().metadata(self.dir)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read Orbax checkpoint {self.dir}: {e}") from e
        tree = getattr(meta, "item_metadata", meta)
        self._tree = getattr(tree, "tree", tree)
        if prefix and (not isinstance(self._tree, Mapping) or prefix not in self._tree):
            raise CheckpointError(f"Orbax checkpoint {self.dir} has no `{prefix}` params")
        sub = self._tree[prefix] if prefix else self._tree
        self.shapes = {k: tuple(v.shape) for k, v in flatten_plain(sub).items()}

    def read(self, name: str) -> np.ndarray:
        """The leaf `name` under the prefix."""
        return self.read_many([f"{self.prefix}/{name}" if self.prefix else name])[0]

    def read_many(self, keys: list[str], what: str = "parameters") -> list[np.ndarray]:
        """Leaves by full key ('a/b/c', prefix included) in one restore: every other leaf is a
        placeholder, so Orbax reads only these."""
        import jax
        import orbax.checkpoint as ocp

        want = set(keys)
        item = jax.tree_util.tree_map_with_path(
            lambda p, m: m if key_of(p) in want else ocp.PLACEHOLDER, self._tree
        )
        restore_args = jax.tree_util.tree_map_with_path(
            lambda p, _: ocp.RestoreArgs(restore_type=np.ndarray if key_of(p) in want else None),
            self._tree,
        )
        try:
            with ocp.PyTreeCheckpointer() as ckptr:
                out = ckptr.restore(
                    self.dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
                )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"cannot read {what} {keys[:2]} from Orbax checkpoint {self.dir}: "
                f"{type(e).__name__}: {str(e)[:200]}"
            ) from e
        # Keys may be nested dicts (T5X) or flat 'a/b' names (our frozen format).
        found = {key_of(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(out)}
        return [np.asarray(found[k]) for k in keys]


def key_of(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def flatten_plain(tree, prefix=""):
    """{'a/b/c': leaf} of nested dicts; a list's items are named by index (an optax chain's
    states: `opt_state/0/v/...`), and None leaves (stateless transforms) are left out."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {} if tree is None else {prefix: tree}
    out = {}
    for k, v in items:
        out.update(flatten_plain(v, f"{prefix}/{k}" if prefix else str(k)))
    return out
