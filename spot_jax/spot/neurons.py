"""ON: the overlap of FFN neurons two prompts activate in the frozen model (Su et al.).

Su et al. feed the prompt with a one-token input through the frozen model, record the FFN's
first-layer outputs ("between the 1st and 2nd layers of the FFN") of every layer at one position
(for T5: the decoder's first step), binarise them (> 0 is "activated"), and score two prompts by
the cosine of the binary vectors, |A¹ ∩ A²| / sqrt(|A¹| |A²|), over all layers concatenated
(or a window of layers). T5 1.1's FFN is gated, gelu(x wi_0) * (x wi_1); the gate's
pre-activation x wi_0 is the hook point here, since gelu(z) > 0 exactly when z > 0.

Activations are captured with Flax's `capture_intermediates` on the `wi_0` Dense modules, so
the model code needs no hooks.
"""

import os
import re
import tempfile
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from spot_jax.models import prompts
from spot_jax.models.prompted import PROMPT_PATH, PromptedT5

EOS_ID = 1


def activations(
    model: PromptedT5,
    params,
    prompt: np.ndarray,
    inputs: np.ndarray | None = None,
    where: str = "decoder",
) -> np.ndarray:
    """Which FFN neurons fire: bool [B, layers, mlp_dim].

    Args:
      model: the prompted T5 (its prompt length must be P).
      params: the frozen params, flat ('a/b/c' keys); the prompt entry is replaced.
      prompt: [P, H] the prompt to probe with.
      inputs: [B, T] encoder input tokens (after the prompt); default Su et al.'s probe, the
        prompt alone plus one end-of-sequence token ([1, 1]).
      where: 'decoder' (Su et al.'s T5 hook: first decoder step) or 'encoder' (the first
        prompt position, wherever the model's `prompt_position` puts it).
    """
    if where not in ("decoder", "encoder"):
        raise ValueError(f"where must be 'decoder' or 'encoder', not {where!r}")
    tokens = np.full((1, 1), EOS_ID, np.int32) if inputs is None else np.asarray(inputs, np.int32)
    flat = {k: v for k, v in params.items() if k != PROMPT_PATH}
    flat[PROMPT_PATH] = jnp.asarray(prompt, jnp.float32)
    nested = flax.traverse_util.unflatten_dict(flat, sep="/")
    dec = np.zeros((tokens.shape[0], 1), np.int32)  # the decoder's start token

    def is_gate(module, method_name):
        path = module.scope.path if module.scope is not None else ()
        return module.name == "wi_0" and method_name == "__call__" and where in path

    _, state = model.module.apply(
        {"params": nested},
        tokens,
        dec,
        np.ones_like(dec),
        capture_intermediates=is_gate,
        mutable=["intermediates"],
    )
    found = flax.traverse_util.flatten_dict(state["intermediates"], sep="/")
    # The position read in each row: the decoder's first step, or the prompt's first row.
    at = np.zeros(tokens.shape[0], np.int64)
    if where == "encoder":
        order = prompts.prompt_order(tokens, model.prompt_length, model.prompt_position)
        at = np.argmax(np.asarray(order) == 0, axis=1)
    rows = np.arange(tokens.shape[0])
    by_layer = []
    for key, value in found.items():
        out = np.asarray(jax.device_get(value[0] if isinstance(value, tuple) else value))
        m = re.search(r"layers_(\d+)", key)
        if m:  # one Python-loop layer: [B, T, F]
            by_layer.append((int(m.group(1)), out[rows, at, :]))
        else:  # nn.scan stacks the layers first: [L, B, T, F]
            by_layer += [(i, out[i, rows, at, :]) for i in range(out.shape[0])]
    if not by_layer:
        raise RuntimeError(f"no {where} wi_0 activations captured; is this a T5 1.1 model?")
    stacked = np.stack([a for _, a in sorted(by_layer, key=lambda x: x[0])], axis=1)
    return stacked > 0


def overlap(a1: np.ndarray, a2: np.ndarray, layers: slice | None = None) -> float:
    """ON of two activation patterns bool [B, L, F]: the mean over inputs of the binary cosine.

    Args:
      a1, a2: activations of two prompts on the same inputs.
      layers: a window of layers (Su et al. report [0, 3), [3, 6), ... and all); default all.
    """
    if a1.shape != a2.shape:
        raise ValueError(f"activation shapes differ: {a1.shape} vs {a2.shape}")
    if layers is not None:
        a1, a2 = a1[:, layers], a2[:, layers]
    x1 = a1.reshape(a1.shape[0], -1).astype(np.float64)
    x2 = a2.reshape(a2.shape[0], -1).astype(np.float64)
    inter = (x1 * x2).sum(-1)
    denom = np.sqrt(x1.sum(-1) * x2.sum(-1))
    # No neuron active for one prompt: no overlap (rather than 0/0).
    return float(np.mean(np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)))


def on_matrix(
    model: PromptedT5,
    params,
    prompts: Sequence[np.ndarray],
    inputs: np.ndarray | None = None,
    layers: slice | None = None,
) -> np.ndarray:
    """Pairwise ON [N, N] of N prompts on the same inputs (symmetric, 1 on the diagonal)."""
    acts = [activations(model, params, p, inputs) for p in prompts]
    n = len(acts)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = overlap(acts[i], acts[j], layers)
    return out


def frozen_model(model_dir: epath.PathLike) -> tuple[PromptedT5, dict]:
    """The frozen model of a run (its config.gin's T5 config, its checkpoint or seeded init).

    Returns:
      (model, flat params on host devices). Resets gin's global config.
    """
    import gin

    from spot_jax import axes
    from spot_jax.models import config as config_lib
    from spot_jax.spot import runs as runs_lib
    from spot_jax.train import initial_params, sharding

    model_dir = epath.Path(model_dir)
    info = runs_lib.run_info(model_dir)
    if info["multi_task_prompt"] != "none":
        raise runs_lib.LibraryError(
            f"{model_dir} trained multi-task prompts: its activations depend on each input's "
            "task; measure neurons on a library entry of one task (library add --task-index)"
        )
    text = (model_dir / "config.gin").read_text()
    macros = runs_lib.read_macros(text)
    gin.clear_config()
    # The file, not the text: gin registers `from __gin__ import dynamic_registration` imports
    # only when parsing files.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.gin")
        with open(path, "w") as f:
            f.write(text)
        gin.parse_config_file(path, skip_unknown=False)
    t5_config = gin.get_configurable(f"{config_lib.__name__}.T5Config")()
    gin.clear_config()
    model = PromptedT5(t5_config, info["prompt_length"], prompt_position=info["prompt_position"])
    mesh = sharding.make_mesh(1)
    params, _ = initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=mesh.shape[axes.DATA],
        feature_lengths={"inputs": 1, "targets": 1},
        initial_checkpoint_path=macros.get("INITIAL_CHECKPOINT_PATH"),
        seed=int(macros.get("SEED", 0)),
    )
    host = {k: np.asarray(jax.device_get(v)) for k, v in params.items()}
    return model, host
