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
from collections.abc import Sequence

import numpy as np
from etils import epath

from spot_jax.spot import library as library_lib
from spot_jax.spot import runs as runs_lib
from spot_jax.spot.transfer_target import Evaluator, Target, load_target

DEFAULT_METRIC = "eval/sequence_accuracy"
# Metrics the evaluator computes without decoding (decoding is skipped for them).
NO_DECODE_METRICS = ("eval/loss", "eval/token_accuracy")
RANDOM_ROW = "random"


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
