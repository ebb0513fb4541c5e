"""The command line of `spot-jax library`: its subcommands and their options.

`commands.library_main` parses with `parser()` and runs the subcommand's handler (its usage
summary is in `commands.py`'s docstring).
"""

import argparse

from spot_jax.spot import retrieval, similarity

DESCRIPTION = "Manage a prompt library, compare prompts, retrieve, transfer."

METRIC_NAMES = [*similarity.METRICS, "on"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spot-jax library", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name, help_):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--library", required=True, help="library directory (path or URL)")
        return s

    s = cmd("add", "add a training run's prompt")
    s.add_argument("model_dir", help="the run's MODEL_DIR")
    s.add_argument("--name", default=None, help="entry name (default: the run dir's name)")
    s.add_argument("--checkpoint", default="best", help="best | latest | STEP (default best)")
    s.add_argument(
        "--best-metric",
        default=None,
        metavar="NAME[:max|:min]",
        help="eval metric choosing --checkpoint best (higher is better unless it is a loss; "
        ":max/:min sets it). Default: the task's metric, the first its metric fns report "
        "(eval/accuracy, eval/f1, eval/matthews_corrcoef, eval/rouge1...; a mixture run: the "
        "mean of each task's first metric), higher is better; eval/loss, lower is better, when "
        "the run recorded no task metric",
    )
    s.add_argument(
        "--embedding-step",
        type=int,
        default=None,
        help="task-embedding checkpoint step (closest kept; default the library's, and for "
        "a first entry SPoT's 10000, or the earliest non-zero in a shorter run)",
    )
    s.add_argument(
        "--task-index",
        type=int,
        default=None,
        help="a multi-task run's task (0-based): adds its shared prompt combined with that "
        "task's (for its own best checkpoint, pass --best-metric eval/task_index_I__TASK/...)",
    )
    s = cmd("add-file", "add a prompt file (e.g. prompt-tuning's released prompts)")
    s.add_argument("--prompt", required=True, help="[P, H] prompt .npy / numpy checkpoint")
    s.add_argument("--embedding", required=True, help="[P, H] task embedding (early prompt)")
    s.add_argument("--embedding-step", type=int, required=True, help="its training step")
    s.add_argument("--task", required=True, help="the task the prompt was trained on")
    s.add_argument("--name", default=None, help="entry name (default: the file's folder)")
    s.add_argument("--step", type=int, default=None, help="the prompt's training step")
    s.add_argument("--like", default=None, help="a new library: a run (or library) of the model")
    cmd("list", "list entries")
    s = cmd("show", "show an entry's metadata")
    s.add_argument("name")
    s = cmd("remove", "remove an entry")
    s.add_argument("name")

    s = cmd("similarity", "similarity matrix (or a ranking with --target)")
    s.add_argument("--metric", required=True, choices=METRIC_NAMES)
    s.add_argument("--target", default=None, help="a prompt .npy or run dir: rank the library")
    s.add_argument(
        "--use", choices=("embedding", "prompt"), default="embedding", help="which array"
    )
    s.add_argument("--out", default=None, help="CSV path (default: stdout)")
    s.add_argument("--plot", default=None, help="clustered heatmap PNG path")
    s.add_argument("--on-inputs", default=None, help="ON: .npy int tokens [B, T] (default EOS)")
    s.add_argument("--on-layers", default=None, help="ON: layer window START:STOP (default all)")

    s = cmd("retrieve", "rank library sources for a target")
    s.add_argument("--target", required=True, help="target MODEL_DIR or early prompt .npy")
    s.add_argument("--k", type=int, default=3)
    s.add_argument("--metric", default=retrieval.DEFAULT_METRIC, choices=list(similarity.METRICS))
    s.add_argument("--exclude", nargs="*", default=[], help="entries never retrieved")
    s.add_argument("--out", default=None, help="CSV path (default: stdout)")

    s = cmd("transfer", "best of top-k: k target runs, keep the best on validation")
    s.add_argument("--target", required=True, help="target MODEL_DIR or early prompt .npy")
    s.add_argument("--k", type=int, default=3)
    s.add_argument("--metric", default=retrieval.DEFAULT_METRIC, choices=list(similarity.METRICS))
    s.add_argument("--exclude", nargs="*", default=[])
    s.add_argument("--out-dir", required=True, help="target runs go to OUT_DIR/<source>")
    s.add_argument(
        "--select-metric",
        default=None,
        help="validation metric to pick by, NAME[:max|:min] (default: the task's, as library add)",
    )
    s.add_argument(
        "--rescale-rms",
        default=None,
        help="scale each source prompt to this RMS, or 'embeddings' (a sampled-vocab init's)",
    )
    s.add_argument("train_args", nargs=argparse.REMAINDER, help="-- spot-jax train arguments")

    s = cmd("mixture", "top-k multi-task mixture: name the mixture of the top-k sources' tasks")
    s.add_argument("--target", required=True, help="target MODEL_DIR or early prompt .npy")
    s.add_argument("--k", type=int, default=3)
    s.add_argument("--metric", default=retrieval.DEFAULT_METRIC, choices=list(similarity.METRICS))
    s.add_argument("--exclude", nargs="*", default=[], help="entries never retrieved")
    s.add_argument(
        "--with-task", default=None, help="also mix this task (the target's, for a .npy target)"
    )
    s.add_argument(
        "--no-target-task",
        action="store_true",
        help="leave out a target run's own task (SPoT mixes it in)",
    )

    s = cmd("zero-shot", "evaluate every library prompt on every target task, no training")
    s.add_argument(
        "--target",
        action="append",
        default=[],
        help="NAME=RUN_DIR_OR_GIN (repeatable; default: the entries' own runs)",
    )
    s.add_argument("--metric", default="eval/sequence_accuracy", help="eval metric key")
    s.add_argument("--sources", nargs="*", default=None, help="entries to evaluate (default all)")
    s.add_argument("--relative", action="store_true", help="divide by the target's own score")
    s.add_argument(
        "--own", action="append", default=[], help="TARGET=ENTRY_OR_NPY: a target's own prompt"
    )
    s.add_argument("--random", action="store_true", help="add a random-prompt baseline row")
    s.add_argument("--eval-steps", type=int, default=None, help="batches (default EVAL_STEPS)")
    s.add_argument(
        "--gin-binding", action="append", default=[], help="extra binding for gin-file targets"
    )
    s.add_argument("--out", default=None, help="CSV path (default: stdout)")
    s.add_argument("--plot", default=None, help="heatmap PNG path")
    s.add_argument("--json", default=None, help="all metrics of every pair as JSON")

    s = cmd("project", "project every prompt to another model (spot_jax.spot.projected_library)")
    s.add_argument("--projector", required=True, help="saved projector directory")
    s.add_argument("--out", required=True, help="the new library, of the target model")
    s.add_argument("--from-model", default=None, help="source: library, run dir or fingerprint")
    s.add_argument("--to-model", default=None, help="target: run dir (or fingerprint)")
    s = cmd("train-projector", "train a projector from this library's model to another")
    s.add_argument("--out", required=True, help="projector directory to write")
    s.add_argument("--target-library", default=None, help="distance: the other model's library")
    s.add_argument("--target", action="append", default=[], help="task loss: ENTRY=RUN_OR_GIN")
    s.add_argument("--gin-binding", action="append", default=[], help="for gin-file targets")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--learning-rate", type=float, default=5e-3)
    s.add_argument("--hidden", type=int, default=768)
    s.add_argument("--activation", default="tanh", choices=("tanh", "leaky_relu"))
    s.add_argument("--seed", type=int, default=0)
    return p
