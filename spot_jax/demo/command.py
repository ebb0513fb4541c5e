"""`spot-jax demo`: SPoT end to end on a CPU, in minutes, with nothing to download.

    spot-jax demo [--out demo_out] [--quick] [--cache-dir DIR] [--seeds 0,1,2]
                  [--experiments ppt,projection]

Pretrains (or loads from the cache) a small T5 1.1 on the task world, trains source prompts
and a mixture prompt into a real prompt library, and compares PromptTuning, SPoT, retrieval
(top-1 and top-k weighted average) and ModelTuning on the held-out targets. Writes
`<out>/report.md`, `similarity.png`, `curves.png`, `results.json`, `library/` and `runs/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

from etils import epath
from tqdm import tqdm

REGIMES = ("full", "few-shot")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spot-jax demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes)")
    p.add_argument("--cache-dir", default=None, help="backbone cache (default $SPOT_JAX_CACHE "
                   "or ~/.cache/spot_jax)")  # fmt: skip
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--experiments", default="", help="opt-in experiments after SPoT's, "
                   f"comma-separated: {', '.join(OPT_IN_EXPERIMENTS)}")  # fmt: skip
    return p


def total_run_steps(cfg, world) -> int:
    """Training steps of every run after the backbone (what the progress bar counts)."""
    n_src, n_tgt, n_seeds = len(world.names("source")), len(world.names("target")), len(cfg.seeds)
    return (
        n_src * cfg.source_steps
        + cfg.mixture_steps
        + n_tgt * len(REGIMES) * cfg.embedding_steps
        + n_tgt * len(REGIMES) * 6 * n_seeds * cfg.target_steps
        + n_tgt * n_src * cfg.target_steps
    )


# Later experiments on the same world and backbone (e.g. PPT-style pre-trained prompts,
# cross-model projection) append themselves here: `fn(protocol, results) -> [(heading,
# markdown)]`, run after the SPoT protocol with its `experiment.Protocol` (backbone, task
# arrays, compiled tuners, library) and results; their sections follow SPoT's in the report.
EXPERIMENTS: list[Callable] = []
# Opt-in experiments (`--experiments NAME,...`), appended after EXPERIMENTS: name -> (module,
# keyword arguments) whose `experiment(quick, progress=..., **kwargs)` makes the hook. Off by
# default: with them the full demo may no longer fit `make demo`'s 15 minutes on 2 busy cores.
OPT_IN_EXPERIMENTS = {
    "ppt": ("spot_jax.demo.pretrained_prompt", {}),
    "projection": ("spot_jax.demo.cross_model", {"objective": "distance"}),
    "projection-tt": ("spot_jax.demo.cross_model", {"objective": "task"}),
}


def opt_in_experiments(names: str, quick: bool, progress: bool = True) -> list[Callable]:
    """The hooks of comma-separated experiment names, in the order given."""
    import importlib

    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in OPT_IN_EXPERIMENTS]
    if unknown:
        raise SystemExit(
            f"--experiments knows {', '.join(OPT_IN_EXPERIMENTS)}; not {', '.join(unknown)}"
        )
    hooks = []
    for name in chosen:
        module, kwargs = OPT_IN_EXPERIMENTS[name]
        hooks.append(importlib.import_module(module).experiment(quick, progress=progress, **kwargs))
    return hooks


def run_demo(
    cfg, out: epath.PathLike, cache_dir=None, progress: bool = True, experiments=None
) -> dict:
    """Runs the whole protocol, then `experiments` (default `EXPERIMENTS`); returns the
    results the report is made of (JSON-serialisable)."""
    from spot_jax.data import world as world_lib
    from spot_jax.demo import backbone as backbone_lib
    from spot_jax.demo import experiment

    out = epath.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    world = world_lib.build_world(cfg.backbone.world_seed)
    backbone = backbone_lib.load_or_pretrain_backbone(cfg.backbone, cache_dir, progress)
    timings["backbone"] = time.perf_counter() - t0
    protocol = experiment.Protocol(backbone, world, cfg, out)
    results: dict = {"regimes": {}, "per_source": []}
    with tqdm(total=total_run_steps(cfg, world), desc="SPoT runs", unit="step",
              disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
        t = time.perf_counter()
        bar.set_postfix_str("source prompts")
        source_acc, mixture_acc = protocol.train_sources(bar)
        timings["sources"] = time.perf_counter() - t
        t = time.perf_counter()
        bar.set_postfix_str("target embeddings")
        embeddings = protocol.target_embeddings(REGIMES, bar)
        for regime in REGIMES:
            per_target = results["regimes"].setdefault(regime, {})
            for target in world.names("target"):
                bar.set_postfix_str(f"{target} {regime}")
                acc, steps, ranked, weights = protocol.compare(
                    target, regime, embeddings[(target, regime)], bar
                )
                per_target[target] = {
                    "curves": {m: a.tolist() for m, a in acc.items()},
                    "final": {m: a[:, -1].tolist() for m, a in acc.items()},
                    "ranking": ranked,
                    "weights": weights,
                }
                results["steps"] = steps.tolist()
        timings["targets"] = time.perf_counter() - t
        t = time.perf_counter()
        for target in world.names("target"):
            bar.set_postfix_str(f"per-source transfer to {target}")
            # Paired with PromptTuning on the same seed, hence the same few-shot examples.
            pt = results["regimes"]["few-shot"][target]["final"]["PromptTuning"][0]
            results["per_source"] += protocol.per_source(
                target, embeddings[(target, "few-shot")], pt, bar
            )
        timings["per_source"] = time.perf_counter() - t
    results["extra_sections"] = []
    for extra in EXPERIMENTS if experiments is None else experiments:
        t = time.perf_counter()
        results["extra_sections"] += [list(s) for s in extra(protocol, results)]
        timings[getattr(extra, "__name__", "experiment")] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    lib = protocol.library
    results.update(
        config=dataclasses.asdict(cfg),
        families={n: world.family(n) for n in world.names()},
        split_sizes=world.split_sizes,
        sources=world.names("source"),
        targets=world.names("target"),
        source_accuracy=source_acc,
        mixture_accuracy=mixture_acc,
        prompt_rms=protocol.prompt_scales(),
        library=str(lib.root),
        backbone={
            "path": str(backbone.path),
            "pretrained_now": backbone.pretrained_now,
            "t5": backbone.config.shape_dict(),
            "pretraining": backbone.record,
        },
        timings={k: round(v, 1) for k, v in timings.items()},
    )
    return results


def demo_main(argv: list[str]) -> int:
    """Entry point of `spot-jax demo`; returns the exit status."""
    args = _parser().parse_args(argv)
    from spot_jax.demo import experiment, report

    cfg = experiment.DemoConfig.quick() if args.quick else experiment.DemoConfig()
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise SystemExit(  # noqa: B904 - the usage error is the whole message
                f"--seeds takes comma-separated integers, e.g. 0,1,2; not {args.seeds!r}"
            )
        if len(seeds) < 2:
            raise SystemExit("--seeds needs at least two seeds (the report gives mean ± std)")
        cfg = dataclasses.replace(cfg, seeds=seeds)
    extra = opt_in_experiments(args.experiments, args.quick, not args.no_progress)
    results = run_demo(
        cfg, args.out, args.cache_dir, progress=not args.no_progress,
        experiments=[*EXPERIMENTS, *extra],
    )  # fmt: skip
    out = epath.Path(args.out)
    built = report.build(results, out, quick=args.quick)
    built.write(out)
    (out / "results.json").write_text(json.dumps(results))
    for heading, body in built.sections:  # the headline tables on the terminal too
        if heading.startswith("Results"):
            print(f"\n{heading}\n\n{body}")
    print(f"Report: {out / report.REPORT_FILE} (timings: {results['timings']})")
    return 0
