"""SPoT transfer strategies as prompt initialisers (`init(rng, shape, dtype) -> [P, H]`).

Any run takes them through gin (`gin/spot/target_from_library.gin`):

  - one source:          the prompt of a named library entry, or of the top-1 retrieved one;
  - top-k weighted avg:  Σ_r α_r ρ_r with α_r = sim(e_r, e_t) / Σ_l sim(e_l, e_t) over the k
                         entries whose task embeddings e_r are most similar to the target's e_t
                         (Vu et al. §3.3); one target run.

Strategies that are not one initialisation:

  - best of top-k:       k target runs, each initialised from one of the top-k prompts; keep the
                         best on validation and report all. `spot-jax library transfer` runs it
                         (`best_of_top_k` below plans the runs and picks the winner).
  - top-k mixture:       source prompt tuning on the top-k sources' tasks mixed with the target
                         task (examples-proportional), then target tuning from its final
                         checkpoint. `mixture_sources` names the tasks; registering the mixture
                         needs the task catalog (a seqio mixture of those names), and the source
                         run is `gin/spot/source_mixture.gin` with MIXTURE_OR_TASK_NAME set to it.
"""

import dataclasses
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from spot_jax.models import prompts
from spot_jax.spot import library as library_lib
from spot_jax.spot import retrieval
from spot_jax.spot import runs as runs_lib

STRATEGIES = ("single", "weighted_average")


def weighted_average(
    lib: library_lib.Library | epath.PathLike,
    target: Any,
    k: int = 3,
    metric: str = retrieval.DEFAULT_METRIC,
    exclude: tuple[str, ...] = (),
) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """SPoT's top-k weighted average of source prompts for a target.

    Args:
      lib: the library (or its directory).
      target: the target's task embedding [P, H], its prompt file, or its MODEL_DIR.
      k: how many sources to average.
      metric: similarity of task embeddings.
      exclude: entries left out (e.g. the target task's own).

    Returns:
      (prompt [P, H] float32, [(entry name, weight α_r)] best first; weights sum to 1).

    Raises:
      ValueError: a top-k similarity is not positive, which would make α a signed (or
        undefined) combination; use a positive metric (e_concat, e_avg) or a smaller k.
    """
    lib = _library(lib)
    ranked = retrieval.rank(lib, target, metric, k, exclude)
    sims = np.array([r.score for r in ranked], np.float64)
    if np.any(sims <= 0):
        bad = ", ".join(f"{r.name}={r.score:.4g}" for r in ranked if r.score <= 0)
        raise ValueError(
            f"weighted average needs positive similarities, but {metric} gives {bad}; use "
            "metric e_concat or e_avg (always positive) or a smaller TOP_K"
        )
    alphas = sims / sims.sum()
    sources = [lib.get(r.name).prompt().astype(np.float64) for r in ranked]
    prompt = sum(a * p for a, p in zip(alphas, sources, strict=True))
    return np.asarray(prompt, np.float32), [
        (r.name, float(a)) for r, a in zip(ranked, alphas, strict=True)
    ]


def from_library(library: epath.PathLike, name: str) -> prompts.Initializer:
    """Initialiser: the prompt of library entry `name` (shape checked against the model)."""
    entry = _library(library).get(name)
    return prompts.from_array(entry.prompt(), source=f"library {library} entry {name}")


def top_k_weighted_average(
    library: epath.PathLike,
    target: epath.PathLike,
    k: int = 3,
    metric: str = retrieval.DEFAULT_METRIC,
    exclude: tuple[str, ...] = (),
) -> prompts.Initializer:
    """Initialiser: SPoT's top-k weighted average (see `weighted_average`)."""
    prompt, weights = weighted_average(library, target, k, metric, tuple(exclude))
    logging.info("prompt init: weighted average of %s", weights)
    print("Prompt init: weighted average of " + ", ".join(f"{n} ({a:.3f})" for n, a in weights))
    return prompts.from_array(prompt, source=f"top-{k} weighted average from {library}")


def from_strategy(
    library: epath.PathLike,
    strategy: str = "weighted_average",
    target: epath.PathLike | None = None,
    k: int = 3,
    metric: str = retrieval.DEFAULT_METRIC,
    entry: str | None = None,
    exclude: tuple[str, ...] = (),
    rescale_rms: float | str | None = None,
) -> prompts.Initializer:
    """The initialiser of a named strategy; what `gin/spot/target_from_library.gin` calls.

    Args:
      library: LIBRARY_DIR.
      strategy: 'single' (entry `entry`, or the top-1 retrieved for `target`) or
        'weighted_average' (top-k for `target`).
      target: TARGET_EMBEDDING: the target's early prompt file or MODEL_DIR.
      k: TOP_K.
      metric: similarity metric for retrieval.
      entry: LIBRARY_ENTRY for 'single'.
      exclude: entries never retrieved.
      rescale_rms: None (SPoT: the prompt as trained), or scale the transferred prompt to this
        RMS, 'embeddings' meaning a sampled-vocab init's (see `prompts.rescaled`).
    """
    init = _strategy_init(library, strategy, target, k, metric, entry, exclude)
    if rescale_rms is None:
        return init
    print(f"Prompt init: rescaled to RMS {rescale_rms}")
    return prompts.rescaled(init, rescale_rms)


def _strategy_init(library, strategy, target, k, metric, entry, exclude) -> prompts.Initializer:
    if strategy == "single":
        if entry is None:
            if target is None:
                raise ValueError("STRATEGY 'single' needs LIBRARY_ENTRY or TARGET_EMBEDDING")
            entry = retrieval.rank(_library(library), target, metric, 1, tuple(exclude))[0].name
            print(f"Prompt init: top-1 library entry {entry} by {metric}")
        return from_library(library, entry)
    if strategy == "weighted_average":
        if target is None:
            raise ValueError("STRATEGY 'weighted_average' needs TARGET_EMBEDDING")
        return top_k_weighted_average(library, target, k, metric, tuple(exclude))
    if strategy in ("best_of_top_k", "mixture"):
        raise ValueError(
            f"STRATEGY {strategy!r} is several runs, not one initialisation: use "
            "`spot-jax library transfer` (best of top-k), or for a mixture `spot-jax library "
            "mixture` and a source run with gin/spot/source_mixture.gin"
        )
    raise ValueError(f"unknown STRATEGY {strategy!r}; choose one of {', '.join(STRATEGIES)}")


# ---------------------------------------------------------------------------------------------
# Multi-run strategies.


@dataclasses.dataclass(frozen=True)
class TargetRun:
    """One target run of best-of-top-k: the source it starts from and where it trains."""

    source: str
    similarity: float
    prompt_file: str
    model_dir: str


def best_of_top_k(
    lib: library_lib.Library | epath.PathLike,
    target: Any,
    out_dir: epath.PathLike,
    k: int = 3,
    metric: str = retrieval.DEFAULT_METRIC,
    exclude: tuple[str, ...] = (),
) -> list[TargetRun]:
    """Plans best-of-top-k: one target run per top-k source, in `out_dir/<source>`."""
    lib = _library(lib)
    ranked = retrieval.rank(lib, target, metric, k, exclude)
    return [
        TargetRun(
            r.name,
            r.score,
            str(lib.get(r.name).path / "prompt.npy"),
            str(epath.Path(out_dir) / r.name),
        )
        for r in ranked
    ]


def pick_best(
    runs: list[TargetRun], metric: str | None = None
) -> tuple[TargetRun | None, list[dict]]:
    """The run with the best validation score, and every run's result.

    A run's score is its best value over its evaluations (SPoT keeps each run's best checkpoint)
    of `metric` ('eval/f1', 'eval/loss:min', ...) or, by default, the target task's metric as
    `library add` chooses it (`runs.metric_choice`: the task's first metric, higher is better;
    eval/loss only where the runs recorded none). The metric is chosen on the first evaluated
    run and every run is scored by it; runs without it score None.
    """
    evaluated = [(run, runs_lib.read_metrics(run.model_dir)) for run in runs]
    first = next(((run, m) for run, m in evaluated if m), None)
    if first is None:
        return None, [{**dataclasses.asdict(run), "score": None} for run in runs]
    keys, mode, _, _ = runs_lib.metric_choice(first[0].model_dir, first[1], metric)
    name = keys[0] if len(keys) == 1 else f"mean({', '.join(keys)})"
    pick = min if mode == "min" else max
    results = []
    for run, records in evaluated:
        values = [
            float(np.mean([r[k] for k in keys]))
            for r in records.values()
            if all(k in r for k in keys)
        ]
        score = pick(values) if values else None
        results.append({**dataclasses.asdict(run), "score": score, "metric": name, "mode": mode})
    scored = [(r, x["score"]) for r, x in zip(runs, results, strict=True) if x["score"] is not None]
    best = pick(scored, key=lambda rs: rs[1])[0] if scored else None
    return best, results


def mixture_sources(
    lib: library_lib.Library | epath.PathLike,
    target: Any,
    k: int = 3,
    metric: str = retrieval.DEFAULT_METRIC,
    exclude: tuple[str, ...] = (),
    with_target_task: bool = True,
) -> list[str]:
    """Task names of SPoT's top-k mixture: the top-k sources' tasks (deduplicated, rank order)
    and then the target's own task (Vu et al. §3.3 mix the top-k source tasks' data plus the
    target's).

    The target's task is read from a target MODEL_DIR's config.gin; a target given as a prompt
    file names no task, so add it yourself. Register the mixture (or name it
    `spot_mix__<task>__...`), train a source prompt on it with gin/spot/source_mixture.gin, and
    start the target run from its final checkpoint.
    """
    lib = _library(lib)
    tasks: list[str] = []
    for r in retrieval.rank(lib, target, metric, k, exclude):
        task = lib.get(r.name).meta.get("task")
        if task and task not in tasks:
            tasks.append(task)
    path = epath.Path(target) if not isinstance(target, np.ndarray) else None
    if with_target_task and path is not None and (path / "config.gin").exists():
        task = runs_lib.run_info(path)["task"]
        if task and task not in tasks:
            tasks.append(task)
    return tasks


def _library(lib: library_lib.Library | epath.PathLike) -> library_lib.Library:
    return lib if isinstance(lib, library_lib.Library) else library_lib.Library(lib)
