"""The prompt library: trained prompts of one frozen model, with the metadata SPoT needs.

Layout of a library directory (a local path or any `etils.epath` URL):

    <library>/library.json          the model every entry belongs to (shape, P, fingerprint)
    <library>/<name>/prompt.npy     float32 [P, H]: the source prompt (SPoT's "value")
    <library>/<name>/embedding.npy  float32 [P, H]: an early checkpoint (SPoT's "key")
    <library>/<name>/meta.json      task, model, fingerprint, steps, validation scores, ...

There is no index of entries: listing scans the directory, so nothing can fall out of step
with the entries. An entry is written into a hidden temporary folder and renamed into place,
so readers never see half an entry; `library.json` is written once, under a lock file, by the
first add, and every later add is checked against it.
"""

import ast
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath

PROMPT_FILE = "encoder.prompt.prompt.prompt"
LIBRARY_META = "library.json"
LOCK_FILE = ".lock"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")
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


@dataclasses.dataclass(frozen=True)
class Entry:
    """One library entry, loaded lazily.

    Attributes:
      name: the entry's directory name.
      path: its directory.
      meta: the parsed meta.json.
    """

    name: str
    path: epath.Path
    meta: dict[str, Any]

    def prompt(self) -> np.ndarray:
        """The source prompt, float32 [P, H]."""
        return _load(self.path / "prompt.npy")

    def embedding(self) -> np.ndarray:
        """The task embedding (early-checkpoint prompt), float32 [P, H]."""
        return _load(self.path / "embedding.npy")


# ---------------------------------------------------------------------------------------------
# Reading a training run (MODEL_DIR).


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
    """Eval metrics by step from metrics.jsonl (only records with eval/* keys)."""
    path = epath.Path(model_dir) / "metrics.jsonl"
    out: dict[int, dict[str, float]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
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
    """The checkpoint closest to `target` (ties: the earlier); default the earliest non-zero.

    SPoT's task embedding is an early checkpoint (10K steps), the same step for every task.
    """
    steps = numpy_steps(model_dir)
    if not steps:
        raise LibraryError(f"{model_dir} has no numpy prompt checkpoints; is it a prompt run?")
    if target is None:
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


# ---------------------------------------------------------------------------------------------
# The library.


class Library:
    """A directory of prompt entries of one frozen model (see the module docstring).

    Args:
      root: the library directory (created by the first add).
    """

    def __init__(self, root: epath.PathLike):
        self.root = epath.Path(root)

    # -- reading -----------------------------------------------------------------------------

    def model(self) -> dict[str, Any] | None:
        """The library's model record (fingerprint, emb_dim, prompt_length, ...), or None."""
        path = self.root / LIBRARY_META
        return json.loads(path.read_text()) if path.exists() else None

    def names(self) -> list[str]:
        """Entry names, sorted; hidden (temporary) folders and half entries are skipped."""
        if not self.root.exists():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if not d.name.startswith(".") and (d / "meta.json").exists()
        )

    def entries(self) -> list[Entry]:
        return [self.get(n) for n in self.names()]

    def get(self, name: str) -> Entry:
        path = self.root / name
        if not (path / "meta.json").exists():
            have = ", ".join(self.names()) or "none"
            raise LibraryError(f"no entry {name!r} in library {self.root} (entries: {have})")
        return Entry(name, path, json.loads((path / "meta.json").read_text()))

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.names())

    # -- writing -----------------------------------------------------------------------------

    def add(
        self,
        model_dir: epath.PathLike,
        name: str | None = None,
        checkpoint: str | int = "best",
        embedding_at: int | None = None,
        best_metric: str = "eval/loss",
    ) -> Entry:
        """Adds a run's prompt (and its early checkpoint as task embedding) as a new entry.

        Args:
          model_dir: the training run's MODEL_DIR.
          name: entry name; default the run directory's name.
          checkpoint: 'best', 'latest' or a step (see `select_step`).
          embedding_at: step of the task embedding (closest checkpoint); default the earliest
            non-zero one.
          best_metric: eval metric that picks the 'best' checkpoint.

        Returns:
          The new entry.

        Raises:
          LibraryError: the run is of another model than the library's (prompt length, width or
            frozen checkpoint), the name is taken or invalid, or the run is incomplete. The
            library is left unchanged.
        """
        model_dir = epath.Path(model_dir)
        name = name or model_dir.name
        if not _NAME.fullmatch(name):
            raise LibraryError(
                f"entry name {name!r} must be letters, digits and ._=+- (not starting with one "
                "of ._=+-); pass --name"
            )
        info = run_info(model_dir)
        step, why = select_step(model_dir, checkpoint, best_metric)
        emb_step = embedding_step(model_dir, embedding_at)
        prompt = _load(prompt_file(model_dir, step))
        embedding = _load(prompt_file(model_dir, emb_step))
        if prompt.shape != (info["prompt_length"], info["emb_dim"]):
            raise LibraryError(
                f"prompt of {model_dir} has shape {list(prompt.shape)} but model.json says "
                f"[{info['prompt_length']}, {info['emb_dim']}]"
            )
        metrics = read_metrics(model_dir)
        meta = {
            "name": name,
            **info,
            "step": step,
            "selected": why,
            "embedding_step": emb_step,
            "embedding_source": str(prompt_file(model_dir, emb_step)),
            "validation": metrics.get(step, {}),
            "validation_history": [{"step": s, **m} for s, m in sorted(metrics.items())],
            "run_dir": str(model_dir),
            "prompt_source": str(prompt_file(model_dir, step)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._check_compatible(info, model_dir)
            if (self.root / name).exists():
                raise LibraryError(
                    f"entry {name!r} already exists in {self.root}; remove it first or pass --name"
                )
            tmp = self.root / f".tmp-{name}-{os.getpid()}-{time.time_ns()}"
            tmp.mkdir(parents=True)
            try:
                _save(tmp / "prompt.npy", prompt)
                _save(tmp / "embedding.npy", embedding)
                (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
                if self.model() is None:
                    record = {k: info[k] for k in ("fingerprint", "frozen", "model")}
                    record.update(prompt_length=info["prompt_length"], emb_dim=info["emb_dim"])
                    _write_atomic(self.root / LIBRARY_META, json.dumps(record, indent=2))
                tmp.rename(self.root / name)
            except BaseException:
                if tmp.exists():
                    tmp.rmtree()
                raise
        return self.get(name)

    def remove(self, name: str) -> None:
        """Deletes an entry (renamed aside first, so a reader never sees half of it)."""
        entry = self.get(name)
        with self._lock():
            trash = self.root / f".removed-{name}-{time.time_ns()}"
            entry.path.rename(trash)
            trash.rmtree()

    def _check_compatible(self, info: dict[str, Any], model_dir: epath.Path) -> None:
        have = self.model()
        if have is None:
            return
        diffs = []
        for key in ("emb_dim", "prompt_length", "fingerprint"):
            if have[key] != info[key]:
                diffs.append(f"{key} {info[key]} (run) vs {have[key]} (library)")
        if diffs:
            raise LibraryError(
                f"{model_dir} is a prompt of another model than library {self.root}: "
                f"{'; '.join(diffs)} (library frozen model: {have['frozen']}, run's: "
                f"{info['frozen']}); use a library of that model"
            )

    @contextlib.contextmanager
    def _lock(self, timeout: float = 60.0):
        """An exclusive lock file around writes (local filesystems; O_EXCL is atomic there).

        Object stores have no atomic create, so writes there are unlocked: entries stay whole
        (each is renamed into place) but two first adds of different models could race.
        """
        path = self.root / LOCK_FILE
        if not _is_local(path):
            yield
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise LibraryError(
                        f"library {self.root} is locked by {path}; if no other add/remove is "
                        "running, delete that file"
                    ) from None
                time.sleep(0.05)
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            yield
        finally:
            os.unlink(os.fspath(path))


def _is_local(path: epath.Path) -> bool:
    return "://" not in os.fspath(path) or os.fspath(path).startswith("file://")


def _load(path: epath.Path) -> np.ndarray:
    if not path.exists():
        raise LibraryError(f"{path} does not exist")
    with path.open("rb") as f:
        return np.asarray(np.load(f), np.float32)


def _save(path: epath.Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, np.asarray(array, np.float32))


def _write_atomic(path: epath.Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.write_text(text)
    tmp.rename(path)
