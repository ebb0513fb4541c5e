"""A scanned T5X checkpoint's Adafactor states restored layer by layer.

The checkpoints are written here as a scanned T5X model saves them: every layer param stacked
on the scan axis, its second moment factored by T5X's logical rules ('embed' ROW; 'mlp',
'heads', 'kv', 'joined_kv' COLUMN; 'layers' BATCH, so kept by both moments). Our update from
the restored state, unscanned and scanned, must equal T5X's per-layer update (numpy, from
t5x/adafactor.py's rule: with a BATCH axis the rules apply at rank 2 too, so the attention
kernels' moments keep other axes than the size heuristic's).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from adafactor_helpers import model_tune_adafactor
from flax import traverse_util
from optimizer_states_test import (
    STEP,
    stored_slots,
    t5x_factored_dims,
    t5x_update,
    write_legacy_t5x,
)

from spot_jax.interop import t5x_states
from spot_jax.train import checkpoints, optim, optimizer_states

EMBED, HEADS, KV, MLP, VOCAB, LAYERS = 256, 3, 64, 512, 320, 2
LAYER_PARAMS = {  # after `encoder/layers_<i>/`: (shape, our logical axes)
    "attention/query/kernel": ((EMBED, HEADS * KV), ("embed", "joined_kv")),
    "attention/out/kernel": ((HEADS * KV, EMBED), ("joined_kv", "embed")),
    "mlp/wi_0/kernel": ((EMBED, MLP), ("embed", "mlp")),
    "mlp/wo/kernel": ((MLP, EMBED), ("mlp", "embed")),
    "pre_mlp_layer_norm/scale": ((EMBED,), ("embed",)),
}
EMBEDDING = "token_embedder/embedding"
AX = ("vocab", "embed")  # the embedding's logical axes
ROLE = {"embed": "row", "mlp": "col", "heads": "col", "kv": "col", "joined_kv": "col"}
DUMMY = np.zeros((1,), np.float32)


def rule_slots(v: np.ndarray, axes) -> dict[str, np.ndarray]:
    """What T5X's Adafactor stores under logical factor rules: v_row the mean over the COLUMN
    axes, v_col over the ROW ones, both keeping the rest (a 'layers' axis); else a full v."""
    rows = tuple(i for i, a in enumerate(axes) if ROLE.get(a) == "row")
    cols = tuple(i for i, a in enumerate(axes) if ROLE.get(a) == "col")
    if not rows or not cols:
        return {"v": v, "v_row": DUMMY, "v_col": DUMMY, "m": DUMMY}
    return {"v": DUMMY, "v_row": v.mean(axis=cols), "v_col": v.mean(axis=rows), "m": DUMMY}


def scanned_form(rest: str, value: np.ndarray, split_heads: bool):
    """One layer's array and axes as the scanned model keeps it (scalable_t5: 3-D attention)."""
    shape, axes = LAYER_PARAMS[rest]
    if split_heads and rest.startswith("attention/"):
        if rest.endswith("out/kernel"):
            return value.reshape(HEADS, KV, EMBED), ("heads", "kv", "embed")
        return value.reshape(EMBED, HEADS, KV), ("embed", "heads", "kv")
    return value, axes


def structured_moment(rng, shape) -> np.ndarray:
    v = np.ones(shape)
    for axis, n in enumerate(shape):
        scale = np.exp(1.5 * rng.standard_normal(n))
        v = v * scale.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return (v * rng.uniform(0.5, 1.5, shape) * 1e-4).astype(np.float32)


def scanned_checkpoint(tmp_path, axis=1, split_heads=False, orbax=False, corrupt=None):
    """Per-layer params, grads and true moments, and the checkpoint a scanned T5X saves."""
    rng = np.random.default_rng(0)
    layers = {}  # per-layer name -> (param, grad, v)
    for i in range(LAYERS):
        for rest, (shape, _) in LAYER_PARAMS.items():
            layers[f"encoder/layers_{i}/{rest}"] = (
                rng.normal(0, 0.05, shape).astype(np.float32),
                rng.normal(0, 1e-2, shape).astype(np.float32),
                structured_moment(rng, shape),
            )
    layers[EMBEDDING] = (
        rng.normal(0, 0.05, (VOCAB, EMBED)).astype(np.float32),
        rng.normal(0, 1e-2, (VOCAB, EMBED)).astype(np.float32),
        structured_moment(rng, (VOCAB, EMBED)),
    )
    emb_param, _, emb_v = layers[EMBEDDING]
    target = {EMBEDDING: emb_param}
    states = {EMBEDDING: stored_slots(emb_v, emb_v.shape, t5x_factored_dims(emb_v.shape, AX))}
    for rest in LAYER_PARAMS:
        per_layer = [layers[f"encoder/layers_{i}/{rest}"] for i in range(LAYERS)]
        params = [scanned_form(rest, p, split_heads)[0] for p, _, _ in per_layer]
        moments = [scanned_form(rest, v, split_heads)[0] for _, _, v in per_layer]
        axes = scanned_form(rest, per_layer[0][0], split_heads)[1]
        axes = axes[:axis] + ("layers",) + axes[axis:]
        target[f"encoder/encoder/{rest}"] = np.stack(params, axis=axis)
        states[f"encoder/encoder/{rest}"] = rule_slots(np.stack(moments, axis=axis), axes)
    if corrupt:
        corrupt(states)
    flat_states = {f"{n}/{s}": a for n, slots in states.items() for s, a in slots.items()}
    path = tmp_path / f"checkpoint_{STEP}"
    if orbax:
        import orbax.checkpoint as ocp

        nest = lambda flat: traverse_util.unflatten_dict(flat, sep="/")  # noqa: E731
        tree = {
            "target": nest(target),
            "state": {"step": np.int32(STEP), "param_states": nest(flat_states)},
        }
        with ocp.PyTreeCheckpointer() as ckptr:
            ckptr.save(path / "state", tree)
    else:
        write_legacy_t5x(path, target, flat_states, STEP)
    return layers, path


def reference_update(name, param, grad, v) -> np.ndarray:
    """T5X's step on one layer (its rules, BATCH present) or the embedding (heuristic)."""
    if name == EMBEDDING:
        fd = t5x_factored_dims(v.shape, AX)
        return t5x_update(param, grad, stored_slots(v, v.shape, fd), STEP, fd) - param
    axes = LAYER_PARAMS[name.split("/", 2)[2]][1]
    fd = t5x_factored_dims(v.shape, axes, logical_only=True) if len(v.shape) == 2 else None
    return t5x_update(param, grad, rule_slots(v, axes), STEP, fd) - param


def our_update(layers, path, scanned: bool):
    """Our update (per-layer arrays) from a state restored from the checkpoint at `path`."""
    params, grads, logical = {}, {}, {}
    for rest, (_, axes) in LAYER_PARAMS.items():
        per_layer = [layers[f"encoder/layers_{i}/{rest}"] for i in range(LAYERS)]
        if scanned:
            params[f"encoder/layers/{rest}"] = np.stack([p for p, _, _ in per_layer])
            grads[f"encoder/layers/{rest}"] = np.stack([g for _, g, _ in per_layer])
            logical[f"encoder/layers/{rest}"] = ("layers", *axes)
        else:
            for i, (p, g, _) in enumerate(per_layer):
                params[f"encoder/layers_{i}/{rest}"], grads[f"encoder/layers_{i}/{rest}"] = p, g
                logical[f"encoder/layers_{i}/{rest}"] = axes
    params[EMBEDDING], grads[EMBEDDING], _ = layers[EMBEDDING]
    logical[EMBEDDING] = AX
    optimizer = model_tune_adafactor()
    params = {k: jnp.asarray(v) for k, v in params.items()}
    state = optim.at_global_step(optimizer.init(params), STEP)
    states = t5x_states.T5XParamStates(path)
    shapes = {k: v.shape for k, v in params.items()}
    state = optimizer_states.restore_t5x_states(state, shapes, states, logical, log=print)
    updates, _ = optimizer.update({k: jnp.asarray(v) for k, v in grads.items()}, state, params)
    out = {}
    for name, u in updates.items():
        u = np.asarray(u, np.float64)
        if name.startswith("encoder/layers/"):
            rest = name.split("/", 2)[2]
            out.update({f"encoder/layers_{i}/{rest}": u[i] for i in range(LAYERS)})
        else:
            out[name] = u
    return out


@pytest.mark.parametrize(
    "axis,split_heads,orbax",
    [(1, False, False), (1, True, False), (0, True, False), (1, True, True)],
    ids=["flaxformer", "scalable_t5", "scalable_t5-axis0", "scalable_t5-orbax"],
)
@pytest.mark.parametrize("scanned", [False, True], ids=["into-layers", "into-stacks"])
def test_a_scanned_checkpoints_states_give_t5xs_update(tmp_path, axis, split_heads, orbax, scanned):
    layers, path = scanned_checkpoint(tmp_path, axis, split_heads, orbax)
    states = t5x_states.T5XParamStates(path)
    assert states.step == STEP
    q = "encoder/layers_1/attention/query/kernel"
    assert states.params[q]["v_row"] == (EMBED,) and states.params[q]["v_col"] == (HEADS * KV,)
    ours = our_update(layers, path, scanned)
    assert set(ours) == set(layers)
    for name, (param, grad, v) in layers.items():
        want = reference_update(name, param, grad, v)
        assert np.abs(want).max() > 1e-6, name
        np.testing.assert_allclose(ours[name], want, rtol=1e-4, atol=1e-12, err_msg=name)


def test_the_rules_keep_other_axes_than_the_heuristic(tmp_path):
    # Why `factorings` matters: read by the size heuristic (as an unscanned layer's), the
    # query kernel's stored moments would be taken for each other's.
    layers, path = scanned_checkpoint(tmp_path)
    states = t5x_states.T5XParamStates(path)
    q = "encoder/layers_0/attention/query/kernel"
    assert states.factorings[q] == ((1,), (0,))  # v_row reduces joined_kv, keeps embed
    assert optimizer_states.optax_factoring(LAYER_PARAMS["attention/query/kernel"][0]) == (
        (0,),
        (1,),
    )
    np.testing.assert_allclose(states.read(q)["v_row"], layers[q][2].mean(axis=1), rtol=1e-6)
    norm = "encoder/layers_1/pre_mlp_layer_norm/scale"
    assert states.factorings[norm] is None
    np.testing.assert_array_equal(states.read(norm)["v"], layers[norm][2])


def test_moments_factored_by_other_rules_are_refused_by_name(tmp_path):
    wi = "encoder/encoder/mlp/wi_0/kernel"

    def heuristic(states):  # v_row over the largest axis (mlp) AND the layers
        states[wi]["v_row"] = states[wi]["v_row"][:, 0]

    _, path = scanned_checkpoint(tmp_path, corrupt=heuristic)
    with pytest.raises(checkpoints.CheckpointError, match=f"{wi}/v_row has shape.*other factor"):
        t5x_states.T5XParamStates(path)
