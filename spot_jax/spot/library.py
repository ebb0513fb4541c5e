"""The prompt library: trained prompts of one frozen model, with the metadata SPoT needs.

Layout of a library directory (a local path or any `etils.epath` URL):

    <library>/library.json          the model every entry belongs to (shape, P, fingerprint) and
                                    the step of every task embedding
    <library>/<name>/prompt.npy     float32 [P, H]: the source prompt (SPoT's "value")
    <library>/<name>/embedding.npy  float32 [P, H]: an early checkpoint (SPoT's "key")
    <library>/<name>/meta.json      task, model, fingerprint, steps, validation scores, the
                                    metric and direction that chose the step ('selection'), ...

There is no index of entries: listing scans the directory, so nothing can fall out of step
with the entries. An entry is written into a hidden temporary folder and renamed into place,
so readers never see half an entry; `library.json` is written once, under a lock file, by the
first add, and every later add is checked against it.
"""

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath

from spot_jax.paths import absolute_path
from spot_jax.spot import runs as runs_lib
from spot_jax.spot.runs import PROMPT_FILE, LibraryError  # noqa: F401  (the library's API)

LIBRARY_META = "library.json"
LOCK_FILE = ".lock"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


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
        return _load(self.path / "prompt.npy", self._shape())

    def embedding(self) -> np.ndarray:
        """The task embedding (early-checkpoint prompt), float32 [P, H]."""
        return _load(self.path / "embedding.npy", self._shape())

    def _shape(self) -> tuple[int, int] | None:
        if "prompt_length" not in self.meta or "emb_dim" not in self.meta:
            return None  # a hand-made entry: nothing to check the shape against
        return int(self.meta["prompt_length"]), int(self.meta["emb_dim"])


class Library:
    """A directory of prompt entries of one frozen model (see the module docstring).

    Every entry's task embedding is taken at one step (SPoT: 10K steps for every task, source
    and target alike), recorded in `library.json` by the first add and required of later adds
    and of target runs.

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

    def embedding_step(self) -> int | None:
        """The step of every entry's task embedding; None for an empty library (or one written
        before the step was recorded whose entries disagree)."""
        model = self.model()
        if model is not None and model.get("embedding_step") is not None:
            return int(model["embedding_step"])
        steps = {e.meta.get("embedding_step") for e in self.entries()}
        return int(steps.pop()) if len(steps) == 1 and None not in steps else None

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
        best_metric: str | None = None,
        task_index: int | None = None,
    ) -> Entry:
        """Adds a run's prompt (and its early checkpoint as task embedding) as a new entry; a
        multi-task run's `task_index` i: its shared prompt combined with task i's (the prompt
        the standard model reads for task i).

        Args:
          model_dir: the training run's MODEL_DIR.
          name: entry name; default the run directory's name.
          checkpoint: 'best', 'latest' or a step (see `runs_lib.select_checkpoint`).
          embedding_at: step of the task embedding (closest checkpoint); default the library's
            step, and for the first entry SPoT's 10K (see `runs_lib.embedding_step`).
          best_metric: eval metric that picks the 'best' checkpoint (optionally ':max' or
            ':min'); None: the task's metric, higher is better (the first its metric fns
            report; a mixture: the mean of each task's), or eval/loss, lower is better, when
            the run recorded none (`runs_lib.select_checkpoint`). The entry's 'selection'
            records the metric, its direction and why it was chosen.

        Returns:
          The new entry.

        Raises:
          LibraryError: the run is of another model than the library's (prompt length, width or
            frozen checkpoint), has no checkpoint at the library's embedding step, holds a
            non-finite prompt, never recorded `best_metric`, the name is taken or invalid, or
            the run is incomplete, trained per-layer prompts or another attention rule, or
            `task_index` does not fit the run. The library is left unchanged.
        """
        model_dir = absolute_path(model_dir)
        info = runs_lib.run_info(model_dir)
        multi_task = info["multi_task_prompt"] != "none"
        if multi_task != (task_index is not None):
            raise LibraryError(
                f"{model_dir} trained {info['num_tasks']} task prompts: pass --task-index I "
                "(0-based) to add task I's prompt"
                if multi_task
                else f"--task-index is for multi-task runs; {model_dir} trained one prompt"
            )
        for key, default in (("per_layer_prompt", "none"), ("prompt_attention", None)):
            if info[key] != default:
                raise LibraryError(
                    f"{model_dir} trained with {key} {info[key]!r}: a library entry is one input "
                    "prompt in the standard prompted model (SPoT's transfer and task embedding), "
                    f"which is not what this run learned; add runs of {key}={default!r}"
                )
        selection = runs_lib.select_checkpoint(model_dir, checkpoint, best_metric)
        step = selection.step
        if embedding_at is None:
            embedding_at = self.embedding_step()
        emb_step = runs_lib.embedding_step(model_dir, embedding_at)
        metrics = runs_lib.read_metrics(model_dir)
        meta = {
            **info,
            "step": step,
            "selected": selection.reason,
            "selection": selection.record(),
            "embedding_step": emb_step,
            "embedding_source": str(runs_lib.prompt_file(model_dir, emb_step)),
            "validation": metrics.get(step, {}),
            "validation_history": [{"step": s, **m} for s, m in sorted(metrics.items())],
            "run_dir": str(model_dir),
            "prompt_source": str(runs_lib.prompt_file(model_dir, step)),
        }
        if multi_task:
            (prompt, source), (embedding, emb_source) = (
                runs_lib.task_prompt(model_dir, s, task_index, info) for s in (step, emb_step)
            )
            task = runs_lib.indexed_task(info["task"], task_index)
            meta.update(
                task=task, task_index=task_index, prompt_source=source, embedding_source=emb_source
            )
        else:
            prompt = _load(runs_lib.prompt_file(model_dir, step))
            embedding = _load(runs_lib.prompt_file(model_dir, emb_step))
        return self.write(name or model_dir.name, prompt, embedding, meta, str(model_dir))

    def add_file(
        self,
        prompt: epath.PathLike,
        *,
        task: str,
        embedding: epath.PathLike,
        embedding_step: int,
        name: str | None = None,
        like: epath.PathLike | None = None,
        step: int | None = None,
    ) -> Entry:
        """Adds a bare prompt file (a .npy or prompt-tuning numpy checkpoint, e.g. a released
        pretrained prompt or a T5X run's), with its task embedding taken at `embedding_step`.

        Args:
          prompt: the [P, H] prompt file.
          task: the task it was trained on (SeqIO name).
          embedding: the [P, H] task-embedding file (the prompt at `embedding_step`).
          embedding_step: the step the embedding was taken at; must be the library's.
          name: entry name; default the prompt file's parent folder name.
          like: for a new library, a spot_jax run dir (or a library) of the same frozen model.
          step: the prompt's training step, if known.
        """
        prompt, embedding = absolute_path(prompt), absolute_path(embedding)
        if like is not None:
            like = absolute_path(like)
            record = (
                json.loads((like / LIBRARY_META).read_text())
                if (like / LIBRARY_META).exists()
                else runs_lib.run_info(like)
            )
        elif (record := self.model()) is None:
            raise LibraryError(
                f"library {self.root} is new: pass --like RUN_DIR (a run of the prompt's frozen "
                "model) so the library knows which model its prompts belong to"
            )
        info = {k: record.get(k) for k in ("fingerprint", "frozen", "model")}
        info.update(prompt_length=int(record["prompt_length"]), emb_dim=int(record["emb_dim"]))
        meta = {
            **info,
            "task": task,
            "step": step,
            "selected": "given file",
            "embedding_step": int(embedding_step),
            "embedding_source": str(embedding),
            "validation": {},
            "validation_history": [],
            "run_dir": str(like) if like is not None and (like / "model.json").exists() else None,
            "prompt_source": str(prompt),
        }
        arrays = [_load(p) for p in (prompt, embedding)]
        return self.write(name or prompt.parent.name, *arrays, meta, str(prompt))

    def write(
        self, name: str, prompt: np.ndarray, embedding: np.ndarray, meta: dict, source: str
    ) -> Entry:
        """Writes one entry: checks it against the library (model, shape, embedding step,
        finite values), then a hidden temporary folder renamed into place, under the lock.
        The first entry writes `library.json` from its meta."""
        if not _NAME.fullmatch(name):
            raise LibraryError(
                f"entry name {name!r} must be letters, digits and ._=+- (not starting with one "
                "of ._=+-); pass --name"
            )
        shape = (meta["prompt_length"], meta["emb_dim"])
        for what, array in (("prompt", prompt), ("task embedding", embedding)):
            check_prompt(array, shape, f"the {what} of {source}")
        meta = {"name": name, **meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._check_compatible(meta, source)
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
                    keys = ("fingerprint", "frozen", "model", "prompt_length", "emb_dim")
                    record = {k: meta.get(k) for k in keys}
                    record["embedding_step"] = meta["embedding_step"]
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

    def _check_compatible(self, meta: dict[str, Any], source: str) -> None:
        have = self.model()
        if have is None:
            return
        diffs = []
        for key in ("emb_dim", "prompt_length", "fingerprint"):
            if have[key] != meta[key]:
                diffs.append(f"{key} {meta[key]} (new) vs {have[key]} (library)")
        if diffs:
            raise LibraryError(
                f"{source} is a prompt of another model than library {self.root}: "
                f"{'; '.join(diffs)} (library frozen model: {have['frozen']}, new prompt's: "
                f"{meta['frozen']}); use a library of that model"
            )
        want = self.embedding_step()
        if want is not None and meta["embedding_step"] != want:
            raise LibraryError(
                f"the task embedding of {source} is from step {meta['embedding_step']}, but every "
                f"entry of {self.root} has its embedding from step {want}: SPoT compares task "
                f"embeddings taken at one step. Keep a checkpoint at step {want} in that run "
                "(CHECKPOINT_PERIOD), or build another library"
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


def _load(path: epath.Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A float32 prompt from a .npy file; a missing, unreadable, misshapen or non-finite file is
    a LibraryError that names it."""
    if not path.exists():
        raise LibraryError(f"{path} does not exist")
    with path.open("rb") as f:
        try:
            array = np.asarray(np.load(f), np.float32)
        except Exception as e:  # np.load raises several types on garbage
            raise LibraryError(f"{path} is not a numpy prompt file ({e})") from e
    check_prompt(array, shape, str(path))
    return array


def check_prompt(array: np.ndarray, shape: tuple[int, int] | None, what: str) -> None:
    """Refuses a prompt of another shape than [P, H] = `shape` (None: any) or with NaN/inf."""
    if shape is not None and array.shape != tuple(shape):
        raise LibraryError(f"{what} has shape {list(array.shape)}, not [P, H] = {list(shape)}")
    if not np.all(np.isfinite(array)):
        raise LibraryError(
            f"{what} holds {int(np.sum(~np.isfinite(array)))} non-finite values (NaN or inf); "
            "a diverged run's prompt cannot be compared or transferred"
        )


def _save(path: epath.Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, np.asarray(array, np.float32))


def _write_atomic(path: epath.Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.write_text(text)
    tmp.rename(path)
