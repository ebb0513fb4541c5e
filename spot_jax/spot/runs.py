"""A training run's MODEL_DIR as the prompt library reads it.

What a library entry needs from a run: its operative config's macros (task, frozen checkpoint,
SEED), its numpy prompt checkpoints (prompt-tuning's layout), the eval metrics in
metrics.jsonl, and the identity of its frozen model (a fingerprint), so that only prompts of
one model are compared or transferred.
"""

import ast
import contextlib
import dataclasses
import difflib
import hashlib
import json
import re
from typing import Any

import numpy as np
from absl import logging
from etils import epath

PROMPT_FILE = "encoder.prompt.prompt.prompt"
# A multi-task run's (`models.multi_task_prompt`): the shared prompt and the task table.
SHARED_PROMPT_FILE = "encoder.prompt.prompt.shared_prompt"
TASK_PROMPTS_FILE = "encoder.prompt.prompt.task_prompts.embedding"
# SPoT's task embedding: the prompt after 10K steps, the same step for every task (Vu et al.
# §3.2, fn. 13: other checkpoints did worse; prompts of differing steps compare less well).
SPOT_EMBEDDING_STEP = 10_000
# The model.json keys that decide whether two prompts live in the same space.
_SHAPE_KEYS = (
    "vocab_size",
    "emb_dim",
    "num_heads",
    "num_encoder_layers",
    "num_decoder_layers",
    "head_dim",
    "mlp_dim",
    "relpos_buckets",
)


class LibraryError(ValueError):
    """Bad library input: an incompatible prompt, a missing run or entry, a bad name."""


def read_macros(config_gin: str) -> dict[str, Any]:
    """Top-level macro values (`NAME = literal`) of an operative config.gin.

    Values that are not Python literals (gin references, multi-line values) are skipped; a
    value gin wrapped onto the next line (`NAME = \\`, a long mixture name) is read whole.
    """
    macros = {}
    for line in re.sub(r"\\\n\s*", " ", config_gin).splitlines():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)\s*=\s*(.+)", line.strip())
        if m:
            with contextlib.suppress(ValueError, SyntaxError):
                macros[m.group(1)] = ast.literal_eval(m.group(2))
    return macros


def numpy_steps(model_dir: epath.PathLike) -> list[int]:
    """Steps with a complete numpy prompt checkpoint, ascending (temp/backup folders skipped)."""
    root = epath.Path(model_dir) / "numpy_checkpoints"
    if not root.exists():
        return []
    steps = []
    for d in root.iterdir():
        m = re.fullmatch(r"checkpoint_(\d+)", d.name)
        if m and ((d / PROMPT_FILE).exists() or (d / SHARED_PROMPT_FILE).exists()):
            steps.append(int(m.group(1)))
    return sorted(steps)


def prompt_file(model_dir: epath.PathLike, step: int, name: str = PROMPT_FILE) -> epath.Path:
    return epath.Path(model_dir) / "numpy_checkpoints" / f"checkpoint_{step}" / name


def indexed_task(run_task: str | None, index: int) -> str:
    """A multi-task run's task `index`: of `spot_multitask__a__b`, a or b; else `<task>[task i]`."""
    from spot_jax.data.config import MULTITASK_PREFIX

    tasks = (run_task or "").removeprefix(MULTITASK_PREFIX).split("__")
    is_named = bool(run_task) and run_task.startswith(MULTITASK_PREFIX) and index < len(tasks)
    return tasks[index] if is_named else f"{run_task}[task {index}]"


def task_prompt(
    model_dir: epath.PathLike, step: int, index: int, info: dict
) -> tuple[np.ndarray, str]:
    """Task `index`'s whole [P, H] prompt in a multi-task run's save at `step` and where it is
    from: its shared prompt combined with the task's (what the standard prompted model reads as
    its prompt for that task's inputs, the task sentinel dropped)."""
    from spot_jax.models import multi_task_prompt

    split = multi_task_prompt.MultiTask(
        info["num_tasks"],
        info["multi_task_prompt"],
        info["task_prompt_length"],
        info["shared_prompt_features"],
    )
    if not 0 <= index < split.num_tasks:
        raise LibraryError(f"task index {index}: the run trained {split.num_tasks} task prompts")
    arrays = []
    for name in (SHARED_PROMPT_FILE, TASK_PROMPTS_FILE):
        path = prompt_file(model_dir, step, name)
        if not path.exists():
            raise LibraryError(f"{path} does not exist")
        with path.open("rb") as f:
            arrays.append(np.asarray(np.load(f), np.float32))
    shared, table = arrays
    combined = np.asarray(split.combined(shared, table[index]), np.float32)
    return combined, f"{prompt_file(model_dir, step, SHARED_PROMPT_FILE)} + task {index}"


def read_metrics(model_dir: epath.PathLike) -> dict[int, dict[str, float]]:
    """Eval metrics by step from metrics.jsonl (only records with eval/* keys).

    A run still training (or killed mid-write) can end the file in half a line: that line is
    skipped. A bad line before the last is an error naming the file and line.
    """
    path = epath.Path(model_dir) / "metrics.jsonl"
    out: dict[int, dict[str, float]] = {}
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                logging.warning("%s: skipped the unfinished last line %d", path, number)
                continue
            raise LibraryError(
                f"{path} line {number} is not JSON ({e}); repair or remove it"
            ) from None
        evals = {k: v for k, v in record.items() if k.startswith("eval/")}
        if evals and "step" in record:
            out.setdefault(int(record["step"]), {}).update(evals)
    return out


def fingerprint(model_shape: dict[str, Any], initial_checkpoint: str | None, seed: Any) -> str:
    """Identifies the frozen model: its checkpoint path (or seeded init) hashed with its shape.

    Prompts are only comparable, and only transfer, within one frozen model; two seeded inits
    with different SEEDs are different models.
    """
    frozen = initial_checkpoint if initial_checkpoint else f"seeded-init:{seed}"
    shape = {k: model_shape.get(k) for k in _SHAPE_KEYS}
    blob = json.dumps({"frozen": frozen, "shape": shape}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The Evaluator's own metrics, recorded for every task (spot_jax.train.evaluation): never "the
# task's metric". Rank-classification variants (eval/rank_*) are not chosen by default either.
EVALUATOR_METRICS = ("loss", "token_accuracy", "sequence_accuracy")
_RANK = "rank_"
_EVAL = "eval/"
TASK_METRIC_RULE = "the task's metric: the first its metric fns report"
MIXTURE_METRIC_RULE = "mean over the mixture's tasks of each task's first metric"


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which checkpoint a library entry takes, and why (recorded in its meta.json).

    Attributes:
      step: the chosen numpy checkpoint step.
      reason: one line for people (the entry's 'selected').
      checkpoint: what was asked for: 'best', 'latest' or 'step'.
      metric: the eval key that ranked the checkpoints ('mean(k1, k2)' for a mixture's mean);
        None when nothing was ranked.
      mode: 'max' (higher is better) or 'min' (lower is better); None when nothing was ranked.
      rule: why this metric: named by the caller, the task's metric, or the fallback's cause.
      value: the chosen step's score.
      averaged: the keys whose mean is `metric` (a mixture run).
      fallback: True when the run recorded no task metric, so eval/loss chose.
    """

    step: int
    reason: str
    checkpoint: str
    metric: str | None = None
    mode: str | None = None
    rule: str | None = None
    value: float | None = None
    averaged: tuple[str, ...] = ()
    fallback: bool = False

    def record(self) -> dict[str, Any]:
        """The entry's 'selection' record (JSON)."""
        out = dataclasses.asdict(self)
        out["averaged"] = list(self.averaged)
        del out["step"], out["reason"]
        return out


def metric_mode(name: str) -> str:
    """'min' (lower is better) for a loss, whose key's last part contains 'loss' (eval/loss,
    eval/<task>/loss); 'max' for everything else (accuracy, F1, correlations, ROUGE, BLEU,
    EM...: the tasks' metric fns all report higher-is-better scores)."""
    return "min" if "loss" in name.rsplit("/", 1)[-1] else "max"


def is_task_metric(name: str) -> bool:
    """Whether an eval key is a task metric fn's: not the Evaluator's own loss/accuracies and
    not a rank-classification variant."""
    last = name.rsplit("/", 1)[-1]
    return name.startswith(_EVAL) and last not in EVALUATOR_METRICS and not last.startswith(_RANK)


def recorded_metrics(metrics: dict[int, dict[str, float]]) -> list[str]:
    """Every eval key of `read_metrics`' records, in the order the run first wrote them."""
    return list(dict.fromkeys(k for record in metrics.values() for k in record))


def task_metrics(recorded: list[str]) -> list[str]:
    """The task's metric among recorded eval keys: [] when the run recorded none.

    A single task: the first task-metric key the run wrote (`eval/<metric>`). The trainer writes
    each eval as the Evaluator returns it, the task's metric fns in their order, so this is the
    first key of the task's first metric fn: accuracy (SST-2, MNLI, BoolQ...), f1 (MRPC, QQP,
    MultiRC, ReCoRD), matthews_corrcoef (CoLA), pearson_corrcoef (STS-B), mean_3class_f1 (CB),
    em (SQuAD), rouge1 (summaries), bleu (translation). A mixture (`eval/<task>/<metric>`): the
    first of each task's, one key per task, whose mean is the score.

    The Evaluator's own keys (loss, token_accuracy, sequence_accuracy) and eval/rank_* never
    count: a task whose metric fn reports only one of them (T5's sequence_accuracy, say) reads
    as having none; name it with `metric` instead.
    """
    top = [k for k in recorded if k.count("/") == 1 and is_task_metric(k)]
    if top:
        return top[:1]
    firsts: dict[str, str] = {}
    for k in recorded:
        if k.count("/") >= 2 and is_task_metric(k):
            firsts.setdefault(k.removeprefix(_EVAL).rpartition("/")[0], k)
    return list(firsts.values())


def metric_choice(
    model_dir, metrics: dict[int, dict[str, float]], metric: str | None
) -> tuple[list[str], str, str, bool]:
    """(keys averaged, mode, rule, fallback) for 'best' by `metric` (None: the task's)."""
    recorded = recorded_metrics(metrics)
    if metric is not None:
        name, _, mode = metric.rpartition(":")
        if mode not in ("min", "max") or not name:
            name, mode = metric, metric_mode(metric)
        if name not in recorded:
            raise LibraryError(_unknown_metric(model_dir, name, recorded))
        return [name], mode, "named by best_metric", False
    keys = task_metrics(recorded)
    if len(keys) == 1:
        return keys, metric_mode(keys[0]), TASK_METRIC_RULE, False
    if keys:
        return keys, "max", MIXTURE_METRIC_RULE, False
    have = ", ".join(recorded) or "nothing"
    return ["eval/loss"], "min", f"fallback: the run recorded no task metric (only {have})", True


def _unknown_metric(model_dir, name: str, recorded: list[str]) -> str:
    if not recorded:
        return (
            f"{model_dir} recorded no eval metrics (no eval/ keys in metrics.jsonl), so no "
            f"checkpoint is best by {name}; pass checkpoint 'latest' or a step"
        )
    close = difflib.get_close_matches(name, recorded, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"{model_dir} recorded no eval metric {name!r}{hint}; its metrics.jsonl records: "
        f"{', '.join(recorded)} (append :min or :max to set the direction)"
    )


def select_checkpoint(
    model_dir: epath.PathLike, checkpoint: str | int = "best", metric: str | None = None
) -> Selection:
    """The numpy checkpoint step to take as a run's prompt, and why.

    'best' is SPoT's: the checkpoint with the best validation score of the task's metric
    (Vu et al. 2022 select by validation performance, not by loss). The metric:

    - `metric` when given: an eval key of the run's metrics.jsonl, e.g. 'eval/f1' or
      'eval/<task>/accuracy', optionally with ':max' or ':min'; a key the run never recorded is
      an error that lists the recorded ones.
    - else the task's metric (`task_metrics`): the first key the task's metric fns report;
      for a mixture run, the mean of each task's first metric;
    - else, when the run recorded no task metric (a task without metric fns, an eval without
      decoding), eval/loss, and the selection says so (`Selection.fallback`).

    Direction: `metric_mode` (lower is better for a loss, higher for everything else) unless
    ':min'/':max' says otherwise. Ties go to the later step. When nothing was evaluated at a
    kept checkpoint, 'best' is the latest checkpoint, and the reason says so.

    Args:
      model_dir: the run.
      checkpoint: 'best', 'latest', or a step number.
      metric: eval metric for 'best' (None: the task's, as above).

    Raises:
      LibraryError: no numpy checkpoints, a bad checkpoint, or a metric the run never recorded.
    """
    steps = numpy_steps(model_dir)
    if not steps:
        raise LibraryError(f"{model_dir} has no numpy prompt checkpoints; is it a prompt run?")
    if str(checkpoint) == "latest":
        return Selection(steps[-1], "latest", "latest")
    if str(checkpoint) != "best":
        try:
            step = int(checkpoint)
        except ValueError:
            raise LibraryError(
                f"checkpoint must be best, latest or a step, not {checkpoint!r}"
            ) from None
        if step not in steps:
            raise LibraryError(f"{model_dir} has no numpy checkpoint at step {step} (has {steps})")
        return Selection(step, f"step {step}", "step")
    metrics = read_metrics(model_dir)
    if not metrics and metric is None:
        return Selection(steps[-1], "latest (the run recorded no eval metrics)", "best")
    keys, mode, rule, fallback = metric_choice(model_dir, metrics, metric)
    name = keys[0] if len(keys) == 1 else f"mean({', '.join(keys)})"
    scored = {
        s: float(np.mean([m[k] for k in keys]))
        for s, m in metrics.items()
        if s in steps and all(k in m for k in keys)
    }
    how = dict(checkpoint="best", metric=name, mode=mode, rule=rule, fallback=fallback)
    how["averaged"] = tuple(keys) if len(keys) > 1 else ()
    if not scored:
        return Selection(steps[-1], f"latest (no {name} recorded at a checkpoint)", **how)
    sign = 1 if mode == "min" else -1
    # Ties go to the later step: more training for the same validation score.
    step = min(scored, key=lambda s: (sign * scored[s], -s))
    reason = f"best {name}={scored[step]:.6g}, {mode}; {rule}"
    return Selection(step, reason, value=scored[step], **how)


def select_step(
    model_dir: epath.PathLike, checkpoint: str | int = "best", metric: str | None = None
) -> tuple[int, str]:
    """(step, reason) of `select_checkpoint`."""
    selection = select_checkpoint(model_dir, checkpoint, metric)
    return selection.step, selection.reason


def embedding_step(model_dir: epath.PathLike, target: int | None = None) -> int:
    """The task-embedding checkpoint: the one closest to `target` (ties: the earlier).

    Default: SPoT's 10K steps (the closest checkpoint) in a run that long; in a shorter run
    (tests, the demo) the earliest non-zero checkpoint, an early prompt rather than the final.
    """
    steps = numpy_steps(model_dir)
    if not steps:
        raise LibraryError(f"{model_dir} has no numpy prompt checkpoints; is it a prompt run?")
    if target is None:
        if steps[-1] >= SPOT_EMBEDDING_STEP:
            target = SPOT_EMBEDDING_STEP
        else:
            nonzero = [s for s in steps if s > 0]
            return nonzero[0] if nonzero else steps[0]
    return min(steps, key=lambda s: (abs(s - target), s))


def run_info(model_dir: epath.PathLike) -> dict[str, Any]:
    """Task, model shape, fingerprint and train steps of a run, from its MODEL_DIR files."""
    model_dir = epath.Path(model_dir)
    for f in ("model.json", "config.gin"):
        if not (model_dir / f).exists():
            raise LibraryError(f"{model_dir} is not a spot_jax run: {f} is missing")
    model = json.loads((model_dir / "model.json").read_text())
    macros = read_macros((model_dir / "config.gin").read_text())
    placement = (
        "prompt_length",
        "prompt_position",
        "per_layer_prompt",
        "prompt_attention",
        "multi_task_prompt",
        "num_tasks",
        "task_prompt_length",
        "shared_prompt_features",
    )
    shape = {k: v for k, v in model.items() if k not in placement}
    ckpt, seed = macros.get("INITIAL_CHECKPOINT_PATH"), macros.get("SEED", 0)
    return {
        "task": macros.get("MIXTURE_OR_TASK_NAME"),
        "model": shape,
        "prompt_length": int(model.get("prompt_length", 0)),
        "prompt_position": model.get("prompt_position", "prefix"),
        "per_layer_prompt": model.get("per_layer_prompt", "none"),
        "prompt_attention": model.get("prompt_attention"),
        "multi_task_prompt": model.get("multi_task_prompt", "none"),
        "num_tasks": int(model.get("num_tasks", 0)),
        "task_prompt_length": int(model.get("task_prompt_length", 0)),
        "shared_prompt_features": int(model.get("shared_prompt_features", 0)),
        "emb_dim": int(model["emb_dim"]),
        "fingerprint": fingerprint(shape, ckpt, seed),
        "frozen": ckpt if ckpt else f"seeded-init:{seed}",
        "train_steps": macros.get("TRAIN_STEPS"),
        "seed": seed,
    }
