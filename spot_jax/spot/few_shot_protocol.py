"""PPT's few-shot protocol (Gu et al. 2022, B3) as one command: seeded runs, mean ± std.

For a task T and seeds s = 0..4, each run trains on `T_<k>shot_seed<s>` (k train examples, a
disjoint k-example dev set, see `spot_jax.data.tasks.few_shot`), its prompt is the checkpoint
with the best dev score, and that prompt is evaluated on the test split (T's original
validation split). Beside the seeds: the starting prompt evaluated zero-shot (the runs' step-0
checkpoint, i.e. the initialisation, e.g. a PPT pre-trained prompt), and optionally a
full-data run on T itself (its latest checkpoint; the train job's arguments, except the eval
and checkpoint periods, which are `--full-data-period` rather than the few-shot runs' epoch).

    spot-jax few-shot --task spot_glue_rte_v200 --out DIR [--seeds 0,1,2,3,4] [--k 32]
        [--full-data-steps N [--full-data-period P]] [--in-process] -- \\
        --gin_file=models/t5_1_1/base.gin --gin_file=runs/prompt_tune.gin \\
        --gin_file=ppt/few_shot_from_pretrained.gin \\
        --gin.PROMPT_FILE=PPT_RUN/numpy_checkpoints/checkpoint_8000/encoder.prompt.prompt.prompt \\
        --gin.INITIAL_CHECKPOINT_PATH=...

writes DIR/seed<s>/ (the runs), DIR/full/, DIR/results.json and DIR/results.md. Runs that
already finished are resumed (nothing retrained). `run_protocol` is the same as a function.
"""

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from etils import epath

from spot_jax.spot import runs as runs_lib

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# The report's fallback when the task has no metric of its own (e.g. the demo's world tasks).
FALLBACK_METRIC = "eval/sequence_accuracy"
# Runs a gin train job: (argv after `spot-jax train`) -> None, raising on failure.
Runner = Callable[[list[str]], None]


def subprocess_runner(argv: list[str]) -> None:
    """Each run in its own `spot-jax train` process (isolated gin and device state)."""
    cmd = [sys.executable, "-m", "spot_jax.cli", "train", *argv]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"run failed: {' '.join(cmd)}")


def in_process_runner(argv: list[str]) -> None:
    """Runs in this process (no start-up per run; compiled programs are reused)."""
    import gin

    from spot_jax import cli

    gin.clear_config()
    try:
        cli.run_job("train", argv)
    finally:
        gin.clear_config()


def few_shot_variant(task: str, k: int, seed: int) -> str:
    """`<task>_<k>shot_seed<s>`, registered now if the task catalog knows the task."""
    from spot_jax.data.tasks import few_shot

    few_shot.resolve(few_shot.few_shot_name(task, k, seed))
    return few_shot.few_shot_name(task, k, seed)


def _quote(value: str) -> str:
    return repr(str(value))


def run_protocol(
    task: str,
    gin_args: Sequence[str],
    out: epath.PathLike,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    k: int = 32,
    metric: str | None = None,
    select_metric: str | None = None,
    zero_shot: bool = True,
    full_data_steps: int | None = None,
    full_data_period: int = 1000,
    eval_steps: int | None = None,
    test_split: str = "validation",
    model_parallel: int = 1,
    runner: Runner = subprocess_runner,
    variant: Callable[[str, int, int], str] = few_shot_variant,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Runs the protocol and writes `results.json` and `results.md` in `out`.

    Args:
      task: the full-data task T (its few-shot variants are trained).
      gin_args: the train job's arguments (`--gin_file=...`, `--gin.NAME=VALUE`), without
        MIXTURE_OR_TASK_NAME, MODEL_DIR and SEED, which the protocol sets per run.
      out: the output directory.
      seeds: one run per seed (the subset and the run's SEED).
      k: examples in the few-shot train (and dev) set.
      metric: the test metric reported (a `evaluation.Evaluator` key; None: the task's first
        metric, as `runs.task_metrics` reads it, else eval/sequence_accuracy).
      select_metric: the dev metric that picks each run's checkpoint (None: the task's, as
        `library add` picks 'best'; PPT selects by dev accuracy).
      zero_shot: also evaluate the starting prompt.
      full_data_steps: also train on T itself for this many steps.
      full_data_period: that run's eval and checkpoint period (the few-shot files evaluate
        every epoch of 32 examples, which on a full task would decode its validation split
        every few steps); 0 means only at the end.
      eval_steps: test batches (None: the whole split).
      test_split: T's split the prompts are tested on (the variants' `test`).
      model_parallel: the test evaluator's model axis (as MODEL_PARALLEL).
      runner: how a train job runs (`subprocess_runner`, `in_process_runner`).
      variant: (task, k, seed) -> the few-shot task name (the demo can plug in its own).
      log: progress lines (None: silent).

    Returns:
      The report: per-seed results, their mean ± std, zero-shot and full-data results.
    """
    from spot_jax.spot import zero_shot as zero_shot_lib

    say = log or (lambda _: None)
    out = epath.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not seeds:
        raise ValueError("give at least one seed")
    protocol_macros = ("--gin.MIXTURE_OR_TASK_NAME", "--gin.MODEL_DIR", "--gin.SEED")
    fixed = [a for a in gin_args if a.split("=")[0] in protocol_macros]
    if fixed:
        raise ValueError(f"the protocol sets {fixed} itself; leave them out")
    runs = []
    for seed in seeds:
        name, run_dir = variant(task, k, seed), out / f"seed{seed}"
        say(f"few-shot seed {seed}: training {name} in {run_dir}")
        runner(
            [
                *gin_args,
                f"--gin.MIXTURE_OR_TASK_NAME={_quote(name)}",
                f"--gin.MODEL_DIR={_quote(run_dir)}",
                f"--gin.SEED={seed}",
            ]
        )
        chosen = runs_lib.select_checkpoint(run_dir, "best", select_metric)
        runs.append(
            {
                "seed": seed,
                "task": name,
                "model_dir": str(run_dir),
                "step": chosen.step,
                "selected": chosen.reason,
                "select_metric": chosen.metric,
            }
        )
    # Every variant's test split is T's `test_split` (validation): one evaluator serves all
    # prompts, reading T itself (the variants list no size for that split, which the
    # pipeline asks for).
    target = zero_shot_lib.load_target("test", runs[0]["model_dir"], eval_steps=eval_steps)
    target.eval_data = dataclasses.replace(
        target.eval_data, mixture_or_task_name=task, split=test_split
    )
    evaluate = zero_shot_lib.Evaluator(target, model_parallel)

    def test(run_dir, step) -> dict[str, float]:
        return evaluate(np.load(runs_lib.prompt_file(run_dir, step)))

    for run in runs:
        run["test"] = test(run["model_dir"], run["step"])
    metric = metric or next(iter(runs_lib.task_metrics(list(runs[0]["test"]))), FALLBACK_METRIC)
    report: dict[str, Any] = {
        "task": task,
        "k": k,
        "metric": metric,
        "select_metric": select_metric or runs[0]["select_metric"],
        "test_split": test_split,
    }
    for run in runs:
        say(f"seed {run['seed']}: {metric} {run['test'].get(metric)} ({run['selected']})")
    values = np.array([run["test"][metric] for run in runs], np.float64)
    report.update(runs=runs, mean=float(values.mean()), std=float(values.std()))
    if zero_shot:
        report["zero_shot"] = test(runs[0]["model_dir"], 0)
    if full_data_steps:
        run_dir = out / "full"
        say(f"full data: training {task} for {full_data_steps} steps in {run_dir}")
        runner(
            [
                *gin_args,
                f"--gin.MIXTURE_OR_TASK_NAME={_quote(task)}",
                f"--gin.MODEL_DIR={_quote(run_dir)}",
                f"--gin.TRAIN_STEPS={full_data_steps}",
                f"--gin.EVAL_PERIOD={full_data_period}",
                f"--gin.CHECKPOINT_PERIOD={full_data_period}",
            ]
        )
        step = runs_lib.numpy_steps(run_dir)[-1]
        report["full_data"] = {"model_dir": str(run_dir), "step": step, "test": test(run_dir, step)}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table: zero-shot, each seed, mean ± std, full data."""
    m = report["metric"]
    lines = [
        f"# {report['task']}: {report['k']}-shot, {len(report['runs'])} seeds\n",
        f"| run | {m} | checkpoint |",
        "|---|---|---|",
    ]
    if "zero_shot" in report:
        lines.append(f"| zero-shot (starting prompt) | {report['zero_shot'][m]:.4f} | 0 |")
    for run in report["runs"]:
        lines.append(
            f"| seed {run['seed']} | {run['test'][m]:.4f} | {run['step']} ({run['selected']}) |"
        )
    lines.append(
        f"| **{report['k']}-shot mean ± std** | **{report['mean']:.4f} ± {report['std']:.4f}** | |"
    )
    if "full_data" in report:
        full = report["full_data"]
        lines.append(f"| full data | {full['test'][m]:.4f} | {full['step']} (latest) |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spot-jax few-shot", description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="the full-data task, e.g. spot_glue_rte_v200")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--k", type=int, default=32, help="few-shot train (and dev) examples")
    p.add_argument("--metric", default=None, help="test metric reported (default: the task's)")
    p.add_argument(
        "--select-metric", default=None, help="dev metric picking a step (default: the task's)"
    )
    p.add_argument("--no-zero-shot", action="store_true", help="skip the starting prompt's eval")
    p.add_argument("--full-data-steps", type=int, default=None, help="also train on the task")
    p.add_argument(
        "--full-data-period", type=int, default=1000, help="its eval/checkpoint period (0: end)"
    )
    p.add_argument("--eval-steps", type=int, default=None, help="test batches (default all)")
    p.add_argument("--model-parallel", type=int, default=1, help="test evaluator's model axis")
    p.add_argument("--in-process", action="store_true", help="train in this process")
    return p


def few_shot_main(argv: list[str]) -> int:
    """Entry point of `spot-jax few-shot`; the train job's arguments follow `--`."""
    args, gin_args = _parser().parse_known_args(argv)
    gin_args = [a for a in gin_args if a != "--"]
    if not any(a.startswith("--gin_file") for a in gin_args):
        raise ValueError(
            "give the train job's gin files, e.g. -- --gin_file=models/t5_1_1/base.gin "
            "--gin_file=runs/prompt_tune.gin --gin_file=ppt/few_shot_from_pretrained.gin"
        )
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, not {args.seeds!r}") from None
    report = run_protocol(
        args.task,
        gin_args,
        args.out,
        seeds=seeds,
        k=args.k,
        metric=args.metric,
        select_metric=args.select_metric,
        zero_shot=not args.no_zero_shot,
        full_data_steps=args.full_data_steps,
        full_data_period=args.full_data_period,
        eval_steps=args.eval_steps,
        model_parallel=args.model_parallel,
        runner=in_process_runner if args.in_process else subprocess_runner,
    )
    print(to_markdown(report), end="")
    return 0
