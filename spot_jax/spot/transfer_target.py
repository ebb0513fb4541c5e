"""A target task of prompt transfer: its frozen model and validation data, read from a run.

`load_target` reads a run directory's `config.gin` (or any gin file of a run): the T5Config,
the prompt length, the validation DatasetConfig, the frozen weights and the seed. `Evaluator`
builds that frozen model once and evaluates any prompt of the right shape on it, which zero-shot
transfer (`zero_shot.py`) and cross-model projectors (`projection.py`) do for many prompts.
"""

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from spot_jax.spot import runs as runs_lib


@dataclasses.dataclass
class Target:
    """A target task: how to build its frozen model and read its validation data.

    Attributes:
      name: the column name.
      source: the run directory or gin file it came from.
      run_dir: the run directory, when the target is a run (None for a gin file).
      t5_config: the frozen model's T5Config.
      prompt_length: the prompt length of the target's model.
      eval_data: the validation DatasetConfig.
      initial_checkpoint_path: the frozen weights (None: seeded init).
      seed: the seed of the seeded init (and of the run).
      eval_steps: batches evaluated (the run's EVAL_STEPS; None = the whole split).
      prompt_position: where the target's model puts the prompt (`prompts.PROMPT_POSITIONS`).
    """

    name: str
    source: str
    run_dir: str | None
    t5_config: Any
    prompt_length: int
    eval_data: Any
    initial_checkpoint_path: str | None
    seed: int
    eval_steps: int | None
    prompt_position: str = "prefix"


def parse_target_spec(spec: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); a bare PATH is named after its last component."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        if not name or not path:
            raise ValueError(f"bad --target {spec!r}; expected NAME=RUN_DIR_OR_GIN")
        return name, path
    path = spec.rstrip("/")
    return Path(path).stem if path.endswith(".gin") else Path(path).name, spec


def _gin_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "gin"


def _query(gin, macro: str, default: Any) -> Any:
    try:
        return gin.query_parameter(f"%{macro}")
    except (ValueError, KeyError):
        return default


def load_target(
    name: str,
    path: epath.PathLike,
    bindings: Sequence[str] = (),
    eval_steps: int | None | str = "config",
) -> Target:
    """Reads a target task from a run directory (its config.gin) or a gin file.

    Args:
      name: the target's name.
      path: a MODEL_DIR with config.gin, or a gin file (looked up as given, then in gin/).
      bindings: extra gin bindings ('NAME = VALUE'), applied after the file.
      eval_steps: batches to evaluate; 'config' = the config's EVAL_STEPS.

    Resets gin's global config.
    """
    import gin

    from spot_jax import data
    from spot_jax.data import config as data_config
    from spot_jax.models import config as config_lib

    path = str(path)
    run_dir = None
    if epath.Path(path).is_dir():
        if not (epath.Path(path) / "config.gin").exists():
            raise ValueError(f"target {name}: {path} has no config.gin (is it a spot_jax run?)")
        run_dir = path
        gin_path, text = None, (epath.Path(path) / "config.gin").read_text()
    else:
        gin_path = path
        if not os.path.exists(gin_path) and (_gin_dir() / path).exists():
            gin_path = str(_gin_dir() / path)
        if not os.path.exists(gin_path):
            raise ValueError(f"target {name}: {path} is neither a run directory nor a gin file")
        text = None
    gin.clear_config()
    gin.add_config_file_search_path(str(_gin_dir()))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if text is not None:
                # A file, not the text: gin registers `dynamic_registration` imports only then.
                gin_path = os.path.join(tmp, "config.gin")
                Path(gin_path).write_text(text)
            gin.parse_config_files_and_bindings(
                [gin_path], list(bindings), finalize_config=False, skip_unknown=False
            )
        t5_config = gin.get_configurable(config_lib.T5Config)()
        with gin.config_scope("validation"):
            eval_data = data.with_lengths(gin.get_configurable(data_config.DatasetConfig)())
        prompt_length = _query(gin, "PROMPT_LENGTH", None)
        position = _query(gin, "PROMPT_POSITION", None)
        multi_task = _query(gin, "MULTI_TASK_PROMPT", "none")
        ckpt = _query(gin, "INITIAL_CHECKPOINT_PATH", None)
        seed = int(_query(gin, "SEED", 0))
        steps = _query(gin, "EVAL_STEPS", None) if eval_steps == "config" else eval_steps
    finally:
        gin.clear_config()
    if multi_task != "none":
        raise ValueError(
            f"target {name}: {path} trains a multi-task prompt (MULTI_TASK_PROMPT "
            f"{multi_task!r}), whose inputs lead with task sentinels; a transfer target is one "
            "task in the standard prompted model: give that task's config (its plain "
            "MIXTURE_OR_TASK_NAME, MULTI_TASK_PROMPT='none')"
        )
    if run_dir is not None and (prompt_length is None or position is None):
        info = runs_lib.run_info(run_dir)
        prompt_length = info["prompt_length"] if prompt_length is None else prompt_length
        position = info["prompt_position"] if position is None else position
    if not prompt_length:
        raise ValueError(f"target {name}: no PROMPT_LENGTH in {path}")
    return Target(
        name=name,
        source=path,
        run_dir=run_dir,
        t5_config=t5_config,
        prompt_length=int(prompt_length),
        eval_data=eval_data,
        initial_checkpoint_path=ckpt or None,
        seed=seed,
        eval_steps=None if steps is None else int(steps),
        prompt_position=position or "prefix",
    )


class Evaluator:
    """One target's frozen model, built once; `__call__(prompt)` evaluates a prompt on it."""

    def __init__(self, target: Target, model_parallel: int = 1):
        import re as re_

        from spot_jax import axes
        from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
        from spot_jax.train import evaluation, initial_params, optim, sharding

        self.target = target
        self.model = PromptedT5(
            target.t5_config, target.prompt_length, prompt_position=target.prompt_position
        )
        self.mesh = sharding.make_mesh(model_parallel)
        self.rules = axes.standard_rules()
        params, shardings = initial_params.build_params(
            self.model,
            self.mesh,
            self.rules,
            batch_size=target.eval_data.batch_size,
            feature_lengths=dict(target.eval_data.task_feature_lengths),
            initial_checkpoint_path=target.initial_checkpoint_path,
            seed=target.seed,
        )
        _, self.frozen = optim.split_trainable(params, re_.escape(PROMPT_PATH))
        self._prompt_path = PROMPT_PATH
        self._prompt_sharding = shardings[PROMPT_PATH]
        self.shape = (target.prompt_length, target.t5_config.emb_dim)
        # One evaluator per target: its steps compile once for all the prompts it scores.
        self._evaluator = evaluation.Evaluator(
            self.model, target.eval_data, self.mesh, self.rules, max_batches=target.eval_steps
        )

    def __call__(self, prompt: np.ndarray, predict: bool = True) -> dict[str, float]:
        """All metrics of `evaluation.Evaluator` (the task's own too); without `predict`, no
        greedy decoding (so no eval/sequence_accuracy or task metrics)."""
        import jax

        prompt = np.asarray(prompt, np.float32)
        if prompt.shape != self.shape:
            raise ValueError(
                f"prompt shape {list(prompt.shape)} does not fit target {self.target.name}'s "
                f"model (prompt [{self.shape[0]}, {self.shape[1]}])"
            )
        trainable = {self._prompt_path: jax.device_put(prompt, self._prompt_sharding)}
        return self._evaluator(trainable, self.frozen, predict)
