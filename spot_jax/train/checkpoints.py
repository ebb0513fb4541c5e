"""Run checkpoints: Orbax train state in MODEL_DIR, numpy prompts (frozen-model checkpoints,
what INITIAL_CHECKPOINT_PATH names: `frozen_checkpoint`).

Restore policy (as T5X, maxtext and big_vision):
  1. resume MODEL_DIR if it holds a checkpoint (trainable state, step, data position);
  2. else start the trainable state fresh: frozen weights from INITIAL_CHECKPOINT_PATH and the
     prompt from its initialiser (random, sampled vocab, class labels or PROMPT_FILE);
  3. with no INITIAL_CHECKPOINT_PATH the frozen weights are a seeded fresh init (tests, demos).
Frozen weights are restored straight into their shardings; nothing is built on one device.

MODEL_DIR layout:
  checkpoints/<step>/{state,meta}   Orbax: trainable params + optimizer state; JSON meta
  numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt   np.save, float32 [P, H]
  model.json                        the model's shape, checked on every resume
  metrics.jsonl, config.gin
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from spot_jax.models import prompted
from spot_jax.models.config import T5Config
from spot_jax.paths import absolute_path  # noqa: F401  (checkpoints.absolute_path, used widely)

PROMPT_PATH = prompted.PROMPT_PATH


class CheckpointError(ValueError):
    """A checkpoint that does not fit the configured model, or is missing or broken."""


# How a run placed its prompts (PromptedT5's arguments of these names, the gin macros beside
# them), recorded in model.json only where not the default, so older runs' files still match.
# (prompt_attention: a list of the allowed kinds, as JSON keeps it.)
PLACEMENT_DEFAULTS = {
    "prompt_position": "prefix",
    "per_layer_prompt": "none",
    "prompt_attention": None,
    "multi_task_prompt": "none",
    "num_tasks": 0,
    "task_prompt_length": 0,
    "shared_prompt_features": 0,
}
PLACEMENT_MACROS = {
    "prompt_position": "PROMPT_POSITION",
    "per_layer_prompt": "PER_LAYER_PROMPT",
    "prompt_attention": "PROMPT_ATTENTION",
    "multi_task_prompt": "MULTI_TASK_PROMPT",
    "num_tasks": "NUM_TASKS",
    "task_prompt_length": "TASK_PROMPT_LENGTH",
    "shared_prompt_features": "SHARED_PROMPT_FEATURES",
}


def placement(model: prompted.PromptedT5) -> dict[str, Any]:
    placed = {k: getattr(model, k) for k in PLACEMENT_DEFAULTS}
    if placed["prompt_attention"] is not None:
        placed["prompt_attention"] = list(placed["prompt_attention"])
    return placed


def _model_fingerprint(config: T5Config, prompt_length: int, placed: Mapping[str, Any]) -> dict:
    recorded = {k: v for k, v in placed.items() if v != PLACEMENT_DEFAULTS[k]}
    return {**config.shape_dict(), "prompt_length": prompt_length, **recorded}


def trained_placement(model_dir: epath.PathLike) -> dict[str, Any] | None:
    """How a run placed its prompts (MODEL_DIR/model.json; the defaults unless recorded), or
    None for a directory that holds no run."""
    record = epath.Path(model_dir) / "model.json"
    if not record.exists():
        return None
    have = json.loads(record.read_text())
    return {k: have.get(k, default) for k, default in PLACEMENT_DEFAULTS.items()}


def check_model_dir(
    model_dir: epath.PathLike, config: T5Config, prompt_length: int, **placed: Any
) -> None:
    """Records the model shape (and a prompt placement other than the default) in MODEL_DIR,
    or refuses a MODEL_DIR of a different model. `placed`: `placement(model)`'s entries (the
    defaults for those not given).

    This guards against T5X's stale-model_dir trap (t5x#1067): a checkpoint of another size
    silently taking precedence.
    """
    path = epath.Path(model_dir) / "model.json"
    placed = {**PLACEMENT_DEFAULTS, **placed}
    want = _model_fingerprint(config, prompt_length, placed)
    if path.exists():
        have = json.loads(path.read_text())
        shape = {k: v for k, v in want.items() if k not in PLACEMENT_DEFAULTS}
        diffs = field_diffs(have, shape, "{k}: {have} in MODEL_DIR vs {want} now")
        for key, default in PLACEMENT_DEFAULTS.items():  # recorded only when not the default
            if have.get(key, default) != placed[key]:
                diffs.append(f"{key}: {have.get(key, default)} in MODEL_DIR vs {placed[key]} now")
        if diffs:
            raise CheckpointError(
                f"MODEL_DIR {model_dir} holds a run of a different model ({'; '.join(diffs)}); "
                "use a new MODEL_DIR or the model it was trained with"
            )
    elif jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, indent=2))


# ---------------------------------------------------------------------------------------------
# Train state (Orbax).


class TrainCheckpointer:
    """Orbax CheckpointManager over MODEL_DIR/checkpoints: keeps the last `keep` and the best."""

    def __init__(
        self,
        model_dir: epath.PathLike,
        keep: int = 1,
        best_metric: str | None = None,
        best_mode: str = "max",
    ):
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        if best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            create=True,
            # Prompt states are tiny; a synchronous save keeps the kill-and-resume story simple.
            enable_async_checkpointing=False,
        )
        self.directory = absolute_path(model_dir) / "checkpoints"
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: Mapping[str, Any], metrics: Mapping | None = None):
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
            ),
            metrics=dict(metrics) if metrics else None,
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """Restores into the shardings of `abstract_state` (ShapeDtypeStructs with sharding)."""
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(
                f"cannot restore checkpoint {self.directory / str(step)} into this model/optimizer "
                f"({type(e).__name__}: {str(e)[:300]}); was it written with another TRAINABLE, "
                "optimizer or model? Use a new MODEL_DIR"
            ) from e
        return restored.state, restored.meta

    def close(self):
        self.manager.close()


def latest_train_step(model_dir: epath.PathLike) -> int | None:
    """The newest finished Orbax train checkpoint in MODEL_DIR/checkpoints, or None.

    Read from the folder names, without a CheckpointManager, so eval and export never create
    anything in a run's MODEL_DIR. Orbax writes a save under a temporary name
    (`<step>.orbax-checkpoint-tmp-...`) that is not all digits, so a half-written one is
    never picked.
    """
    root = absolute_path(model_dir) / "checkpoints"
    steps = [
        int(p.name)
        for p in (root.iterdir() if root.is_dir() else [])
        if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()
    ]
    return max(steps) if steps else None


def restore_trained(
    model_dir: epath.PathLike,
    abstract_flat: Mapping[str, jax.ShapeDtypeStruct],
    skip: tuple[str, ...] = (),
) -> tuple[int, dict[str, jax.Array]] | None:
    """The trained params of MODEL_DIR's newest train checkpoint, in `abstract_flat`'s shardings.

    Only the trainable params are read; the optimizer state is left on disk. Params named in
    `skip` are not read either (eval takes the prompt from its numpy files or PROMPT_FILE).

    Returns:
      (step, {name: array}) or None when MODEL_DIR holds no train checkpoint.

    Raises:
      CheckpointError: the checkpoint holds a param this model lacks or of another shape.
    """
    step = latest_train_step(model_dir)
    if step is None:
        return None
    state_dir = absolute_path(model_dir) / "checkpoints" / str(step) / "state"
    try:
        meta = ocp.PyTreeCheckpointer().metadata(state_dir)
    except Exception as e:  # noqa: BLE001 - any read error is the same fact for users
        raise CheckpointError(f"cannot read train checkpoint {state_dir}: {e}") from e
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    stored = tree.get("trainable") if isinstance(tree, Mapping) else None
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{state_dir} is not a spot_jax train state (no trainable params)")
    wanted = {k: v for k, v in stored.items() if k not in skip}
    for name, leaf in wanted.items():
        if name not in abstract_flat:
            raise CheckpointError(
                f"train checkpoint {state_dir.parent} holds parameter {name}, which this model "
                "lacks; evaluate with the model config (T5_CONFIG, PROMPT_LENGTH) it was "
                "trained with"
            )
        if tuple(leaf.shape) != tuple(abstract_flat[name].shape):
            raise CheckpointError(
                f"parameter {name} has shape {list(leaf.shape)} in {state_dir.parent} but the "
                f"model needs {list(abstract_flat[name].shape)}; evaluate with the model "
                "config it was trained with"
            )
    if not wanted:
        return step, {}

    def is_wanted(path) -> bool:
        keys = [str(getattr(p, "key", p)) for p in path]
        return len(keys) == 2 and keys[0] == "trainable" and keys[1] in wanted

    def item(path, leaf):
        if not is_wanted(path):
            return ocp.PLACEHOLDER  # the optimizer state and skipped params stay unread
        spec = abstract_flat[path[1].key]
        return jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=spec.sharding)

    def restore_args(path, _):
        if not is_wanted(path):
            return ocp.RestoreArgs()
        spec = abstract_flat[path[1].key]
        return ocp.ArrayRestoreArgs(
            sharding=spec.sharding, dtype=spec.dtype, global_shape=spec.shape
        )

    args = ocp.args.PyTreeRestore(
        item=jax.tree_util.tree_map_with_path(item, tree),
        restore_args=jax.tree_util.tree_map_with_path(restore_args, tree),
    )
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            restored = ckptr.restore(state_dir, args=args)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"cannot read trained params from {state_dir}: {type(e).__name__}: {str(e)[:300]}"
        ) from e
    return step, {k: restored["trainable"][k] for k in wanted}


# ---------------------------------------------------------------------------------------------
# Numpy prompts (prompt-tuning's layout, so prompts move between the projects).


def numpy_prompt_path(model_dir: epath.PathLike, step: int) -> epath.Path:
    return (
        epath.Path(model_dir)
        / "numpy_checkpoints"
        / f"checkpoint_{step}"
        / PROMPT_PATH.replace("/", ".")
    )


def numpy_prompts(trainable: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The prompts among a run's trainable params as prompt-tuning saves them: the input prompt
    (or a multi-task run's shared prompt and task table) and each encoder layer's own, a scanned
    stack cut into its layers."""
    return prompted.unstack_flat({k: v for k, v in trainable.items() if prompted.is_prompt_path(k)})


def save_numpy_params(
    model_dir: epath.PathLike, step: int, flat: Mapping[str, jax.Array], names=(PROMPT_PATH,)
) -> list[epath.Path]:
    """Writes the named params as float32 np.save files (no .npy suffix), atomically.

    Files go to a temporary folder renamed into place, so a killed job never leaves a partial
    prompt where the next run (or a SPoT transfer) would read it.
    """
    present = [n for n in names if n in flat]
    if not present:
        return []
    values = {n: np.asarray(jax.device_get(flat[n]), np.float32) for n in present}
    final = epath.Path(model_dir) / "numpy_checkpoints" / f"checkpoint_{step}"
    if jax.process_index() != 0:
        return [final / n.replace("/", ".") for n in present]
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        with (tmp / name.replace("/", ".")).open("wb") as f:
            np.save(f, value)
    if final.exists():
        final.rename(final.parent / f"{final.name}.backup-{time.time_ns()}")
    tmp.rename(final)
    return [final / n.replace("/", ".") for n in present]


def field_diffs(have: Mapping[str, Any], want: Mapping[str, Any], template: str) -> list[str]:
    """One message per field of `want` that `have` disagrees with."""
    return [
        template.format(k=k, have=have.get(k), want=v) for k, v in want.items() if have.get(k) != v
    ]
