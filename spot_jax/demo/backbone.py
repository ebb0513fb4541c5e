"""The demo's frozen model: a small T5 1.1 pretrained on the task world, cached by its config.

Pretraining mixes T5's span corruption on the world's unlabeled text (source tasks' inputs
only) with, optionally, supervised multi-task training on the source tasks, their inputs led by
the task word as T5 writes multi-task inputs. Targets are never seen. The result is saved in
spot_jax's frozen-checkpoint format under `<cache>/world/backbone-<hash of everything that
made it>/`, so a second run, or `spot-jax train` with INITIAL_CHECKPOINT_PATH set to it, skips
pretraining.

The noise mask is T5's `random_spans_noise_mask` (density 0.15, mean span 3), written here in
numpy because the demo pretrains from numpy arrays (no TF in the loop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import flax.linen as nn
import jax
import numpy as np
from etils import epath

from spot_jax.data import world as world_lib
from spot_jax.demo import runs
from spot_jax.models.config import T5Config
from spot_jax.models.prompted import PromptedT5
from spot_jax.train import frozen_checkpoint
from spot_jax.train import state as state_lib

CHECKPOINT_DIR = "checkpoint"
DONE_FILE = "pretraining.json"
# Bump when the pretraining recipe (data, objective, optimizer) changes: it is in the cache key.
PRETRAINING_VERSION = 3


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Everything that decides the backbone's weights (and so its cache key).

    Attributes:
        world_seed: the world whose text it reads.
        emb_dim, num_heads, head_dim, mlp_dim, num_layers: the T5 1.1 shape (layers per stack).
        steps, batch_size, learning_rate: pretraining (Adam, linear warmup then constant).
        source_fraction: share of each batch that is supervised source-task examples.
        raw_length: tokens of running text per span-corruption example.
        noise_density, mean_noise_span_length: T5's span corruption.
        input_length, target_length: padded lengths of pretraining examples.
        seed: init and batch order.
    """

    world_seed: int = world_lib.DEFAULT_SEED
    emb_dim: int = 64
    num_heads: int = 4
    head_dim: int = 16
    mlp_dim: int = 128
    num_layers: int = 2
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    source_fraction: float = 0.5
    raw_length: int = 24
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    input_length: int = 28
    target_length: int = 12
    seed: int = 0

    def t5(self, vocab_size: int) -> T5Config:
        """The T5 1.1 config: float32 (fastest on CPU), no dropout, vocab padded to 128s."""
        return T5Config(
            vocab_size=-(-vocab_size // 128) * 128,
            emb_dim=self.emb_dim,
            num_heads=self.num_heads,
            num_encoder_layers=self.num_layers,
            num_decoder_layers=self.num_layers,
            head_dim=self.head_dim,
            mlp_dim=self.mlp_dim,
            relpos_buckets=16,
            relpos_max_distance=32,
            dtype="float32",
        )

    def key(self) -> str:
        vocab = world_lib.vocabulary_name(self.world_seed)
        blob = json.dumps(
            {**dataclasses.asdict(self), "vocabulary": vocab, "recipe": PRETRAINING_VERSION}
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass
class Backbone:
    """A loaded backbone: its T5 config, flat frozen params, tokenizer and provenance."""

    config: T5Config
    params: dict[str, jax.Array]
    tokenizer: object  # sentencepiece.SentencePieceProcessor
    path: epath.Path
    pretrained_now: bool
    record: dict

    @property
    def seqio_vocab_size(self) -> int:
        """Pieces + sentinels: where seqio puts <extra_id_0> (id vocab_size - 1)."""
        return self.tokenizer.get_piece_size() + world_lib.EXTRA_IDS


def random_spans_noise_mask(
    length: int, density: float, mean_span: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask [length] bool: ~density*length noise tokens in spans of mean length
    `mean_span`, alternating with non-noise spans, starting with non-noise."""
    num_noise = int(np.clip(round(length * density), 1, length - 1))
    num_spans = max(1, int(round(num_noise / mean_span)))
    num_nonnoise = length - num_noise

    def segment(items: int) -> np.ndarray:  # a random split of `items` into num_spans parts > 0
        cuts = np.sort(rng.choice(np.arange(1, items), num_spans - 1, replace=False))
        return np.diff(np.concatenate([[0], cuts, [items]]))

    noise, nonnoise = segment(num_noise), segment(num_nonnoise)
    mask = np.concatenate(
        [np.r_[np.zeros(a, bool), np.ones(b, bool)] for a, b in zip(nonnoise, noise, strict=True)]
    )
    return mask


def span_corruption(tokens: np.ndarray, mask: np.ndarray, vocab_size: int):
    """(inputs, targets) id lists: each noise span -> one sentinel in the inputs; the targets
    list each sentinel then its span's tokens (T5's definition; EOS added by the caller)."""
    inputs, targets, sentinel = [], [], 0
    for i, tok in enumerate(tokens):
        if mask[i]:
            if i == 0 or not mask[i - 1]:
                s = world_lib.sentinel_id(vocab_size, sentinel)
                inputs.append(s)
                targets.append(s)
                sentinel += 1
            targets.append(int(tok))
        else:
            inputs.append(int(tok))
    return inputs, targets


def pretraining_batches(cfg: BackboneConfig, world, sp, vocab_size: int) -> dict[str, np.ndarray]:
    """All pretraining batches [steps, B, L]: span corruption and source tasks, interleaved."""
    rng = np.random.default_rng(cfg.seed)
    stream = np.concatenate([np.array(ids) for ids in sp.encode(world.unlabeled_text())])
    n_span = int(round(cfg.batch_size * (1 - cfg.source_fraction)))
    total = cfg.steps * cfg.batch_size
    inputs = np.zeros((total, cfg.input_length), np.int32)
    targets = np.zeros((total, cfg.target_length), np.int32)
    supervised = [
        (world.with_task_word(n, x), y)
        for n in world.names("source")
        for x, y in world.pretraining_examples(n)
    ]
    is_span = np.zeros(total, bool)
    is_span.reshape(cfg.steps, cfg.batch_size)[:, :n_span] = True
    starts = rng.integers(0, len(stream) - cfg.raw_length, size=int(is_span.sum()))
    for row, start in zip(np.flatnonzero(is_span), starts, strict=True):
        tokens = stream[start : start + cfg.raw_length]
        mask = random_spans_noise_mask(
            cfg.raw_length, cfg.noise_density, cfg.mean_noise_span_length, rng
        )
        x, y = span_corruption(tokens, mask, vocab_size)
        inputs[row, : len(x) + 1] = [*x, runs.EOS]
        targets[row, : len(y) + 1] = [*y, runs.EOS]
    rows = np.flatnonzero(~is_span)
    if len(rows):
        picks = rng.integers(0, len(supervised), size=len(rows))
        inputs[rows] = runs.encode([supervised[i][0] for i in picks], sp, cfg.input_length)
        targets[rows] = runs.encode([supervised[i][1] for i in picks], sp, cfg.target_length)
    shape = (cfg.steps, cfg.batch_size)
    return runs.features(inputs.reshape(*shape, -1), targets.reshape(*shape, -1))


def pretrain(cfg: BackboneConfig, world, sp, progress: bool = True) -> tuple[T5Config, dict, dict]:
    """Pretrains the backbone from a seeded init. Returns (config, flat params, record)."""
    import optax
    from tqdm import tqdm

    vocab_size = sp.get_piece_size() + world_lib.EXTRA_IDS
    t5 = cfg.t5(vocab_size)
    model = PromptedT5(t5, prompt_length=0)
    batches = pretraining_batches(cfg, world, sp, vocab_size)
    first = jax.tree.map(lambda x: x[0], batches)
    params = state_lib.flatten_params(nn.unbox(model.init(jax.random.PRNGKey(cfg.seed), first)))
    warmup = max(1, cfg.steps // 10)
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, warmup),
            optax.constant_schedule(cfg.learning_rate),
        ],
        [warmup],
    )
    tuner = runs.Tuner(model, {}, optax.adam(schedule), keep_history=False)
    chunk = 100 if cfg.steps % 100 == 0 else cfg.steps
    t0 = time.perf_counter()
    with tqdm(total=cfg.steps, desc="pretrain backbone", unit="step", disable=not progress) as bar:
        tuner_batches = jax.tree.map(lambda x: x[None], batches)
        # A progress signal only (it is also trained on at the last step), never selected on.
        probe = jax.tree.map(lambda x: x[-1], batches)
        curves = tuner.run(
            jax.tree.map(lambda x: x[None], params), tuner_batches, probe, chunk,
            progress=bar,
        )  # fmt: skip
    record = {
        "config": dataclasses.asdict(cfg),
        "t5": t5.shape_dict(),
        "seconds": round(time.perf_counter() - t0, 1),
        "token_loss": [round(float(x), 4) for x in curves.loss[0]],
        "exact_match": [round(float(x), 2) for x in curves.accuracy[0]],
        "steps": [int(s) for s in curves.steps],
    }
    return t5, {k: v[0] for k, v in curves.final.items()}, record


def load_or_pretrain_backbone(
    cfg: BackboneConfig, cache_dir=None, progress: bool = True
) -> Backbone:
    """The cached backbone of `cfg`, pretraining (and caching) it when it is not there yet."""
    import sentencepiece

    world = world_lib.build_world(cfg.world_seed)
    vocab = world_lib.vocabulary_file(world, cache_dir)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(vocab))
    root = epath.Path(world_lib.cache_root(cache_dir)) / f"backbone-{cfg.key()}"
    done = root / DONE_FILE
    if done.exists():
        record = json.loads(done.read_text())
        t5 = cfg.t5(sp.get_piece_size() + world_lib.EXTRA_IDS)
        model = PromptedT5(t5, prompt_length=0)
        abstract = state_lib.flatten_params(nn.unbox(model.abstract_params(1, 8, 4)))
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in abstract.items()
        }
        params = frozen_checkpoint.restore_frozen(root / CHECKPOINT_DIR, abstract, t5)
        return Backbone(t5, params, sp, root / CHECKPOINT_DIR, False, record)
    t5, params, record = pretrain(cfg, world, sp, progress)
    tmp = epath.Path(f"{root}.tmp-{time.time_ns()}")
    frozen_checkpoint.save_frozen(tmp / CHECKPOINT_DIR, params, t5)
    (tmp / DONE_FILE).write_text(json.dumps(record, indent=1))
    if root.exists():  # another process cached it meanwhile: keep theirs
        tmp.rmtree()
    else:
        tmp.rename(root)
    params = {k: jax.numpy.asarray(v) for k, v in params.items()}
    return Backbone(t5, params, sp, root / CHECKPOINT_DIR, True, record)
