"""`spot-jax library ...`: manage a prompt library, compare prompts, retrieve, transfer.

    spot-jax library add --library L RUN_DIR [--name N] [--checkpoint best|latest|STEP]
        [--best-metric NAME[:max|:min]]      (default best: the task's validation metric)
    spot-jax library add-file --library L --prompt P.npy --embedding E.npy --embedding-step S
        --task T [--name N] [--like RUN_DIR]          (a prompt from outside spot_jax)
    spot-jax library list|show|remove --library L [NAME]
    spot-jax library similarity --library L --metric M [--plot out.png] [--out m.csv]
    spot-jax library similarity --library L --metric M --target PROMPT.npy   (ranking CSV)
    spot-jax library retrieve --library L --target RUN_DIR_or_npy --k K [--metric M]
    spot-jax library transfer --library L --target T --k K --out-dir D -- TRAIN ARGS...
    spot-jax library zero-shot --library L [--target NAME=RUN_DIR_OR_GIN ...] [--metric M]
        [--relative] [--out m.csv] [--plot heat.png]
    spot-jax library train-projector --library L --out PROJ (--target-library L2 | --target ...)
    spot-jax library project --library L --projector PROJ --out L2 [--from-model] [--to-model]

Errors raise; the CLI prints them as one line and exits 1.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from spot_jax.data import config as data_config
from spot_jax.models import prompts
from spot_jax.spot import library as library_lib
from spot_jax.spot import library_args, retrieval, similarity, transfer


def library_main(argv: list[str]) -> int:
    args = library_args.parser().parse_args(argv)
    lib = library_lib.Library(args.library)
    return int(globals()[f"_{args.command.replace('-', '_')}"](lib, args) or 0)


def _mixture(lib, args):
    """Prints the self-describing mixture name and the two runs of the strategy.

    The name (`spot_mix__<task>__...`) is registered by the data pipeline on first use, so
    the source run needs nothing else (spot_jax.data.mixtures).
    """
    tasks = transfer.mixture_sources(
        lib, args.target, args.k, args.metric, tuple(args.exclude), not args.no_target_task
    )
    if args.with_task and args.with_task not in tasks:
        tasks.append(args.with_task)
    if not tasks:
        raise ValueError("the top-k entries record no task names; cannot build a mixture")
    name = data_config.MIX_PREFIX + "__".join(tasks)
    print(name)
    print(
        "# 1. source prompt on the mixture:\n"
        f"#   spot-jax train --gin_file=<model>.gin --gin_file=runs/prompt_tune.gin "
        f"--gin_file=spot/source_mixture.gin --gin.MIXTURE_OR_TASK_NAME={name!r} "
        "--gin.MODEL_DIR=SRC ...\n"
        "# 2. target from it: --gin_file=prompts/from_file.gin "
        "--gin.PROMPT_FILE=SRC/numpy_checkpoints/checkpoint_<last>/encoder.prompt.prompt.prompt",
        file=sys.stderr,
    )


def _add(lib, args):
    entry = lib.add(
        args.model_dir,
        args.name,
        args.checkpoint,
        args.embedding_step,
        args.best_metric,
        task_index=args.task_index,
    )
    m = entry.meta
    print(
        f"added {entry.name}: task {m['task']}, step {m['step']} ({m['selected']}), "
        f"embedding step {m['embedding_step']}, prompt [{m['prompt_length']}, {m['emb_dim']}]"
    )
    if m["selection"].get("fallback"):
        print(
            f"note: {entry.name}'s best checkpoint is by eval/loss, not a task metric: "
            f"{m['selection']['rule']}",
            file=sys.stderr,
        )


def _add_file(lib, args):
    entry = lib.add_file(
        args.prompt,
        task=args.task,
        embedding=args.embedding,
        embedding_step=args.embedding_step,
        name=args.name,
        like=args.like,
        step=args.step,
    )
    m = entry.meta
    print(
        f"added {entry.name}: task {m['task']}, embedding step {m['embedding_step']}, "
        f"prompt [{m['prompt_length']}, {m['emb_dim']}]"
    )


def _list(lib, args):
    print("name,task,step,embedding_step,prompt_length,emb_dim,run_dir")
    for e in lib.entries():
        m = e.meta
        print(
            f"{e.name},{m['task']},{m['step']},{m['embedding_step']},{m['prompt_length']},"
            f"{m['emb_dim']},{m['run_dir']}"
        )


def _show(lib, args):
    print(json.dumps(lib.get(args.name).meta, indent=2))


def _remove(lib, args):
    lib.remove(args.name)
    print(f"removed {args.name}")


def _arrays(lib, use: str) -> tuple[list[str], list[np.ndarray]]:
    entries = lib.entries()
    if not entries:
        raise library_lib.LibraryError(f"library {lib.root} has no entries")
    return [e.name for e in entries], [
        e.embedding() if use == "embedding" else e.prompt() for e in entries
    ]


def _similarity(lib, args):
    if args.metric == "on":
        return _similarity_on(lib, args)
    if args.target:
        ranked = retrieval.rank(lib, args.target, args.metric, use=args.use)
        _emit(retrieval.to_csv(ranked), args.out)
        return
    names, arrays = _arrays(lib, args.use)
    sim = similarity.matrix(arrays, args.metric)
    _emit(_matrix_csv(names, sim), args.out)
    if args.plot:
        similarity.plot_heatmap(sim, names, args.plot, f"{args.metric} ({args.use})")
        print(f"wrote {args.plot}", file=sys.stderr)


def _similarity_on(lib, args):
    """ON needs the frozen model: rebuilt from the first entry's run (all share its
    fingerprint)."""
    from spot_jax.spot import neurons

    names, arrays = _arrays(lib, args.use)
    run = lib.get(names[0]).meta.get("run_dir")
    if not run:
        raise library_lib.LibraryError(
            f"--metric on rebuilds the frozen model from an entry's run, but {names[0]} records "
            "none (a projected library made without --to-model, or an added file)"
        )
    model, params = neurons.frozen_model(run)
    inputs = np.load(args.on_inputs) if args.on_inputs else None
    layers = _layer_window(args.on_layers) if args.on_layers else None
    if args.target:
        target = retrieval.target_embedding(args.target, lib.embedding_step())
        acts = neurons.activations(model, params, target, inputs)
        scores = [
            (n, neurons.overlap(neurons.activations(model, params, a, inputs), acts, layers))
            for n, a in zip(names, arrays, strict=True)
        ]
        scores.sort(key=lambda x: (-x[1], x[0]))
        ranked = [retrieval.Ranked(n, s, i + 1) for i, (n, s) in enumerate(scores)]
        _emit(retrieval.to_csv(ranked), args.out)
        return
    sim = neurons.on_matrix(model, params, arrays, inputs, layers)
    _emit(_matrix_csv(names, sim), args.out)
    if args.plot:
        similarity.plot_heatmap(sim, names, args.plot, f"ON ({args.use})")
        print(f"wrote {args.plot}", file=sys.stderr)


def _layer_window(text: str) -> slice:
    """--on-layers START:STOP (either may be empty) as a slice of layers."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(x) if x.strip() else None for x in parts)
    except ValueError:
        raise ValueError(
            f"--on-layers takes START:STOP (e.g. 0:3, Su et al.'s 3-layer windows), not {text!r}"
        ) from None
    return slice(start, stop)


def _matrix_csv(names, sim) -> str:
    lines = ["," + ",".join(names)]
    lines += [
        n + "," + ",".join(f"{v:.8g}" for v in row) for n, row in zip(names, sim, strict=True)
    ]
    return "\n".join(lines) + "\n"


def _retrieve(lib, args):
    ranked = retrieval.rank(lib, args.target, args.metric, args.k, tuple(args.exclude))
    _emit(retrieval.to_csv(ranked), args.out)


def _transfer(lib, args):
    train_args = [a for a in args.train_args if a != "--"]
    if not any(a.startswith("--gin_file") for a in train_args):
        raise ValueError(
            "give the target job after --, e.g. -- --gin_file=runs/prompt_tune.gin "
            "--gin.MIXTURE_OR_TASK_NAME=..."
        )
    runs = transfer.best_of_top_k(
        lib, args.target, args.out_dir, args.k, args.metric, tuple(args.exclude)
    )
    cli = [sys.executable, "-m", "spot_jax.cli", "train"]
    for run in runs:
        print(f"target run from {run.source} (similarity {run.similarity:.4g}) -> {run.model_dir}")
        cmd = [
            *cli,
            *train_args,
            "--gin_file=prompts/from_file.gin",
            f"--gin.PROMPT_FILE={run.prompt_file}",
            f"--gin.MODEL_DIR={run.model_dir}",
        ]
        if args.rescale_rms is not None:
            cmd.append(f"--gin.RESCALE_PROMPT_RMS={_rms_value(args.rescale_rms)}")
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"target run from {run.source} failed: {' '.join(cmd)}")
    best, results = transfer.pick_best(runs, args.select_metric)
    metric = results[0].get("metric") if results else args.select_metric
    report = {"best": best.source if best else None, "metric": metric, "runs": results}
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / "best_of_top_k.json").write_text(json.dumps(report, indent=2))
    print("source,similarity,score,model_dir")
    for r in results:
        print(f"{r['source']},{r['similarity']:.6g},{r['score']},{r['model_dir']}")
    print(f"best: {report['best']} by {metric}")


def _rms_value(text: str) -> str:
    """--rescale-rms as a gin value: a positive number, or the string 'embeddings'."""
    try:
        value = text if text == "embeddings" else float(text)
    except ValueError:
        value = text  # not a number: check_rms names what it takes
    return repr(prompts.check_rms(value))


def _zero_shot(lib, args):
    from spot_jax.spot import transfer_target, zero_shot

    steps = "config" if args.eval_steps is None else args.eval_steps
    targets = None
    if args.target:
        targets = []
        for spec in args.target:
            name, path = transfer_target.parse_target_spec(spec)
            bindings = [] if Path(path).is_dir() else args.gin_binding
            targets.append(transfer_target.load_target(name, path, bindings, steps))
    elif args.eval_steps is not None:
        targets = [
            transfer_target.load_target(e.name, e.meta["run_dir"], (), steps) for e in lib.entries()
        ]
    result = zero_shot.zero_shot(
        lib,
        targets,
        args.metric,
        args.sources,
        zero_shot.parse_pairs(args.own, "--own"),
        args.random,
        log=lambda m: print(m, file=sys.stderr),
    )
    _emit(result.to_csv(args.relative), args.out)
    if args.json:
        pairs = [{"source": s, "target": t, **m} for (s, t), m in sorted(result.metrics.items())]
        own = dict(zip(result.targets, map(float, result.own), strict=True))
        Path(args.json).write_text(json.dumps({"own": own, "pairs": pairs}, indent=2))
    if args.plot:
        values = result.relative() if args.relative else result.scores
        title = f"zero-shot {'relative ' if args.relative else ''}{args.metric}"
        zero_shot.plot(values, result.sources, result.targets, args.plot, title)
        print(f"wrote {args.plot}", file=sys.stderr)


def _project(lib, args):
    from spot_jax.spot import projected_library

    names = projected_library.project_library(
        lib, args.out, args.projector, args.from_model, args.to_model
    )
    print(f"projected {len(names)} entries into {args.out}: {', '.join(names)}")


def _train_projector(lib, args):
    from spot_jax.spot import projected_library, transfer_target

    targets = [transfer_target.parse_target_spec(t) for t in args.target]
    spec, losses = projected_library.train_projector(
        lib, args.out, args.target_library, targets,
        args.steps, args.learning_rate, args.hidden, args.activation, args.seed, args.gin_binding,
    )  # fmt: skip
    print(f"projector {spec.source_shape} -> {spec.target_shape}: loss {losses[0]:.4g} -> "
          f"{losses[-1]:.4g}; saved to {args.out}")  # fmt: skip


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
