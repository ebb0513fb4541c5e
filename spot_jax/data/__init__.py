"""The data seam: host-local numpy batches for the training core.

The core calls `make_train_iterator` / `make_eval_iterator` and receives dicts of int32
numpy arrays named as seqio's EncDecFeatureConverter names them:

    encoder_input_tokens   [b, T]
    decoder_input_tokens   [b, L]   targets shifted right, BOS 0 first
    decoder_target_tokens  [b, L]   EOS (1)-terminated, 0-padded
    decoder_loss_weights   [b, L]   1 where the target is not padding
    (+ encoder/decoder_segment_ids and _positions when packing)

where b = global batch // num_shards. TensorFlow and SeqIO are imported only when a
non-synthetic pipeline is built, so importing this package (and the synthetic source)
works on machines without them (the TF fence of DESIGN.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from spot_jax.data.config import SYNTHETIC, DatasetConfig

__all__ = [
    "SYNTHETIC",
    "DatasetConfig",
    "eval_task_configs",
    "eval_task_names",
    "make_detokenizer",
    "make_eval_iterator",
    "make_task_scorer",
    "make_train_iterator",
    "real_rows",
]


def _check_shard(cfg: DatasetConfig, shard_index: int, num_shards: int) -> int:
    """Validates the host slice and returns the per-shard batch size b."""
    b = cfg.per_shard_batch_size(num_shards)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must lie in [0, {num_shards}), got {shard_index}.")
    return b


def make_train_iterator(
    cfg: DatasetConfig,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
    start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite, deterministic stream of this host's training batches.

    Given `cfg.seed`, the stream is a fixed sequence, and `start_step=k` yields exactly the
    batches an uninterrupted iterator yields from its k-th batch on; a job restarted from a
    checkpoint at step k therefore sees the same examples it would have seen.

    Args:
        cfg: what to read; `cfg.batch_size` is the global batch B.
        shard_index: this host's data shard, in [0, num_shards).
        num_shards: number of data shards (hosts along the mesh's data axis).
        start_step: number of global batches already consumed.

    Returns:
        An iterator of dicts of int32 arrays `[b, T]` / `[b, L]` with b = B // num_shards.
    """
    _check_shard(cfg, shard_index, num_shards)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    if cfg.is_synthetic:
        from spot_jax.data import synthetic

        _refuse_packing(cfg)
        return synthetic.train_batches(
            split=cfg.split,
            seed=cfg.seed,
            task_feature_lengths=cfg.task_feature_lengths,
            vocab_size=cfg.vocab_size,
            batch_size=cfg.batch_size,
            shard_index=shard_index,
            num_shards=num_shards,
            start_step=start_step,
        )
    # The only place the core reaches TensorFlow, and only when a real task is asked for.
    from spot_jax.data import pipeline

    return pipeline.train_batches(
        cfg, shard_index=shard_index, num_shards=num_shards, start_step=start_step
    )


def make_eval_iterator(
    cfg: DatasetConfig, *, shard_index: int = 0, num_shards: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """One unshuffled pass over `cfg.split`, in global batches of `cfg.batch_size`.

    The last global batch is padded with all-zero rows (zero loss weight), so every batch has
    b rows and every shard yields the same number of batches; `real_rows` tells them apart.

    Args:
        cfg: what to read; `cfg.shuffle` is ignored.
        shard_index: this host's data shard, in [0, num_shards).
        num_shards: number of data shards.

    Returns:
        A finite iterator of dicts of int32 arrays `[b, T]` / `[b, L]`.
    """
    _check_shard(cfg, shard_index, num_shards)
    if cfg.is_synthetic:
        from spot_jax.data import synthetic

        _refuse_packing(cfg)
        return synthetic.eval_batches(
            split=cfg.split,
            seed=cfg.seed,
            task_feature_lengths=cfg.task_feature_lengths,
            vocab_size=cfg.vocab_size,
            batch_size=cfg.batch_size,
            shard_index=shard_index,
            num_shards=num_shards,
        )
    from spot_jax.data import pipeline

    return pipeline.eval_batches(cfg, shard_index=shard_index, num_shards=num_shards)


def make_task_scorer(cfg: DatasetConfig):
    """The task's own metrics on decoded eval predictions, or None where there are none.

    Returns a callable `scorer(predicted_ids) -> {'eval/<metric>': value}` taking the
    predicted token ids of the eval split's real rows in iterator order (see
    `spot_jax.data.scoring`), or None for the synthetic source, mixtures and tasks without
    metric fns. TensorFlow is imported only for a real task.
    """
    if cfg.is_synthetic:
        return None
    from spot_jax.data import scoring

    return scoring.make_task_scorer(cfg)


def eval_task_names(cfg: DatasetConfig) -> list[str] | None:
    """The tasks of the mixture `cfg` names, to evaluate one by one; None for a task.

    See `spot_jax.data.pipeline.eval_task_names`; None for the synthetic source too.
    """
    if cfg.is_synthetic:
        return None
    from spot_jax.data import pipeline

    return pipeline.eval_task_names(cfg)


def with_lengths(cfg: DatasetConfig) -> DatasetConfig:
    """`cfg` with fixed lengths: `task_feature_lengths=None` becomes its split's longest inputs
    and targets (`pipeline.split_max_lengths`, T5X's infer_eval lengths); others unchanged."""
    if cfg.task_feature_lengths is not None:
        return cfg
    from spot_jax.data import pipeline

    lengths = pipeline.split_max_lengths(cfg)
    print(
        f"{cfg.mixture_or_task_name} {cfg.split}: eval lengths {lengths} (the split's longest)",
        flush=True,
    )
    return dataclasses.replace(cfg, task_feature_lengths=lengths)


def eval_task_configs(cfg: DatasetConfig) -> dict[str | None, DatasetConfig]:
    """What an eval or infer job reads: `{task: cfg for that task}` for each task a mixture
    is evaluated on (`eval_task_names`), or `{None: cfg}` for a task."""
    names = eval_task_names(cfg)
    if names is None:
        return {None: cfg}
    return {name: dataclasses.replace(cfg, mixture_or_task_name=name) for name in names}


def make_detokenizer(cfg: DatasetConfig):
    """`ids -> text` in the vocabulary of `cfg`'s task (None for the synthetic source)."""
    if cfg.is_synthetic:
        return None
    from spot_jax.data import scoring

    return scoring.make_detokenizer(cfg)


def real_rows(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Marks the rows of a batch that hold an example rather than eval padding.

    Every real example has at least its EOS in the target, so padding rows are exactly the
    rows whose `decoder_target_tokens` are all zero.

    Args:
        batch: a batch from either iterator.

    Returns:
        `[b]` bool array, True for real examples.
    """
    return np.asarray(batch["decoder_target_tokens"]).any(axis=-1)


def _refuse_packing(cfg: DatasetConfig) -> None:
    if cfg.pack:
        raise ValueError(
            "The synthetic source does not pack examples; set DatasetConfig.pack=False."
        )
