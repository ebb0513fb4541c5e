"""`spot-jax tasks`: list the registered tasks and mixtures, show preprocessed examples.

    spot-jax tasks list [--mixtures | --study sources|targets]
    spot-jax tasks show spot_glue_rte_v200 [--split validation] [-n 5] [--mock-data]

`show` prints one JSON object a line with the `inputs` / `targets` strings the model reads
(after text preprocessing, before tokenization; for C4's objectives, which work on token ids,
the detokenized model features, sentinels as `<extra_id_k>`). `--mock-data` serves the TFDS
data from `tfds.testing.mock_data` (random examples, no download). Few-shot names such as
`spot_glue_rte_v200_16shot_seed7` are registered on demand. `list --study` prints SPoT's
transferability study's source or target tasks in the paper's order (Table 2), one a line, for
scripting its runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spot-jax tasks", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="print registered task (and mixture) names")
    ls.add_argument("--mixtures", action="store_true", help="list mixtures instead of tasks")
    ls.add_argument(
        "--study", choices=("sources", "targets"), help="SPoT's Table 2 tasks, in its order"
    )
    show = sub.add_parser("show", help="print preprocessed examples as JSON lines")
    show.add_argument("name", help="task name, e.g. spot_glue_rte_v200")
    show.add_argument("--split", default="validation")
    show.add_argument("-n", type=int, default=5, help="examples to print")
    show.add_argument("--mock-data", action="store_true", help="use tfds.testing.mock_data")
    show.add_argument("--mock-examples", type=int, default=4, help="mock examples per split")
    return p


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def show_examples(name: str, split: str = "validation", n: int = 5) -> Iterator[dict]:
    """The first `n` preprocessed examples of a task split, as plain Python values.

    Raises:
        ValueError: for an unknown task (with the list command to find one) or split.
    """
    import seqio

    from spot_jax.data import tasks
    from spot_jax.data.tasks import few_shot, task_index

    tasks.register_all()
    if name not in seqio.TaskRegistry.names():
        few_shot.resolve(name) or task_index.resolve(name)
    if name not in seqio.TaskRegistry.names():
        if name in seqio.MixtureRegistry.names():
            raise ValueError(f"{name!r} is a mixture; show one of its tasks.")
        raise ValueError(f"No task named {name!r}; see `spot-jax tasks list`.")
    task = seqio.TaskRegistry.get(name)
    if split not in task.splits:
        raise ValueError(f"Task {name!r} has splits {list(task.splits)}, not {split!r}.")
    if _objective_after_cache(task):
        # C4's objectives run on token ids after the cache point: show what the model reads.
        yield from _token_task_examples(task, split, n)
        return
    ds = task.preprocess_precache(task.source.get_dataset(split=split, shuffle=False), seed=0)
    for example in ds.take(n).as_numpy_iterator():
        yield {k: _jsonable(v) for k, v in example.items()}


# Feature lengths `show` uses for tasks that build examples from token ids (T5's C4 setup).
TOKEN_TASK_LENGTHS = {"inputs": 512, "targets": 114}


def _token_task_examples(task, split: str, n: int) -> Iterator[dict]:
    """The first `n` model examples of a task that works on token ids, detokenized."""
    import tensorflow as tf

    try:
        ds = task.get_dataset(TOKEN_TASK_LENGTHS, split=split, shuffle=False, seed=0)
        examples = list(ds.take(n).as_numpy_iterator())
    except tf.errors.OpError as error:
        vocabulary = task.output_features["targets"].vocabulary
        path = getattr(vocabulary, "sentencepiece_model_file", "?")
        raise ValueError(
            f"Could not read {task.name}:{split} ({type(error).__name__}). It tokenizes with "
            f"{path}: if that is unreachable, set SPOT_JAX_VOCAB to a local copy."
        ) from error
    for example in examples:
        yield {
            k: task.output_features[k].vocabulary.decode(v.tolist())
            for k, v in example.items()
            if k in task.output_features
        }


def _objective_after_cache(task) -> bool:
    """Whether the task tokenizes before its cache point (its objective works on ids)."""
    import seqio

    names = [getattr(p, "func", p) for p in task.preprocessors]
    cache = next(
        (i for i, p in enumerate(names) if isinstance(p, seqio.CacheDatasetPlaceholder)), None
    )
    return cache is not None and seqio.preprocessors.tokenize in names[:cache]


def tasks_main(argv: list[str]) -> int:
    """Entry point of `spot-jax tasks`; returns the exit status."""
    args = _parser().parse_args(argv)
    import seqio

    from spot_jax.data import tasks

    if args.action == "list":
        tasks.register_all()
        if args.study:
            from spot_jax.data import mixtures

            study = {"sources": mixtures.STUDY_SOURCES, "targets": mixtures.STUDY_TARGETS}
            print("\n".join(study[args.study]))
            return 0
        registry = seqio.MixtureRegistry if args.mixtures else seqio.TaskRegistry
        for name in sorted(registry.names()):
            print(name)
        return 0
    if args.mock_data:
        tasks.enable_mock_data(args.mock_examples)
    shown = 0
    for example in show_examples(args.name, args.split, args.n):
        print(json.dumps(example, ensure_ascii=False, sort_keys=True))
        shown += 1
    sys.stdout.flush()
    if not shown:
        # e.g. a k-shot subset of mock data too small to fill its class quotas.
        more = " (try more --mock-examples)" if args.mock_data else ""
        print(f"{args.name}: the {args.split!r} split has no examples{more}", file=sys.stderr)
    return 0
