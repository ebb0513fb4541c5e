"""Zero-shot prompt transfer (Su et al., "On Transferability of Prompt Tuning", §A3).

Every source prompt of a library is evaluated on every target task as is, with the frozen
model and no training: the target's validation data, feature lengths, frozen weights and seed
come from the target run's `config.gin` (or from any gin file of a run), and the source prompt
replaces the target's prompt. The result is a matrix, rows = source prompts, columns = targets,
of one metric returned by `evaluation.Evaluator` (eval/loss, eval/token_accuracy,
eval/sequence_accuracy, ...).

Su et al. report *relative performance*: the transferred score divided by the score of the
target task's own prompt (`relative`). The own prompt of a target is the library entry trained
on that run (same run directory or same name), an explicit entry or `.npy` (`own`), or else the
run's latest numpy prompt checkpoint. For a loss, lower is better, so a relative loss above 1 is
worse than the own prompt.

    spot-jax library zero-shot --library L [--target NAME=RUN_DIR_OR_GIN ...]
        [--metric eval/sequence_accuracy] [--out m.csv] [--plot heat.png] [--relative]

Without `--target`, the targets are the library entries' own runs.
"""

import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from spot_jax.spot import library as library_lib
from spot_jax.spot import runs as runs_lib

DEFAULT_METRIC = "eval/sequence_accuracy"
# Metrics the evaluator computes without decoding (decoding is skipped for them).
NO_DECODE_METRICS = ("eval/loss", "eval/token_accuracy")
RANDOM_ROW = "random"


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
        ckpt = _query(gin, "INITIAL_CHECKPOINT_PATH", None)
        seed = int(_query(gin, "SEED", 0))
        steps = _query(gin, "EVAL_STEPS", None) if eval_steps == "config" else eval_steps
    finally:
        gin.clear_config()
    if prompt_length is None and run_dir is not None:
        prompt_length = runs_lib.run_info(run_dir)["prompt_length"]
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
    )


class Evaluator:
    """One target's frozen model, built once; `__call__(prompt)` evaluates a prompt on it."""

    def __init__(self, target: Target, model_parallel: int = 1):
        import re as re_

        from spot_jax import axes
        from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
        from spot_jax.train import evaluation, optim, sharding, trainer

        self.target = target
        self.model = PromptedT5(target.t5_config, target.prompt_length)
        self.mesh = sharding.make_mesh(model_parallel)
        self.rules = axes.standard_rules()
        params, shardings = trainer.build_params(
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


@dataclasses.dataclass
class Result:
    """A zero-shot transfer matrix.

    Attributes:
      sources: row names (library entries, then 'random' when asked for).
      targets: column names.
      metric: the metric key.
      scores: [sources, targets] the metric of each source prompt on each target.
      own: [targets] the metric of each target's own prompt (NaN where unknown).
      metrics: {(source, target): all metrics evaluate returned}.
    """

    sources: list[str]
    targets: list[str]
    metric: str
    scores: np.ndarray
    own: np.ndarray
    metrics: dict[tuple[str, str], dict[str, float]]

    def relative(self) -> np.ndarray:
        """scores / own score of each target (Su et al.'s relative performance, as a ratio)."""
        if np.any(~np.isfinite(self.own)):
            missing = [t for t, o in zip(self.targets, self.own, strict=True) if not np.isfinite(o)]
            raise ValueError(
                f"relative scores need each target's own prompt score; missing for {missing} "
                "(give --own TARGET=ENTRY_OR_NPY)"
            )
        if np.any(self.own == 0):
            zero = [t for t, o in zip(self.targets, self.own, strict=True) if o == 0]
            raise ValueError(
                f"the own prompt scores 0 on {zero} by {self.metric}, so relative scores are "
                "undefined; use another --metric"
            )
        return self.scores / self.own[None, :]

    def to_csv(self, relative: bool = False) -> str:
        values = self.relative() if relative else self.scores
        lines = ["source," + ",".join(self.targets)]
        for name, row in zip(self.sources, values, strict=True):
            lines.append(name + "," + ",".join(_fmt(v) for v in row))
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.8g}"


def _same_dir(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return a == b


def _own_prompt(
    target: Target, entries: list, own: dict[str, str], lib: library_lib.Library
) -> tuple[str, np.ndarray | None]:
    """(how it was found, the target's own prompt) or ('', None)."""
    if target.name in own:
        spec = own[target.name]
        if spec.endswith(".npy") or os.path.exists(spec):
            return spec, np.load(spec)
        return f"entry {spec}", lib.get(spec).prompt()
    for e in entries:
        if _same_dir(e.meta.get("run_dir"), target.run_dir):
            return f"entry {e.name}", None
    for e in entries:
        if e.name == target.name:
            return f"entry {e.name}", None
    if target.run_dir is not None:
        steps = runs_lib.numpy_steps(target.run_dir)
        if steps:
            path = runs_lib.prompt_file(target.run_dir, steps[-1])
            return str(path), library_lib._load(epath.Path(path))
    return "", None


def _check_model(lib: library_lib.Library, target: Target) -> None:
    """A run target must share the library's frozen model (fingerprint)."""
    record = lib.model()
    if record is None or target.run_dir is None or "fingerprint" not in record:
        return
    info = runs_lib.run_info(target.run_dir)
    if info["fingerprint"] != record["fingerprint"]:
        raise library_lib.LibraryError(
            f"target {target.name} ({target.run_dir}) uses frozen model {info['frozen']} "
            f"(fingerprint {info['fingerprint']}), not the library's ({record['fingerprint']}); "
            "zero-shot transfer needs the same frozen model"
        )


def zero_shot(
    lib: library_lib.Library | epath.PathLike,
    targets: Sequence[Target] | None = None,
    metric: str = DEFAULT_METRIC,
    sources: Sequence[str] | None = None,
    own: dict[str, str] | None = None,
    random_baseline: bool = False,
    model_parallel: int = 1,
    log=print,
) -> Result:
    """Evaluates library prompts on target tasks without training.

    Args:
      lib: the library.
      targets: target tasks (`load_target`); default the library entries' own runs.
      metric: a key of `evaluation.Evaluator`'s result.
      sources: entry names to evaluate (default all).
      own: {target name: library entry or .npy} overriding the own-prompt lookup.
      random_baseline: add a row of a random prompt, U[0, 1) (Su et al.'s `torch.rand`).
      model_parallel: model-parallel mesh size.
      log: progress printer (None: quiet).

    Returns:
      the Result; `own` holds the diagonal-like own-prompt scores used by `relative()`.
    """
    lib = lib if isinstance(lib, library_lib.Library) else library_lib.Library(lib)
    entries = lib.entries()
    if not entries:
        raise library_lib.LibraryError(f"library {lib.root} has no entries")
    if targets is None:
        targets = [load_target(e.name, e.meta["run_dir"]) for e in entries]
    if not targets:
        raise ValueError("no targets")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"target names repeat: {names}")
    chosen = list(sources) if sources else [e.name for e in entries]
    by_name = {e.name: e for e in entries}
    for s in chosen:
        lib.get(s)  # a clear error for unknown names
    prompts = {s: by_name[s].prompt() for s in chosen}
    rows = list(chosen)
    if random_baseline:
        shape = next(iter(prompts.values())).shape
        prompts[RANDOM_ROW] = np.random.default_rng(0).random(shape).astype(np.float32)
        rows.append(RANDOM_ROW)
    own = dict(own or {})
    scores = np.full((len(rows), len(targets)), np.nan)
    own_scores = np.full(len(targets), np.nan)
    all_metrics: dict[tuple[str, str], dict[str, float]] = {}
    predict = metric not in NO_DECODE_METRICS
    for j, target in enumerate(targets):
        _check_model(lib, target)
        evaluate = Evaluator(target, model_parallel)
        for i, row in enumerate(rows):
            m = evaluate(prompts[row], predict)
            if metric not in m:
                raise KeyError(f"metric {metric!r} not in the evaluation result (have {sorted(m)})")
            all_metrics[(row, target.name)] = m
            scores[i, j] = m[metric]
            if log:
                log(f"{row} -> {target.name}: {metric} {m[metric]:.6g}")
        how, prompt = _own_prompt(target, entries, own, lib)
        if how.startswith("entry ") and prompt is None and how[6:] in rows:
            own_scores[j] = scores[rows.index(how[6:]), j]
        else:
            if prompt is None and how.startswith("entry "):
                prompt = lib.get(how[6:]).prompt()
            if prompt is not None:
                own_scores[j] = evaluate(prompt, predict)[metric]
        if log and how:
            log(f"{target.name}: own prompt {how}: {metric} {own_scores[j]:.6g}")
    return Result(rows, names, metric, scores, own_scores, all_metrics)


def plot(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: str, title=""):
    """An annotated heatmap (rows = sources, columns = targets) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, float)
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.6 * len(cols) + 2.5), max(3.0, 0.45 * len(rows) + 1.5))
    )
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("target task")
    ax.set_ylabel("source prompt")
    if values.size <= 400:
        finite = values[np.isfinite(values)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(values):
            colour = "black" if np.isfinite(v) and v > mid else "white"
            ax.text(j, i, _fmt(v)[:6], ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_csv(path: epath.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """(row names, column names, values) of a matrix CSV written by `Result.to_csv` (or the
    similarity command, whose header's first cell is empty)."""
    lines = [ln for ln in epath.Path(path).read_text().splitlines() if ln.strip()]
    cols = lines[0].split(",")[1:]
    rows, values = [], []
    for ln in lines[1:]:
        parts = ln.split(",")
        rows.append(parts[0])
        values.append([float(x) for x in parts[1:]])
    return rows, cols, np.array(values, float)


_SPEC = re.compile(r"([^=]+)=(.+)")


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    """['A=x', 'B=y'] -> {'A': 'x', 'B': 'y'}."""
    out = {}
    for item in items:
        m = _SPEC.fullmatch(item)
        if not m:
            raise ValueError(f"bad {what} {item!r}; expected NAME=VALUE")
        out[m.group(1)] = m.group(2)
    return out
