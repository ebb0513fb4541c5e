"""A T5X checkpoint's Adafactor states, mapped onto our optimizer's state (model tuning).

T5X fine-tuning restores `state/param_states` with the params and counts on from `state/step`;
`restore_t5x_states` does the same for the trainable params of a fresh run: each param's
second moment (`v`, or the factored `v_row`/`v_col`) goes into our `optax.FactoredState`, and
T5X's first moment `m` (beta1) into our `optax.EmaState` (negated: our EMA follows the update,
which is `-lr * ...` in optax, T5X's `m` the subtrahend). The decay count already starts at the
checkpoint's step (`optim.at_global_step`).

The mapping rule. Both sides keep, per factored param, `v_row` = the mean of grad^2 over the
axes "d0" and `v_col` = the mean over the axes "d1" (t5x adafactor.py, optax factorized.py:
`new_v_row = ... mean(grad_sqr, axis=d0)`, `new_v_col = ... mean(grad_sqr, axis=d1)`), so an
array is identified by the param axes it KEEPS, and arrays are matched by those axes:
  * optax (ours): `(d1, d0)` = the two largest axes by size, `np.argsort` order (on ties the
    lower axis is d1), and no factoring unless the second largest is >= min_dim_size_to_factor;
  * T5X (`Adafactor._parse_rule`): logical factor rules ('embed' ROW, 'mlp'/'heads'/'kv'/
    'joined_kv'/'vocab' COLUMN, 'layers'/'stack' BATCH; d1 = ROW axes, d0 = COLUMN axes) apply
    only to params of rank > 2 or with a BATCH axis. A param of rank <= 2 without one falls
    back to the heuristic (`fallback_to_heuristics`, present since T5X's first public commit),
    which is optax's rule, ties and min_dim_size_to_factor included. So for an unscanned
    T5X checkpoint (every layer on its own, `layers_<i>`, rank <= 2) the rule reduces to
    v_row -> v_row and v_col -> v_col, square (joined_kv, embed) kernels too. A scanned one's
    params have a BATCH axis ('layers'), so T5X factored them by the logical rules, v_row
    keeping 'embed': where the size heuristic's v_row keeps the other axis (a square out
    kernel; query/key/value with heads * kv < embed, as in T5 1.1 small) ours and theirs
    swap (`scanned_states` gives each layer's factoring; the match by kept axes swaps them
    back). Our scanned model's stacked param takes the layers' arrays stacked on its leading
    (layer) axis;
  * Mesh TensorFlow (`layout='mesh_tf'`, for states imported from it unchanged): `_slot_vr`
    reduces the LARGEST axis, which on ties is the FIRST one (`sorted(dims, key=-size)`), so
    for a square kernel its v_row keeps axis 1 where T5X's and ours keep axis 0: the square
    kernels' v_row and v_col swap. T5X itself reads such states as its own (the shapes agree),
    which is the default here too.
A full `v` restores into a factored state exactly (the means of an EMA are the EMA of the
means); a factored state cannot become a full `v`, and kept axes that match nothing on our
side are refused, naming the param.
"""

from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
import optax

from spot_jax.models import prompted
from spot_jax.train.checkpoints import CheckpointError

LAYOUTS = ("t5x", "mesh_tf")
# t5x adafactor.standard_logical_factor_rules (the ones our params use).
ROW, COLUMN, BATCH = "row", "column", "batch"
T5X_FACTOR_RULES = {
    "vocab": COLUMN,
    "embed": ROW,
    "mlp": COLUMN,
    "heads": COLUMN,
    "kv": COLUMN,
    "joined_kv": COLUMN,
    "relpos_buckets": None,
    "layers": BATCH,
    "stack": BATCH,
}

# A factoring: (axes v_row reduces = d0, axes v_col reduces = d1), or None (a full `v`).
Factoring = tuple[tuple[int, ...], tuple[int, ...]] | None


def optax_factoring(shape: Sequence[int], min_dim: int = 128, factored: bool = True) -> Factoring:
    """optax.scale_by_factored_rms's choice (`_factored_dims`: d1, d0 = argsort[-2:])."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim:
        return None
    return (int(order[-1]),), (int(order[-2]),)


def t5x_factoring(
    shape: Sequence[int],
    logical_axes: Sequence[str | None] | None,
    min_dim: int = 128,
    factored: bool = True,
    name: str = "a param",
) -> Factoring:
    """T5X Adafactor's choice with `standard_logical_factor_rules` (set_param_axes +
    _parse_rule): logical rules for rank > 2 or batched params, else the heuristic."""
    if not factored:
        return None
    rules = tuple(T5X_FACTOR_RULES.get(a) for a in logical_axes) if logical_axes else None
    if rules is not None and (ROW not in rules or COLUMN not in rules):
        rules = tuple(None if r in (ROW, COLUMN) else r for r in rules)  # apply_rules
    if rules is None or (len(shape) <= 2 and BATCH not in rules):
        if rules is None and len(shape) > 2:
            raise CheckpointError(
                f"T5X factors {name} (rank {len(shape)}) by logical axes; none known"
            )
        return optax_factoring(shape, min_dim, factored)  # T5X's heuristic is optax's
    rows = tuple(i for i, r in enumerate(rules) if r == ROW)
    cols = tuple(i for i, r in enumerate(rules) if r == COLUMN)
    return None if not rows and not cols else (cols, rows)


def mesh_tf_factoring(shape: Sequence[int], min_dim: int = 128, factored: bool = True) -> Factoring:
    """Mesh TF Adafactor's choice: d0, d1 = the two largest dims, a stable sort by -size."""
    if not factored or len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    if shape[order[1]] < min_dim:
        return None
    return (order[0],), (order[1],)


def kept_axes(ndim: int, reduced: Sequence[int]) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i not in reduced)


def writer_factoring(
    layout: str, shape, logical_axes, stored: Mapping[str, tuple], name: str = "a param"
) -> Factoring:
    """How the checkpoint's writer factored one layer's param of `shape`: not at all when it
    stored a real `v` (not the shape-(1,) dummy), else by the writer's rule (its
    min_dim_size_to_factor is unknown, but it did factor)."""
    if tuple(stored.get("v", (1,))) != (1,) or len(shape) < 2:
        return None
    if layout == "mesh_tf":
        return mesh_tf_factoring(shape, min_dim=1)
    return t5x_factoring(shape, logical_axes, min_dim=1, name=name)


def map_param(
    name: str,
    shape: tuple[int, ...],
    ours: Factoring,
    layers: Sequence[Mapping[str, np.ndarray]],
    theirs: Factoring,
    stacked: bool,
) -> dict[str, np.ndarray]:
    """One param's stored slots -> ours: {'v'} or {'v_row', 'v_col'}.

    Args:
      name: the param (for errors).
      shape: its shape here (the layer axis first when `stacked`).
      ours: our factoring of `shape`; `theirs`: the writer's of one layer's shape.
      layers: the stored slots, one dict per layer (one dict when not stacked).
    """
    off = 1 if stacked else 0

    def stack(slot):
        values = [layer.get(slot) for layer in layers]
        if any(v is None for v in values):
            raise CheckpointError(f"the checkpoint's optimizer state of {name} lacks {slot}")
        return np.stack(values) if stacked else values[0]

    if theirs is None:
        v = stack("v")
        if v.shape != shape:
            raise CheckpointError(
                f"optimizer state v of parameter {name} has shape {list(v.shape)} in the "
                f"checkpoint but the parameter has {list(shape)}"
            )
        if ours is None:
            return {"v": v}
        # Exact: a mean of the EMA of grad^2 is the EMA of the mean.
        return {"v_row": v.mean(axis=ours[0]), "v_col": v.mean(axis=ours[1])}
    if ours is None:
        raise CheckpointError(
            f"the checkpoint's second moment of parameter {name} is factored (v_row, v_col) "
            "but our optimizer keeps a full one for it (factored=False or a larger "
            "min_dim_size_to_factor?); set RESTORE_OPTIMIZER_STATE=False"
        )
    # What each stored array keeps, in our axes (a layer axis is never reduced).
    stored = {
        kept_axes(len(shape), [d + off for d in reduced]): slot
        for slot, reduced in (("v_row", theirs[0]), ("v_col", theirs[1]))
    }
    out = {}
    for slot, reduced in (("v_row", ours[0]), ("v_col", ours[1])):
        keep = kept_axes(len(shape), reduced)
        if keep not in stored:
            raise CheckpointError(
                f"optimizer state of parameter {name} {list(shape)}: our {slot} keeps axes "
                f"{keep}, but the checkpoint's factored moments keep {sorted(stored)}"
            )
        value = stack(stored[keep])
        want = tuple(shape[i] for i in keep)
        if value.shape != want:
            raise CheckpointError(
                f"optimizer state {stored[keep]} of parameter {name} has shape "
                f"{list(value.shape)} in the checkpoint but ours needs {list(want)}"
            )
        out[slot] = value
    return out


def restore_t5x_states(
    opt_state: optax.OptState,
    param_shapes: Mapping[str, Sequence[int]],
    states,
    logical_axes: Mapping[str, Sequence[str | None] | None] | None = None,
    layout: str = "t5x",
    log: Callable[[str], None] = print,
) -> optax.OptState:
    """`opt_state` with the checkpoint's Adafactor states of the params in `param_shapes`.

    Args:
      opt_state: our optimizer's state of the flat trainable params (an optax chain holding
        an `optax.FactoredState` and, with beta1, an `optax.EmaState`), possibly sharded.
      param_shapes: flat {param: shape} of the trainable params.
      states: a `t5x_states.T5XParamStates` (anything with `.params` and `.read(param)`).
      logical_axes: flat {param: logical axis names} of our model (T5X's factor rules).
      layout: 't5x' (T5X's Adafactor wrote the states) or 'mesh_tf' (imported from Mesh TF).

    Raises:
      CheckpointError: a trainable param (other than a new prompt) has no state in the
        checkpoint, or one of another shape or factoring; the message names the param.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"optimizer state layout {layout!r}: expected one of {LAYOUTS}")
    is_node = lambda n: isinstance(n, optax.FactoredState | optax.EmaState)  # noqa: E731
    nodes = [n for n in jax.tree.leaves(opt_state, is_leaf=is_node) if is_node(n)]
    if not any(isinstance(n, optax.FactoredState) for n in nodes):
        log("Note: the optimizer is no Adafactor: the checkpoint's Adafactor states are unused.")
        return opt_state
    # A new prompt has no state in a pretrained checkpoint: it starts fresh.
    names = sorted(n for n in param_shapes if not prompted.is_prompt_path(n))
    shapes = {n: tuple(param_shapes[n]) for n in names}
    keys = {
        n: [prompted.layer_name(n, i) for i in range(shapes[n][0])]
        if prompted.is_stacked(n)
        else [n]
        for n in names
    }
    for name in names:
        missing = [k for k in keys[name] if k not in states.params]
        if missing:
            raise CheckpointError(
                f"the checkpoint holds no optimizer state of parameter {missing[0]}; restore "
                "from a checkpoint of this model, or set RESTORE_OPTIMIZER_STATE=False"
            )

    def layers(name):  # read when needed, one param at a time
        return [states.read(k) for k in keys[name]]

    def restore_factored(node: optax.FactoredState) -> optax.FactoredState:
        new = {slot: dict(getattr(node, slot)) for slot in ("v_row", "v_col", "v")}
        for name in names:
            shape, stacked = shapes[name], prompted.is_stacked(name)
            ours = None if tuple(node.v[name].shape) == shape else optax_factoring(shape, 1)
            one = shape[1:] if stacked else shape
            axes = (logical_axes or {}).get(name)
            axes = tuple(axes[1:]) if stacked and axes else axes
            known = getattr(states, "factorings", {})  # a scanned writer's, by its rules
            theirs = (
                known[keys[name][0]]
                if keys[name][0] in known
                else writer_factoring(layout, one, axes, states.params[keys[name][0]], name)
            )
            for slot, value in map_param(name, shape, ours, layers(name), theirs, stacked).items():
                new[slot][name] = _put(value, getattr(node, slot)[name], name, slot)
        return node._replace(**new)

    def restore_ema(node: optax.EmaState) -> optax.EmaState:
        ema, unset = dict(node.ema), []
        for name in names:
            shape, stacked = shapes[name], prompted.is_stacked(name)
            one = shape[1:] if stacked else shape
            stored = [states.params[k].get("m") for k in keys[name]]
            if any(m is None or (tuple(m) == (1,) and one != (1,)) for m in stored):
                unset.append(name)  # beta1 was off where the checkpoint was written
                continue
            ms = [layer["m"] for layer in layers(name)]
            m = np.stack(ms) if stacked else ms[0]
            if m.shape != shape:
                raise CheckpointError(
                    f"optimizer state m of parameter {name} has shape {list(m.shape)} in the "
                    f"checkpoint but the parameter has {list(shape)}"
                )
            # optax's EMA follows the update (-lr * ...); T5X's m the subtrahend (+lr * ...).
            ema[name] = _put(-m, node.ema[name], name, "m")
        if unset:
            log(
                f"Note: the checkpoint has no first moment (m) of {len(unset)} params: it "
                "starts at 0 for them."
            )
        return node._replace(ema=ema)

    def restore(node):
        if isinstance(node, optax.FactoredState):
            return restore_factored(node)
        if isinstance(node, optax.EmaState):
            return restore_ema(node)
        return node

    out = jax.tree.map(restore, opt_state, is_leaf=is_node)
    where = getattr(states, "path", "the checkpoint")
    log(f"Restored the Adafactor states of {len(names)} params from {where} ({layout} layout).")
    return out


def _put(value: np.ndarray, like, name: str, slot: str) -> jax.Array:
    """`value` as an array of `like`'s dtype, shape and sharding."""
    value = np.asarray(value).astype(like.dtype)
    if tuple(value.shape) != tuple(like.shape):
        raise CheckpointError(
            f"optimizer state {slot} of parameter {name} has shape {list(value.shape)} but "
            f"our optimizer's has {list(like.shape)}"
        )
    sharding = getattr(like, "sharding", None)
    if sharding is None:
        return jax.numpy.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def model_logical_axes(model, lengths: Mapping[str, int]) -> dict[str, tuple | None]:
    """Flat {param: logical axis names} of a PromptedT5 (nothing allocated)."""
    import flax
    import flax.linen as nn

    boxed = model.abstract_params(1, lengths["inputs"], lengths["targets"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(boxed), sep="/")
    return {k: tuple(v.names) if isinstance(v, nn.Partitioned) else None for k, v in flat.items()}


def restore_for_run(
    path,
    state,
    model,
    lengths: Mapping[str, int],
    layout: str = "t5x",
    log: Callable[[str], None] = print,
):
    """The train state of a fresh run, its optimizer state restored from INITIAL_CHECKPOINT_PATH
    (a T5X checkpoint's `param_states`); unchanged, with a note, where the path holds none."""
    from spot_jax.interop import t5x_states

    if layout not in LAYOUTS:
        raise ValueError(f"RESTORE_OPTIMIZER_STATE layout {layout!r}: one of {LAYOUTS}")
    names = [n for n in state.trainable if not prompted.is_prompt_path(n)]
    if not names:
        return state  # prompt tuning: the prompt is new, no state to restore
    states = t5x_states.open_param_states(path)
    if states is None or not states.params:
        what = "no INITIAL_CHECKPOINT_PATH" if not path else f"{path} holds no Adafactor states"
        log(
            f"Note: RESTORE_OPTIMIZER_STATE: {what} (T5X checkpoints have them; converted, "
            "Hugging Face and seeded weights do not): the optimizer state starts fresh."
        )
        return state
    shapes = {k: v.shape for k, v in state.trainable.items()}
    opt_state = restore_t5x_states(
        state.opt_state, shapes, states, model_logical_axes(model, lengths), layout, log
    )
    return state.replace(opt_state=opt_state)


def layout_of(restore: bool | str | None) -> str | None:
    """RESTORE_OPTIMIZER_STATE -> None (off) or a layout: True is 't5x'."""
    if restore is None or restore is False:
        return None
    layout = "t5x" if restore is True else restore
    if layout not in LAYOUTS:
        raise ValueError(
            f"RESTORE_OPTIMIZER_STATE={restore!r}: expected True, False or one of {LAYOUTS}"
        )
    return layout
