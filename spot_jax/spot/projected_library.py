"""Prompt libraries across models: train a projector between two libraries' models, and turn
a library of model A into a library of model B.

    spot-jax library train-projector --library A_LIB --out PROJ --target-library B_LIB   (DM)
    spot-jax library train-projector --library A_LIB --out PROJ \
        --target ENTRY=B_RUN_DIR_OR_GIN [--target ...]                                  (TT)
    spot-jax library project --library A_LIB --projector PROJ --out B_LIB \
        [--from-model A_LIB_OR_RUN_OR_FINGERPRINT] [--to-model B_RUN_DIR_OR_FINGERPRINT]

TT (task loss) pairs each named A entry with model B on that entry's task (a B run directory
or gin file, as `library zero-shot --target` reads them); DM pairs entries of the two
libraries that record the same task. A projected library has B's record in `library.json`
and, in every entry's meta, `projected_from` (A's fingerprint, shape, library, entry) and
`projector`, so `library similarity`, `retrieve` and transfer work on it as on any library.
"""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from spot_jax.spot import library as library_lib
from spot_jax.spot import projection
from spot_jax.spot import runs as runs_lib


def train_projector(
    source: library_lib.Library | epath.PathLike,
    out: epath.PathLike,
    target_library: epath.PathLike | None = None,
    targets: Sequence[tuple[str, str]] = (),
    steps: int = 1000,
    learning_rate: float = 5e-3,
    hidden: int = 768,
    activation: str = "tanh",
    seed: int = 0,
    bindings: Sequence[str] = (),
) -> tuple[projection.ProjectorSpec, list[float]]:
    """Trains and saves a projector from `source`'s model; returns (spec, losses).

    Args:
      source: model A's library.
      out: where the projector is saved.
      target_library: DM: model B's library (entries paired with A's by task).
      targets: TT: (A entry name, B run dir or gin file on that entry's task) pairs.
      steps, learning_rate, hidden, activation, seed: see `projection.train_*`.
      bindings: extra gin bindings for gin-file targets.
    """
    from spot_jax.spot import transfer_target

    src = source if isinstance(source, library_lib.Library) else library_lib.Library(source)
    record = src.model()
    if record is None:
        raise projection.ProjectionError(f"library {src.root} has no entries")
    if bool(target_library) == bool(targets):
        raise projection.ProjectionError(
            "give either --target-library (distance) or --target ENTRY=RUN_OR_GIN (task loss)"
        )
    if target_library:
        tgt = library_lib.Library(target_library)
        if tgt.model() is None:
            raise projection.ProjectionError(f"library {tgt.root} has no entries")
        spec = projection.ProjectorSpec(record, tgt.model(), hidden, activation)
        tasks, xs, ys = projection.paired_prompts(src, tgt)
        params, losses = projection.train_distance(spec, xs, ys, steps, learning_rate, seed)
        info = {"objective": "distance", "tasks": tasks}
    else:
        loaded = [
            transfer_target.load_target(name, path, [] if epath.Path(path).is_dir() else bindings)
            for name, path in targets
        ]
        for (name, path), target_ in zip(targets, loaded, strict=True):
            # The task loss teaches the projector to map A's prompt for a task onto B's for
            # the same task: a mismatched pair would train it silently toward nonsense.
            task, data_task = src.get(name).meta.get("task"), target_.eval_data.mixture_or_task_name
            if task and task != data_task:
                raise projection.ProjectionError(
                    f"--target {name}={path}: entry {name} was trained on {task} but the "
                    f"target evaluates {data_task}; pair each entry with its own task"
                )
        first = loaded[0]
        target = projection.model_record(
            first.t5_config, first.prompt_length, first.initial_checkpoint_path, first.seed
        )
        spec = projection.ProjectorSpec(record, target, hidden, activation)
        sources = [src.get(name).prompt() for name, _ in targets]
        params, losses = projection.train_task(
            spec, sources, loaded, steps, learning_rate, seed, log_period=max(steps // 10, 1)
        )
        info = {"objective": "task", "tasks": [f"{n}={p}" for n, p in targets]}
    projection.save(out, spec, params, **info, steps=steps, learning_rate=learning_rate,
                    losses=[float(x) for x in losses])  # fmt: skip
    return spec, losses


def resolve_model(ref: str) -> dict[str, Any]:
    """A model record from a library directory, a run's MODEL_DIR, or a bare fingerprint."""
    path = epath.Path(ref)
    if (path / library_lib.LIBRARY_META).exists():
        return json.loads((path / library_lib.LIBRARY_META).read_text())
    if (path / "model.json").exists():
        info = runs_lib.run_info(path)
        return {k: info[k] for k in ("fingerprint", "frozen", "model", "prompt_length", "emb_dim")}
    if path.exists():
        raise projection.ProjectionError(f"{ref} is neither a prompt library nor a spot_jax run")
    return {"fingerprint": ref}


def project_library(
    source: library_lib.Library | epath.PathLike,
    out: library_lib.Library | epath.PathLike,
    projector: epath.PathLike,
    from_model: str | None = None,
    to_model: str | None = None,
) -> list[str]:
    """Writes every entry of `source` (model A), projected, into library `out` (model B).

    Args:
      source: model A's library.
      out: the new (or an existing model-B) library.
      projector: a saved projector directory from A to B.
      from_model: A as a library, run dir or fingerprint; checked against `source`.
      to_model: B likewise; checked against the projector. A run dir becomes the entries'
        `run_dir`, so commands that rebuild the frozen model (`similarity --metric on`) work.

    Returns:
      The names of the new entries.

    Raises:
      ProjectionError: models mismatch, an entry exists in `out`, or `source` is empty.
    """
    src = source if isinstance(source, library_lib.Library) else library_lib.Library(source)
    dst = out if isinstance(out, library_lib.Library) else library_lib.Library(out)
    spec, params = projection.load(projector)
    have = src.model()
    if have is None or not len(src):
        raise projection.ProjectionError(f"library {src.root} has no entries to project")
    checks = [("the library", have, spec.source, "the projector's source")]
    if from_model:
        checks.append(("--from-model", resolve_model(from_model), have, f"library {src.root}"))
    run_dir = None
    if to_model:
        checks.append(
            ("--to-model", resolve_model(to_model), spec.target, "the projector's target")
        )
        run_dir = to_model if (epath.Path(to_model) / "model.json").exists() else None
    if dst.model() is not None:
        checks.append((f"library {dst.root}", dst.model(), spec.target, "the projector's target"))
    for what, a, b, against in checks:
        if a["fingerprint"] != b["fingerprint"]:
            raise projection.ProjectionError(
                f"{what} is model {a['fingerprint']} but {against} is model {b['fingerprint']}; "
                "use the projector trained between these two models"
            )
    taken = [e.name for e in src.entries() if (dst.root / e.name).exists()]
    if taken:
        raise projection.ProjectionError(
            f"entries {taken} already exist in {dst.root}; use a new library"
        )
    names = []
    for entry in src.entries():
        arrays = projection.project(spec, params, np.stack([entry.prompt(), entry.embedding()]))
        meta = {
            **entry.meta,
            **{k: spec.target[k] for k in ("fingerprint", "frozen", "prompt_length", "emb_dim")},
            "model": spec.target.get("model"),
            "run_dir": run_dir,
            "validation": {},
            "validation_history": [],
            "projected_from": {
                **{k: have.get(k) for k in ("fingerprint", "frozen", "prompt_length", "emb_dim")},
                "library": str(src.root),
                "entry": entry.name,
                "run_dir": entry.meta.get("run_dir"),
            },
            "projector": str(projector),
        }
        dst.write(entry.name, arrays[0], arrays[1], meta, f"{src.root}/{entry.name} (projected)")
        names.append(entry.name)
    return names
