"""The soft prompt: a `[P, H]` parameter prefixed to the encoder's token embeddings.

The parameter lives at `encoder/prompt/prompt/prompt` with axes ('prompt', 'prompt_embed'),
exactly where prompt-tuning keeps it, so prompts move between the two projects as .npy files.
Optionally each encoder layer has its own prompt too (`layer_prompts`), or the prompt is shared
by several tasks and combined with each task's own (`multi_task_prompt`).
Initialisers share the signature `init(rng, shape) -> [P, H]`; those that read the embedding
table take it as an argument (the caller restores it from the frozen checkpoint).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from spot_jax import axes
from spot_jax.models import multi_task_prompt

Array = jax.Array
Initializer = Callable[[jax.Array, tuple[int, ...]], Array]


class Prompt(nn.Module):
    """Holds the prompt parameter `[P, H]` (float32 master copy).

    The initialiser field is `initializer`, not `init`, which would shadow `nn.Module.init`.
    """

    length: int
    initializer: Initializer
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, embed_dim: int) -> Array:
        return self.param(
            "prompt",
            nn.with_logical_partitioning(self.initializer, (axes.PROMPT, axes.PROMPT_EMBED)),
            (self.length, embed_dim),
            self.param_dtype,
        )


# Where the prompt goes in the encoder input, as prompt-tuning's combination functions
# (train/prompts.py) put it: 'prefix' (prefix_prompt, the default and SPoT's), after the first
# token ('prefix_after_bos', prefix_prompt_after_bos), or after the text: before its EOS
# ('suffix', suffix_prompt's default) or after it ('suffix_after_eos', before_eos=False).
PROMPT_POSITIONS = ("prefix", "prefix_after_bos", "suffix", "suffix_after_eos")


def check_position(position: str) -> str:
    if position not in PROMPT_POSITIONS:
        raise ValueError(f"prompt_position {position!r}: expected one of {PROMPT_POSITIONS}")
    return position


def prompt_order(tokens: Array, prompt_length: int, position: str) -> Array:
    """[B, P + T] indices into the prefix layout [prompt (P), tokens (T)] that put each row's
    prompt at `position`: rows of n tokens (pads last) get it at k = 0, min(1, n), max(n - 1,
    0) or n. The valid positions stay the first P + n in every layout, so the prefix layout's
    mask (`with_prompt_mask`) is the mask of all of them, as in prompt-tuning."""
    n = jnp.sum(tokens > 0, axis=1, keepdims=True)  # [B, 1]
    k = {
        "prefix": jnp.zeros_like(n),
        "prefix_after_bos": jnp.minimum(n, 1),
        "suffix": jnp.maximum(n - 1, 0),
        "suffix_after_eos": n,
    }[check_position(position)]
    j = jnp.arange(prompt_length + tokens.shape[1])[None]  # [1, P + T]
    # Before the prompt: token j; the prompt: its row j - k; after it: token j - P (= j here).
    return jnp.where(j < k, prompt_length + j, jnp.where(j < k + prompt_length, j - k, j))


class InputPrompt(nn.Module):
    """Puts the prompt into the embedded inputs: [B, T, H] -> [B, P + T, H], at `position`."""

    length: int
    initializer: Initializer
    param_dtype: Any = jnp.float32
    position: str = "prefix"
    multi_task: Any = None  # multi_task_prompt.MultiTask: a shared + per-task prompt

    @nn.compact
    def __call__(
        self, x_embed: Array, tokens: Array | None = None, copies: int = 1, task_ids=None
    ) -> Array:
        """x_embed: [B, T, H], tokens: [B, T] (where the text ends; for a `position` other than
        'prefix') -> [B, copies * P + T, H]. `task_ids` [B]: each row's task (`multi_task`).

        `copies` > 1 gives each segment of a packed row its own prompt slot (`segments`),
        leading the row.
        """
        b, h = x_embed.shape[0], x_embed.shape[-1]
        if self.multi_task is not None:
            batch = multi_task_prompt.MultiTaskPrompt(
                self.length,
                self.multi_task,
                self.initializer,
                random_uniform(),
                self.param_dtype,
                name="prompt",
            )(task_ids, h)
        else:
            prompt = Prompt(self.length, self.initializer, self.param_dtype, name="prompt")(h)
            batch = jnp.broadcast_to(prompt[None], (b,) + prompt.shape)
        if copies != 1:
            batch = jnp.tile(batch, (1, copies, 1))
        out = jnp.concatenate([batch.astype(x_embed.dtype), x_embed], axis=1)
        if check_position(self.position) == "prefix":
            return out
        if copies != 1 or tokens is None:
            raise ValueError(
                f"prompt_position {self.position!r} needs the input tokens and unpacked rows "
                "(packing puts each example's prompt copy first in its row)"
            )
        order = prompt_order(tokens, self.length, self.position)
        return jnp.take_along_axis(out, order[..., None], axis=1)


def with_prompt_mask(tokens: Array, prompt_length: int) -> Array:
    """Marks prompt positions as real tokens: [B, T] -> [B, P + T] (ones, then tokens)."""
    ones = jnp.ones((tokens.shape[0], prompt_length), tokens.dtype)
    return jnp.concatenate([ones, tokens], axis=1)


# ---------------------------------------------------------------------------------------------
# Initialisers.


def random_uniform(scale: float = 0.5, minval: float | None = None) -> Initializer:
    """Uniform init. Default U[0, 0.5), as prompt-tuning (flax's `uniform(scale)`) uses.

    Args:
      scale: width of the range.
      minval: lower end; default 0 (prompt-tuning); -scale/2 gives a symmetric range.
    """
    low = 0.0 if minval is None else minval

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, low, low + scale)

    return init


def sampled_vocab(embeddings=None, population_size: int = 5000) -> Initializer:
    """Rows of the embedding table sampled from the first `population_size` ids.

    SPoT's source-prompt init: "sampled vocabulary (the 5,000 most common tokens)". Sampling is
    without replacement unless the prompt is longer than the population.

    Args:
      embeddings: [V, H] table; None means the frozen model's own `token_embedder/embedding`,
        which the trainer passes at call time (see `needs_embeddings`).
      population_size: sample among ids [0, population_size).
    """

    def init(rng, shape, dtype=jnp.float32, *, embeddings=embeddings):
        embeddings = _table(embeddings, shape)
        population = min(population_size, embeddings.shape[0])
        replace = shape[0] > population
        if replace:
            logging.warning(
                "prompt length %d > population %d: sampling with replacement", shape[0], population
            )
        idx = jax.random.choice(rng, population, (shape[0],), replace=replace)
        return jnp.asarray(embeddings[np.asarray(idx)], dtype)

    init.needs_embeddings = embeddings is None
    return init


def class_labels(
    label_ids: Sequence[Sequence[int]], embeddings=None, population_size: int = 5000
) -> Initializer:
    """Each of the first rows is the mean embedding of one label's subword ids.

    The remaining rows are sampled vocab (prompt-tuning's `from_class_labels.gin`).

    Args:
      label_ids: the tokenised class labels, e.g. vocab.encode('positive').
      embeddings: [V, H] token embedding table; None means the frozen model's own.
      population_size: population of the sampled-vocab rows.
    """

    def init(rng, shape, dtype=jnp.float32, *, embeddings=embeddings):
        embeddings = _table(embeddings, shape)
        prompt = np.array(sampled_vocab(embeddings, population_size)(rng, shape))
        if len(label_ids) > shape[0]:
            logging.warning("%d labels but only %d prompt positions", len(label_ids), shape[0])
        for i, ids in enumerate(label_ids[: shape[0]]):
            if len(ids) == 0:
                raise ValueError(f"class label {i} tokenises to no ids")
            prompt[i] = _rows(embeddings, ids).mean(axis=0)
        return jnp.asarray(prompt, dtype)

    init.needs_embeddings = embeddings is None
    return init


def from_text(
    token_ids: Sequence[int],
    embeddings=None,
    population_size: int = 5000,
    fill: str = "sampled_vocab",
) -> Initializer:
    """The embeddings of a tokenised text, row by row.

    Args:
      token_ids: the text's ids (`text_ids`).
      embeddings: [V, H] token embedding table; None means the frozen model's own.
      population_size: population of sampled-vocab rows.
      fill: what follows a text shorter than P: 'sampled_vocab' rows, or 'repeat' the text
        until P rows (PEFT's `PromptTuningInit.TEXT`). A longer text is truncated to P.
    """
    if not len(token_ids):
        raise ValueError("the prompt init text tokenises to no ids")
    if fill not in ("sampled_vocab", "repeat"):
        raise ValueError(f"fill must be 'sampled_vocab' or 'repeat', not {fill!r}")

    def init(rng, shape, dtype=jnp.float32, *, embeddings=embeddings):
        embeddings = _table(embeddings, shape)
        ids = np.asarray(token_ids, np.int64)
        if fill == "repeat":
            ids = np.resize(ids, shape[0])  # tiles the text, then truncates
            return jnp.asarray(_rows(embeddings, ids), dtype)
        prompt = np.array(sampled_vocab(embeddings, population_size)(rng, shape))
        ids = ids[: shape[0]]
        prompt[: len(ids)] = _rows(embeddings, ids)
        return jnp.asarray(prompt, dtype)

    init.needs_embeddings = embeddings is None
    return init


def from_array(prompt: np.ndarray, source: str = "array") -> Initializer:
    """A fixed prompt (e.g. a SPoT source prompt); its shape must equal the model's [P, H]."""
    prompt = np.asarray(prompt, np.float32)

    def init(rng, shape, dtype=jnp.float32):
        del rng
        if tuple(prompt.shape) != tuple(shape):
            raise ValueError(
                f"prompt from {source} has shape {list(prompt.shape)} but the model needs "
                f"{list(shape)} (PROMPT_LENGTH x emb_dim); use a prompt trained for this model "
                "size and prompt length"
            )
        if not np.all(np.isfinite(prompt)):
            raise ValueError(f"prompt from {source} contains NaN or inf")
        return jnp.asarray(prompt, dtype)

    return init


def check_rms(rms: float | str) -> float | str:
    """`rms` if it is a target `rescaled` accepts (a positive number or 'embeddings')."""
    ok = rms == "embeddings" if isinstance(rms, str) else bool(np.isfinite(rms) and rms > 0)
    if not ok:
        raise ValueError(f"rms must be a positive number or 'embeddings', got {rms!r}")
    return rms


def rescaled(
    initializer: Initializer, rms: float | str = "embeddings", population_size: int = 5000
) -> Initializer:
    """`initializer`'s prompt scaled to root-mean-square `rms`; its direction is kept.

    A transferred prompt can be many times larger than a fresh one (a long source or mixture
    run at prompt tuning's constant rate 0.3 grows it), and a target run from a large prompt can
    stall: in the demo's task world a mixture prompt of RMS 5.6 left two binary targets at
    chance for 150 steps, while the same prompt scaled to RMS 1.0 trained them to 100%
    (docs/demo/report.md). Not part of SPoT's recipe: an opt-in (`RESCALE_PROMPT_RMS` in
    `gin/spot/target_from_library.gin`).

    Args:
      initializer: the prompt to rescale (e.g. `from_array` of a library prompt).
      rms: the target RMS, or 'embeddings': the RMS of the first `population_size` rows of the
        frozen model's embedding table, i.e. the scale a sampled-vocab init has.
      population_size: rows of the table 'embeddings' measures (as `sampled_vocab`).
    """
    check_rms(rms)
    inner_needs = getattr(initializer, "needs_embeddings", False)

    def init(rng, shape, dtype=jnp.float32, *, embeddings=None):
        inner = {"embeddings": embeddings} if inner_needs else {}
        prompt = np.asarray(initializer(rng, shape, jnp.float32, **inner), np.float32)
        target = rms
        if rms == "embeddings":
            table = _table(embeddings, shape)[:population_size]
            target = float(np.sqrt(np.mean(np.square(table))))
        current = float(np.sqrt(np.mean(np.square(prompt))))
        if not current > 0:
            raise ValueError("cannot rescale an all-zero (or non-finite) prompt")
        return jnp.asarray(prompt * (target / current), dtype)

    init.needs_embeddings = inner_needs or rms == "embeddings"
    return init


def from_file(path: str, rescale_rms: float | str | None = None) -> Initializer:
    """Loads a prompt saved with np.save (e.g. `.../encoder.prompt.prompt.prompt` or `.npy`).

    `rescale_rms` (default None: as saved) scales it to that RMS; see `rescaled`.
    """
    from etils import epath  # local: keeps module import light

    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"PROMPT_FILE {path} does not exist")
    with p.open("rb") as f:
        try:
            prompt = np.load(f)
        except Exception as e:  # np.load raises several types on garbage
            raise ValueError(f"PROMPT_FILE {path} is not a numpy file ({e})") from e
    init = from_array(prompt, source=str(path))
    return init if rescale_rms is None else rescaled(init, rescale_rms)


def _table(embeddings, shape) -> np.ndarray:
    if embeddings is None:
        raise ValueError("this prompt initialiser needs the model's embedding table")
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape[-1] != shape[-1]:
        raise ValueError(
            f"embedding width {embeddings.shape[-1]} does not match the prompt width {shape[-1]}"
        )
    return embeddings


def _rows(embeddings: np.ndarray, ids) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(embeddings)):
        raise ValueError(
            f"token id {int(ids.max())} is outside the model's vocabulary of {len(embeddings)}; "
            "VOCABULARY_PATH must be the frozen model's vocabulary"
        )
    return embeddings[ids]


def tokenize(
    texts: Sequence[str], vocabulary_path: str | None = None, add_eos: bool = False
) -> list[list[int]]:
    """Tokenises texts (class labels, an init text) with a SentencePiece model, no TensorFlow.

    `vocabulary_path` None: $SPOT_JAX_VOCAB, else T5's public model (as the tasks' vocabulary).
    `add_eos` appends T5's EOS (id 1), as a Hugging Face T5 tokenizer does.
    """
    import sentencepiece
    from etils import epath

    from spot_jax.data import config as data_config

    vocabulary_path = data_config.vocabulary_path(vocabulary_path)
    path = epath.Path(vocabulary_path)
    if not path.exists():
        raise FileNotFoundError(
            f"VOCABULARY_PATH {vocabulary_path} does not exist (set it, or "
            f"${data_config.VOCAB_ENV_VAR}, to a local copy of the SentencePiece model)"
        )
    sp = sentencepiece.SentencePieceProcessor(model_proto=path.read_bytes())
    return [list(sp.encode(t)) + ([sp.eos_id()] if add_eos else []) for t in texts]


def text_ids(text: str, vocabulary_path: str | None = None, add_eos: bool = False) -> list[int]:
    """One text's ids (`tokenize` of one text), for `from_text`."""
    return tokenize([text], vocabulary_path, add_eos)[0]
