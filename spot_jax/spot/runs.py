"""A training run's MODEL_DIR as the prompt library reads it.

What a library entry needs from a run: its operative config's macros (task, frozen checkpoint,
SEED), its numpy prompt checkpoints (prompt-tuning's layout), the eval metrics in
metrics.jsonl, and the identity of its frozen model (a fingerprint), so that only prompts of
one model are compared or transferred.
"""

import ast
import contextlib
import hashlib
import json
import re
from typing import Any

from absl import logging
from etils import epath

PROMPT_FILE = "encoder.prompt.prompt.prompt"
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

    Values that are not Python literals (gin references, multi-line values) are skipped.
    """
    macros = {}
    for line in config_gin.splitlines():
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
        if m and (d / PROMPT_FILE).exists():
            steps.append(int(m.group(1)))
    return sorted(steps)


def prompt_file(model_dir: epath.PathLike, step: int) -> epath.Path:
    return epath.Path(model_dir) / "numpy_checkpoints" / f"checkpoint_{step}" / PROMPT_FILE


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


def select_step(
    model_dir: epath.PathLike, checkpoint: str | int = "best", metric: str = "eval/loss"
) -> tuple[int, str]:
    """The numpy checkpoint step to take as a run's prompt, and why.

    Args:
      model_dir: the run.
      checkpoint: 'best' (best `metric` among evaluated checkpoints; the latest when nothing
        was evaluated), 'latest', or a step number.
      metric: eval metric for 'best'; minimised when its name contains 'loss', else maximised.

    Returns:
      (step, reason) where reason is recorded in the entry's metadata.
    """
    steps = numpy_steps(model_dir)
    if not steps:
        raise LibraryError(f"{model_dir} has no numpy prompt checkpoints; is it a prompt run?")
    if str(checkpoint) == "latest":
        return steps[-1], "latest"
    if str(checkpoint) != "best":
        try:
            step = int(checkpoint)
        except ValueError:
            raise LibraryError(
                f"checkpoint must be best, latest or a step, not {checkpoint!r}"
            ) from None
        if step not in steps:
            raise LibraryError(f"{model_dir} has no numpy checkpoint at step {step} (has {steps})")
        return step, f"step {step}"
    scored = {
        s: m[metric] for s, m in read_metrics(model_dir).items() if s in steps and metric in m
    }
    if not scored:
        return steps[-1], f"latest (no {metric} recorded at a checkpoint)"
    sign = 1 if "loss" in metric else -1
    # Ties go to the later step: more training for the same validation score.
    step = min(scored, key=lambda s: (sign * scored[s], -s))
    return step, f"best {metric}={scored[step]:.6g}"


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
    shape = {k: v for k, v in model.items() if k != "prompt_length"}
    ckpt, seed = macros.get("INITIAL_CHECKPOINT_PATH"), macros.get("SEED", 0)
    return {
        "task": macros.get("MIXTURE_OR_TASK_NAME"),
        "model": shape,
        "prompt_length": int(model.get("prompt_length", 0)),
        "emb_dim": int(model["emb_dim"]),
        "fingerprint": fingerprint(shape, ckpt, seed),
        "frozen": ckpt if ckpt else f"seeded-init:{seed}",
        "train_steps": macros.get("TRAIN_STEPS"),
        "seed": seed,
    }
