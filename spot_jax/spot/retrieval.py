"""Retrieval: rank a library's source prompts for a target task by task-embedding similarity.

SPoT's targeted transfer (Vu et al. §3.3): the target's task embedding is an early checkpoint
of a short prompt-tuning run on the target; library keys are the sources' early checkpoints
(`embedding.npy`), and the values handed to transfer are their best prompts (`prompt.npy`).
"""

import dataclasses
import json

import numpy as np
from etils import epath

from spot_jax.spot import library as library_lib
from spot_jax.spot import runs as runs_lib
from spot_jax.spot import similarity

DEFAULT_METRIC = "avg_tokens"  # SPoT's main metric (its Fig. 4 and Table 3)


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One retrieved source: its entry name, similarity score and 1-based rank."""

    name: str
    score: float
    rank: int


def target_embedding(target: epath.PathLike, embedding_at: int | None = None) -> np.ndarray:
    """The target's task embedding [P, H].

    Args:
      target: a .npy / numpy-checkpoint prompt file, or a MODEL_DIR of a (short) target run.
      embedding_at: for a MODEL_DIR target, the step its embedding must be from (the library's
        embedding step; a run without a checkpoint there is refused). None: the run's default
        embedding checkpoint (`runs_lib.embedding_step`).
    """
    path = epath.Path(target)
    if not path.exists():
        raise library_lib.LibraryError(f"target {target} does not exist")
    if path.is_dir():
        step = runs_lib.embedding_step(path, embedding_at)
        if embedding_at is not None and step != embedding_at:
            raise library_lib.LibraryError(
                f"target run {path} has no prompt checkpoint at step {embedding_at}, the step of "
                f"the library's task embeddings (it has {runs_lib.numpy_steps(path)}); train the "
                f"target to step {embedding_at} with a checkpoint there, or pass that "
                "checkpoint's prompt file as the target"
            )
        path = runs_lib.prompt_file(path, step)
    with path.open("rb") as f:
        try:
            prompt = np.asarray(np.load(f), np.float32)
        except Exception as e:  # np.load raises several types on garbage
            raise library_lib.LibraryError(f"target {path} is not a numpy file ({e})") from e
    if prompt.ndim != 2:
        raise library_lib.LibraryError(f"target {path} is not a [P, H] prompt: {prompt.shape}")
    library_lib.check_prompt(prompt, None, f"target {path}")
    return prompt


def check_target(lib: library_lib.Library, target: epath.PathLike, embedding: np.ndarray) -> None:
    """Refuses a target of another model than the library's (width, or a run's fingerprint)."""
    model = lib.model()
    if model is None:
        raise library_lib.LibraryError(f"library {lib.root} is empty; add source prompts first")
    if embedding.shape[-1] != model["emb_dim"]:
        raise library_lib.LibraryError(
            f"target embedding width {embedding.shape[-1]} != library's {model['emb_dim']}: "
            "the target is of another model"
        )
    path = epath.Path(target)
    if path.is_dir() and (path / "model.json").exists() and (path / "config.gin").exists():
        info = runs_lib.run_info(path)
        if info["fingerprint"] != model["fingerprint"]:
            # Same checkpoint, other shape (or the reverse): say which, not just two names.
            shape = model.get("model") or {}
            diffs = [
                f"{k} {v} vs {shape[k]}"
                for k, v in info["model"].items()
                if k in shape and shape[k] != v
            ]
            raise library_lib.LibraryError(
                f"target run {path} is of another model than library {lib.root}: frozen "
                f"{info['frozen']} vs {model['frozen']}"
                + (f", {', '.join(diffs)} (target vs library)" if diffs else "")
                + f", fingerprint {info['fingerprint']} vs {model['fingerprint']}; their "
                "prompts are not comparable"
            )


def rank(
    lib: library_lib.Library,
    target: epath.PathLike | np.ndarray,
    metric: str = DEFAULT_METRIC,
    k: int | None = None,
    exclude: tuple[str, ...] = (),
    use: str = "embedding",
) -> list[Ranked]:
    """Library entries ranked by similarity of their task embeddings to the target's.

    Args:
      lib: the library.
      target: a target embedding [P, H], a prompt file, or a target MODEL_DIR (its prompt at
        the library's embedding step).
      metric: a `similarity.METRICS` name.
      k: keep the top k (None: all).
      exclude: entry names left out (e.g. the target task's own entry).
      use: compare the target with the entries' task embeddings ('embedding', SPoT's keys) or
        their source prompts ('prompt').

    Returns:
      The top-k, best first.
    """
    if use not in ("embedding", "prompt"):
        raise ValueError(f"use must be 'embedding' or 'prompt', not {use!r}")
    if isinstance(target, np.ndarray):
        embedding = np.asarray(target, np.float32)
        model = lib.model()
        if model is not None and embedding.shape[-1] != model["emb_dim"]:
            raise library_lib.LibraryError(
                f"target embedding width {embedding.shape[-1]} != library's {model['emb_dim']}"
            )
        library_lib.check_prompt(embedding, None, "the target embedding")
    else:
        embedding = target_embedding(target, lib.embedding_step())
        check_target(lib, target, embedding)
    keys = {
        e.name: e.embedding() if use == "embedding" else e.prompt()
        for e in lib.entries()
        if e.name not in exclude
    }
    if not keys:
        raise library_lib.LibraryError(f"library {lib.root} has no entries to rank")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = similarity.rank(embedding, keys, metric)[:k]
    return [Ranked(name, score, i + 1) for i, (name, score) in enumerate(ranked)]


def to_csv(ranked: list[Ranked]) -> str:
    """`name,score` lines, best first, with a header."""
    return "name,score\n" + "".join(f"{r.name},{r.score:.8g}\n" for r in ranked)


def to_json(ranked: list[Ranked]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in ranked], indent=2)
