"""A training run (MODEL_DIR) as a source of whole-model weights, for `spot-jax export`.

A train checkpoint holds only the trained params (TRAINABLE: every weight for model tuning,
the prompt for prompt tuning). The whole model is those params over the frozen weights the run
started from: its INITIAL_CHECKPOINT_PATH (read from MODEL_DIR/config.gin) or one given.
"""

import json
from collections.abc import Callable

import numpy as np
from etils import epath

from spot_jax.interop.orbax_tree import OrbaxParams
from spot_jax.models import prompted
from spot_jax.models.config import T5Config
from spot_jax.spot import runs as runs_lib
from spot_jax.train import checkpoints, frozen_checkpoint, optimizer_states
from spot_jax.train.checkpoints import PROMPT_PATH, CheckpointError

PLACEHOLDER = np.zeros((1,), np.float32)  # T5X's value of a slot not in use


def initial_checkpoint_of(run_dir: epath.PathLike) -> str | None:
    """The INITIAL_CHECKPOINT_PATH macro of the run's operative config.gin (None if unset or
    not a literal path, e.g. a gin reference: the caller asks for --frozen)."""
    config = epath.Path(run_dir) / "config.gin"
    if not config.exists():
        return None
    value = runs_lib.read_macros(config.read_text()).get("INITIAL_CHECKPOINT_PATH")
    return value if isinstance(value, str) else None


def read_run(
    run_dir: epath.PathLike, frozen: epath.PathLike | None = None, log=print
) -> tuple[T5Config, Callable[[str], np.ndarray], np.ndarray | None]:
    """The model a run trained: config, a reader of its params (T5X names), its prompt.

    Args:
      run_dir: a training MODEL_DIR with an Orbax train checkpoint.
      frozen: the spot_jax frozen checkpoint the run started from; default its
        INITIAL_CHECKPOINT_PATH.

    Raises:
      CheckpointError: no train checkpoint, no frozen weights to start from, or a frozen
        checkpoint of another model.
    """
    from spot_jax.interop import hf

    run_dir = checkpoints.absolute_path(run_dir)
    step = checkpoints.latest_train_step(run_dir)
    if step is None:
        raise CheckpointError(f"{run_dir} holds no train checkpoint (checkpoints/<step>)")
    frozen = frozen or initial_checkpoint_of(run_dir)
    if not frozen:
        raise CheckpointError(
            f"{run_dir} started from a seeded init (INITIAL_CHECKPOINT_PATH = None), so there "
            "are no frozen weights to put its trained params on; pass --frozen FROZEN_DIR"
        )
    if not (epath.Path(frozen) / frozen_checkpoint.FROZEN_META).exists():
        raise CheckpointError(
            f"the run's frozen weights {frozen} are not a spot_jax frozen checkpoint; convert "
            "them with `spot-jax convert` and pass that as --frozen"
        )
    config, read_frozen = hf.iter_frozen(frozen)
    shape = (
        json.loads((run_dir / "model.json").read_text())
        if (run_dir / "model.json").exists()
        else {}
    )
    diffs = [
        f"{k}: {shape[k]} in the run vs {v}"
        for k, v in config.shape_dict().items()
        if k in shape and shape[k] != v
    ]
    if diffs:
        raise CheckpointError(
            f"frozen checkpoint {frozen} is of another model than {run_dir} ({'; '.join(diffs)}); "
            "pass the one it was trained from as --frozen"
        )
    trained = OrbaxParams(run_dir / "checkpoints" / str(step) / "state", prefix="trainable")
    # A scanned run stores layers stacked (`encoder/layers/...`); export wants `layers_<i>`.
    owner = {}
    for name, shape_ in trained.shapes.items():
        if prompted.is_stacked(name):
            owner.update({prompted.layer_name(name, i): (name, i) for i in range(shape_[0])})
        elif name != PROMPT_PATH:
            owner[name] = (name, None)
    if owner:
        log(
            f"exporting {run_dir} at step {step}: {len(owner)} trained params over the frozen "
            f"weights of {frozen}"
        )
    else:
        log(f"exporting {run_dir} at step {step}: its prompt, with the frozen weights of {frozen}")
    cache: dict[str, np.ndarray] = {}

    def read(name: str) -> np.ndarray:
        if name not in owner:
            return read_frozen(name)
        stored, index = owner[name]
        if stored not in cache:
            cache.clear()  # one stacked array at a time
            cache[stored] = trained.read(stored)
        value = cache[stored]
        return value if index is None else value[index]

    prompt = trained.read(PROMPT_PATH).astype(np.float32) if PROMPT_PATH in trained.shapes else None
    return config, read, prompt


def read_adafactor_states(
    run_dir: epath.PathLike, log=print
) -> dict[str, dict[str, np.ndarray]] | None:
    """The run's Adafactor moments per trained param, in T5X's slots {v_row, v_col, v, m}.

    Our `optim.adafactor` keeps them in the chain's first state (optax's FactoredState): for a
    param of rank <= 2, T5X's Adafactor factors it by the same rule and keeps the same axes
    (`optimizer_states`), so the slots map one to one; `m` is T5X's (1,) placeholder (no
    beta1). None, with the reason logged, where they do not map: another optimizer, a first
    moment (beta1), or a scanned run's stacked param factored over its layer axis. A stacked
    param's moments are written per layer (`layers_<i>`, as its weights).
    """
    run_dir = checkpoints.absolute_path(run_dir)
    step = checkpoints.latest_train_step(run_dir)
    state_dir = run_dir / "checkpoints" / str(step) / "state"
    try:
        opt = OrbaxParams(state_dir, prefix="opt_state")
    except CheckpointError:
        opt = None
    trained = OrbaxParams(state_dir, prefix="trainable").shapes
    slots = {}
    for name in trained:
        keys = {slot: f"0/{slot}/{name}" for slot in ("v_row", "v_col", "v")}
        if opt is None or not all(k in opt.shapes for k in keys.values()):
            log(f"{run_dir}: no Adafactor state for {name} (another optimizer?); none exported")
            return None
        slots[name] = keys
    if any(k.split("/")[1] in ("ema", "mu", "nu") for k in opt.shapes):
        log(f"{run_dir}: its optimizer keeps a first moment; Adafactor states not exported")
        return None
    flat = [key for keys in slots.values() for key in keys.values()]
    values = dict(zip(flat, opt.read_many([f"opt_state/{k}" for k in flat]), strict=True))
    out = {}
    for name, keys in slots.items():
        arrays = {slot: np.asarray(values[key], np.float32) for slot, key in keys.items()}
        if not prompted.is_stacked(name):
            out[name] = {**arrays, "m": PLACEHOLDER}
            continue
        layers = _layer_slots(name, tuple(trained[name]), arrays)
        if layers is None:
            log(
                f"{run_dir}: {name} {list(trained[name])} is factored over its layer axis, "
                "which T5X's per-layer moments cannot hold; Adafactor states not exported"
            )
            return None
        out.update(layers)
    return out


def _layer_slots(name: str, shape, arrays) -> dict[str, dict[str, np.ndarray]] | None:
    """A stacked param's moments as its layers' (T5X's `layers_<i>`), or None where optax
    factored it over the layer axis (a stack of more layers than a layer's second largest dim).

    optax factors the stacked [layers, ...] shape by its two largest axes; where the layer
    axis is not one of them it stays in both moments, and each layer's slice is what a
    per-layer param of the same rule would hold (row means within the layer, as T5X's)."""
    if arrays["v"].shape != (1,):  # unfactored: the full moment, layer by layer
        return {
            prompted.layer_name(name, i): {
                "v": arrays["v"][i],
                "v_row": PLACEHOLDER,
                "v_col": PLACEHOLDER,
                "m": PLACEHOLDER,
            }
            for i in range(shape[0])
        }
    stacked = optimizer_states.optax_factoring(shape, min_dim=1)
    per_layer = optimizer_states.optax_factoring(shape[1:], min_dim=1)
    if stacked is None or per_layer != tuple(tuple(d - 1 for d in r) for r in stacked):
        return None
    return {
        prompted.layer_name(name, i): {
            "v_row": arrays["v_row"][i],
            "v_col": arrays["v_col"][i],
            "v": PLACEHOLDER,
            "m": PLACEHOLDER,
        }
        for i in range(shape[0])
    }
