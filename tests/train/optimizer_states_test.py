"""A T5X checkpoint's factored Adafactor states restored into our optimizer state: one T5X
update computed here in numpy from t5x/adafactor.py's rule, and the errors of a mismatch."""

from pathlib import Path

import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from adafactor_helpers import factored_state, model_tune_adafactor
from flax import traverse_util

from spot_jax.interop import t5x_states
from spot_jax.train import checkpoints, optim, optimizer_states

# ---------------------------------------------------------------------------------------------
# Hand-built factored states: one T5X update in numpy vs ours from the restored state.

# t5x adafactor.standard_logical_factor_rules, as far as these params go.
T5X_RULES = {"embed": "ROW", "joined_kv": "COLUMN", "mlp": "COLUMN", "vocab": "COLUMN"}
STEP = 1000  # the checkpoint's step: decay 1 - 1001^-0.8 ~ 0.996, so the restored v dominate
PARAMS = {  # name: (shape, logical axes)
    "encoder/layers_0/attention/out/kernel": ((256, 256), ("joined_kv", "embed")),
    "encoder/layers_0/attention/query/kernel": ((256, 256), ("embed", "joined_kv")),
    "encoder/layers_0/mlp/wi_0/kernel": ((256, 512), ("embed", "mlp")),
    "encoder/layers_0/mlp/wo/kernel": ((512, 256), ("mlp", "embed")),
    "encoder/layers_0/pre_attention_layer_norm/scale": ((256,), ("embed",)),
}


def t5x_factored_dims(shape, logical_axes, logical_only=False):
    """t5x Adafactor's (d1, d0) under logical factor rules (set_param_axes + _parse_rule):
    a param of rank <= 2 without a BATCH axis falls back to the size heuristic.
    `logical_only` skips that fallback (what the rules alone would say)."""
    rule = tuple(T5X_RULES.get(a) for a in logical_axes)
    if not logical_only and len(shape) <= 2 and "BATCH" not in rule:
        if len(shape) < 2:
            return None
        order = np.argsort(shape)
        if shape[order[-2]] < 128:
            return None
        return (int(order[-2]),), (int(order[-1]),)
    rows = tuple(i for i, r in enumerate(rule) if r == "ROW")
    cols = tuple(i for i, r in enumerate(rule) if r == "COLUMN")
    return (rows, cols) if rows and cols else None


def mesh_tf_factored_dims(shape):
    """Mesh TF Adafactor's (d0, d1): the largest dims, by a stable sort on -size."""
    if len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    return None if shape[order[1]] < 128 else ((order[0],), (order[1],))


def t5x_update(param, grad, slots, step, fd, lr=1e-3):
    """One T5X Adafactor step (t5x adafactor.py apply_param_gradient), float64 numpy: decay
    0.8, multiply_by_parameter_scale, clipping 1.0, no weight decay, beta1 None."""
    param, grad = param.astype(np.float64), grad.astype(np.float64)
    decay = 1.0 - (step + 1.0) ** -0.8
    grad_sqr = grad * grad + 1e-30
    update_scale = lr * max(np.sqrt(np.mean(param * param)), 1e-3)
    if fd is not None:
        d1, d0 = fd
        new_v_row = decay * slots["v_row"] + (1 - decay) * grad_sqr.mean(axis=d0)
        new_v_col = decay * slots["v_col"] + (1 - decay) * grad_sqr.mean(axis=d1)
        reduced_d1 = tuple(d - len([e for e in d0 if e < d]) for d in d1)
        row_col_mean = new_v_row.mean(axis=reduced_d1, keepdims=True)
        row_factor = (new_v_row / row_col_mean) ** -0.5
        col_factor = new_v_col**-0.5
        y = grad * np.expand_dims(row_factor, d0) * np.expand_dims(col_factor, d1)
    else:
        y = grad * (decay * slots["v"] + (1 - decay) * grad_sqr) ** -0.5
    y = y / max(1.0, np.sqrt(np.mean(y * y)) / 1.0)
    return param - update_scale * y


def true_second_moments(seed=0):
    """A strongly structured 'full' second moment per param (rows and columns differ)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, _) in PARAMS.items():
        v = np.ones(shape)
        for axis, n in enumerate(shape):
            scale = np.exp(1.5 * rng.standard_normal(n)).reshape(
                [-1 if i == axis else 1 for i in range(len(shape))]
            )
            v = v * scale
        out[name] = (v * rng.uniform(0.5, 1.5, shape) * 1e-4).astype(np.float32)
    return out


def stored_slots(v_true, shape, fd, mesh_tf=False):
    """The slots a writer stores for a second moment `v_true`: T5X's `fd` = (d1, d0), v_row
    the mean over d0; Mesh TF's `fd` = (d0, d1), _slot_vr the mean over d0."""
    dummy = np.zeros((1,), np.float32)
    if fd is None:
        return {"m": dummy, "v": v_true, "v_row": dummy, "v_col": dummy}
    row_reduced, col_reduced = (fd[0], fd[1]) if mesh_tf else (fd[1], fd[0])
    return {
        "m": dummy,
        "v": dummy,
        "v_row": v_true.mean(axis=row_reduced).astype(np.float32),
        "v_col": v_true.mean(axis=col_reduced).astype(np.float32),
    }


def write_legacy_t5x(path: Path, target, param_states, step):
    """A legacy T5X checkpoint (format 3) with every array inline (flax msgpack ext type 1)."""

    def default(obj):
        if isinstance(obj, np.ndarray):
            payload = (list(obj.shape), obj.dtype.name, obj.tobytes("C"))
            return msgpack.ExtType(1, msgpack.packb(payload, use_bin_type=True))
        raise TypeError(type(obj))

    state = {"step": step, "param_states": traverse_util.unflatten_dict(param_states, sep="/")}
    root = {
        "version": 3,
        "optimizer": {"target": traverse_util.unflatten_dict(target, sep="/"), "state": state},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "checkpoint").write_bytes(msgpack.packb(root, default=default, use_bin_type=True))


def factored_setup(tmp_path, mesh_tf=False, corrupt=None):
    rng = np.random.default_rng(1)
    params = {n: rng.normal(0, 0.05, s).astype(np.float32) for n, (s, _) in PARAMS.items()}
    grads = {n: rng.normal(0, 1e-2, s).astype(np.float32) for n, (s, _) in PARAMS.items()}
    v_true = true_second_moments()
    states = {}
    for name, (shape, logical) in PARAMS.items():
        fd = mesh_tf_factored_dims(shape) if mesh_tf else t5x_factored_dims(shape, logical)
        states[name] = stored_slots(v_true[name], shape, fd, mesh_tf)
    if corrupt:
        corrupt(states)
    write_legacy_t5x(
        tmp_path / "checkpoint_1000",
        params,
        {f"{n}/{s}": a for n, slots in states.items() for s, a in slots.items()},
        STEP,
    )
    return params, grads, v_true, t5x_states.T5XParamStates(tmp_path / "checkpoint_1000")


def our_step(params, grads, states, layout="t5x", optimizer=None):
    optimizer = optimizer or model_tune_adafactor()
    params = {k: jnp.asarray(v) for k, v in params.items()}
    state = optim.at_global_step(optimizer.init(params), STEP)
    state = optimizer_states.restore_t5x_states(
        state,
        {k: v.shape for k, v in params.items()},
        states,
        {n: a for n, (_, a) in PARAMS.items()},
        layout=layout,
        log=lambda _: None,
    )
    updates, _ = optimizer.update({k: jnp.asarray(v) for k, v in grads.items()}, state, params)
    return {k: np.asarray(updates[k], np.float64) for k in params}, state


def reference_step(params, grads, v_true, logical_only=False):
    """T5X's step (new param - param) from the moments T5X would have stored for `v_true`."""
    out = {}
    for name, (shape, logical) in PARAMS.items():
        fd = t5x_factored_dims(shape, logical)
        slots = stored_slots(v_true[name], shape, fd)
        if logical_only and fd is not None:
            # Read the same stored arrays as if T5X factored 2-D params by logical axes.
            fd = t5x_factored_dims(shape, logical, logical_only=True)
        new = t5x_update(params[name], grads[name], slots, STEP, fd)
        out[name] = new - params[name].astype(np.float64)
    return out


def test_one_factored_update_matches_t5x_numpy(tmp_path):
    params, grads, v_true, states = factored_setup(tmp_path)
    assert states.step == STEP
    ours, state = our_step(params, grads, states)
    want = reference_step(params, grads, v_true)
    fs = factored_state(state)
    for name, (shape, _) in PARAMS.items():
        assert np.abs(want[name]).max() > 1e-6, name
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-4, atol=1e-12, err_msg=name)
        assert (fs.v[name].shape == (1,)) == (len(shape) == 2), name  # 2-D ones are factored
    # The square out kernel (joined_kv, embed): 'embed' is T5X's ROW axis, yet T5X (as optax)
    # factors a 2-D param by size, v_row keeping axis 0. Read by the logical rule instead, the
    # same stored arrays would give a clearly different step: this test sees a swap.
    out = "encoder/layers_0/attention/out/kernel"
    logical = reference_step(params, grads, v_true, logical_only=True)
    assert (
        np.abs((logical[out] - params[out]) - (want[out] - params[out])).max()
        > 1e-2 * np.abs(want[out] - params[out]).max()
    )


def test_mesh_tf_layout_swaps_the_square_kernels_back(tmp_path):
    params, grads, v_true, states = factored_setup(tmp_path, mesh_tf=True)
    want = reference_step(params, grads, v_true)
    ours, _ = our_step(params, grads, states, layout="mesh_tf")
    for name in PARAMS:
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-4, atol=1e-12, err_msg=name)
    # Read as T5X reads them (its own layout), the square kernels' moments are transposed.
    as_t5x, _ = our_step(params, grads, states, layout="t5x")
    for name in PARAMS:
        square = len(PARAMS[name][0]) == 2 and len(set(PARAMS[name][0])) == 1
        same = np.allclose(as_t5x[name], ours[name], rtol=1e-3, atol=0)
        assert same != square, name


def test_a_full_v_restores_into_a_factored_state_exactly(tmp_path):
    # A writer that did not factor (larger min_dim_size_to_factor): the means of its full v
    # are what ours would have accumulated.
    def unfactor(states):
        v_true = true_second_moments()
        wi = "encoder/layers_0/mlp/wi_0/kernel"
        states[wi] = stored_slots(v_true[wi], v_true[wi].shape, None)

    params, grads, v_true, states = factored_setup(tmp_path, corrupt=unfactor)
    _, state = our_step(params, grads, states)
    fs = factored_state(state)
    wi = "encoder/layers_0/mlp/wi_0/kernel"
    np.testing.assert_allclose(np.asarray(fs.v_row[wi]), v_true[wi].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fs.v_col[wi]), v_true[wi].mean(axis=0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Mismatches: clear errors naming the param.


def test_a_moment_of_another_shape_names_the_param(tmp_path):
    wi = "encoder/layers_0/mlp/wi_0/kernel"

    def shrink(states):
        states[wi]["v_col"] = states[wi]["v_col"][:128]

    params, grads, _, states = factored_setup(tmp_path, corrupt=shrink)
    with pytest.raises(
        checkpoints.CheckpointError, match=rf"v_col of parameter {wi} has shape \[128\].*\[512\]"
    ):
        our_step(params, grads, states)


def test_a_param_without_state_is_named(tmp_path):
    wo = "encoder/layers_0/mlp/wo/kernel"
    params, grads, _, states = factored_setup(tmp_path, corrupt=lambda s: s.pop(wo))
    with pytest.raises(checkpoints.CheckpointError, match=f"no optimizer state of parameter {wo}"):
        our_step(params, grads, states)


def test_factored_moments_cannot_fill_a_full_v(tmp_path):
    params, grads, _, states = factored_setup(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="out/kernel is factored"):
        our_step(params, grads, states, optimizer=model_tune_adafactor(factored=False))


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="RESTORE_OPTIMIZER_STATE='adam'"):
        optimizer_states.layout_of("adam")
    assert optimizer_states.layout_of(True) == "t5x" and optimizer_states.layout_of(False) is None
