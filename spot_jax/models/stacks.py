"""Param names of the two layer layouts: scanned stacks (`encoder/layers/...`, a leading layer
axis, `T5Config.scan_layers`) and one param per layer (`encoder/layers_<i>/...`, T5X's and the
Python loop's). Checkpoints are written and read per layer; these convert between the two.
"""

from collections.abc import Mapping

import flax
import jax
import jax.numpy as jnp

Array = jax.Array


def is_stacked(name: str) -> bool:
    """Whether a flat param name is a scanned stack of layers (`encoder/layers/...`)."""
    parts = name.split("/")
    return len(parts) > 2 and parts[0] in ("encoder", "decoder") and parts[1] == "layers"


def layer_name(stacked_name: str, index: int) -> str:
    """T5X name of layer `index` of a stacked param: `encoder/layers/x` -> `encoder/layers_3/x`."""
    stack, _, rest = stacked_name.split("/", 2)
    return f"{stack}/layers_{index}/{rest}"


def unstack_flat(flat: Mapping[str, Array]) -> dict[str, Array]:
    """Flat params with stacked layers (leading layer axis) -> one array per `layers_{i}`."""
    out = {}
    for name, value in flat.items():
        if is_stacked(name):
            out.update({layer_name(name, i): value[i] for i in range(value.shape[0])})
        else:
            out[name] = value
    return out


def unstack_layers(params):
    """Scanned params (`encoder/layers/...` with a leading layer axis) -> `layers_{i}`."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    return flax.traverse_util.unflatten_dict(unstack_flat(flat), sep="/")


def stack_layers(params):
    """Inverse of `unstack_layers`: `layers_{i}` -> `layers` with a leading layer axis."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    groups: dict[str, dict[int, Array]] = {}
    out = {}
    for path, value in flat.items():
        parts = path.split("/")
        if len(parts) > 2 and parts[1].startswith("layers_"):
            key = "/".join([parts[0], "layers"] + parts[2:])
            groups.setdefault(key, {})[int(parts[1][len("layers_") :])] = value
        else:
            out[path] = value
    for key, by_index in groups.items():
        out[key] = jnp.stack([by_index[i] for i in sorted(by_index)])
    return flax.traverse_util.unflatten_dict(out, sep="/")
