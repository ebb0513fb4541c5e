"""SeqIO task/mixture -> EncDecFeatureConverter -> host-local numpy batches.

This is the only module of the seam that imports TensorFlow and SeqIO, and
`spot_jax.data` imports it lazily, when a job asks for a real task. Everything after
`as_numpy_iterator()` is plain numpy, so the training core never touches TF tensors.

Determinism: the shuffle seed is fixed by `DatasetConfig.seed` and tf.data runs
deterministically, so the k-th batch of the stream is a fixed thing; resume skips the
first `start_step` batches (T5X restores a tf.data iterator checkpoint instead; skipping
costs preprocessing time on restart but needs no extra state).
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
from collections.abc import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from spot_jax.data.config import DatasetConfig

log = logging.getLogger(__name__)

MODEL_FEATURES = (
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)
# Extra features EncDecFeatureConverter(pack=True) emits; the model needs them to keep
# packed examples from attending to each other.
PACKING_FEATURES = (
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_segment_ids",
    "decoder_positions",
)


def _hide_gpus_from_tf() -> None:
    # TF would otherwise grab (and preallocate) the accelerators JAX needs for the model.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # TF's devices are already initialized (e.g. a second pipeline in one process);
        # the first call already hid the GPUs, or someone else chose on purpose.
        pass


def get_provider(cfg: DatasetConfig) -> seqio.DatasetProviderBase:
    """Looks up the task or mixture `cfg.mixture_or_task_name`.

    Importing `spot_jax.data.tasks` registers the project's own tasks; `cfg.module`, when
    set, is imported too so that it can register more (T5X's MIXTURE_OR_TASK_MODULE).

    Raises:
        ValueError: with the fix, when no such task or mixture is registered.
    """
    from spot_jax.data import tasks

    tasks.register_all()
    if cfg.module:
        importlib.import_module(cfg.module)
    # Few-shot variants (`<task>_<k>shot_seed<s>`), task-named mixtures (`spot_mix__a__b`)
    # and task-index variants and their mixtures (`task_index_<i>__a`, `spot_multitask__a__b`)
    # are registered on first use.
    from spot_jax.data import mixtures
    from spot_jax.data.tasks import few_shot, task_index

    name = cfg.mixture_or_task_name
    if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
        few_shot.resolve(name) or mixtures.resolve(name) or task_index.resolve(name)
    try:
        return seqio.get_mixture_or_task(cfg.mixture_or_task_name)
    except ValueError as error:
        hint = (
            f" after importing {cfg.module!r}"
            if cfg.module
            else "; set DatasetConfig.module to the module that registers it"
        )
        raise ValueError(
            f"No SeqIO task or mixture named {cfg.mixture_or_task_name!r} is registered{hint}."
        ) from error


def eval_task_names(cfg: DatasetConfig) -> list[str] | None:
    """The tasks a mixture is evaluated on, one by one (None when `cfg` names a task).

    T5X evaluates a mixture task by task, each with its own metrics; reading the mixture
    itself would not do: seqio samples it with `stop_on_empty_dataset=True`, so one unshuffled
    epoch stops at the first exhausted task and sees a rate-dependent part of the others.
    Tasks without `cfg.split` are left out, as T5X leaves them out.

    Raises:
        ValueError: when no task of the mixture has the split.
    """
    provider = get_provider(cfg)
    if isinstance(provider, seqio.Task):
        return None
    names = [task.name for task in provider.tasks if cfg.split in task.splits]
    if not names:
        raise ValueError(
            f"No task of mixture {provider.name!r} has a {cfg.split!r} split; evaluate on "
            f"one of {sorted(provider.splits)} instead."
        )
    return names


def split_max_lengths(cfg: DatasetConfig) -> dict[str, int]:
    """The longest tokenized inputs and targets (EOS included, nothing truncated) of
    `cfg.split`, over the task or every task a mixture is evaluated on: the lengths T5X's
    infer_eval decodes with (`task_feature_lengths=None`)."""
    longest = {"inputs": 1, "targets": 1}
    for name in eval_task_names(cfg) or [cfg.mixture_or_task_name]:
        task = get_provider(dataclasses.replace(cfg, mixture_or_task_name=name))
        try:
            ds = task.get_dataset(
                sequence_length=None,
                split=cfg.split,
                use_cached=cfg.use_cached,
                shuffle=False,
                num_epochs=1,
            )
            for example in ds.as_numpy_iterator():
                for key in longest:
                    longest[key] = max(longest[key], len(example[key]))
        except Exception as error:  # seqio/TF raise many kinds; the fix is the same
            raise ValueError(
                f"cannot size the {cfg.split!r} split of {name} untruncated "
                f"({type(error).__name__}: {str(error)[:200]}); give its eval fixed lengths "
                "(EVAL_TASK_FEATURE_LENGTHS)"
            ) from error
    return longest


def _feature_keys(pack: bool) -> tuple[str, ...]:
    return MODEL_FEATURES + PACKING_FEATURES if pack else MODEL_FEATURES


def model_dataset(
    cfg: DatasetConfig,
    *,
    shuffle: bool,
    shard_info: seqio.ShardInfo | None,
    num_epochs: int | None,
) -> tf.data.Dataset:
    """Unbatched model features of `cfg.split`, int32, only the keys the model reads.

    Args:
        cfg: what to read.
        shuffle: whether SeqIO shuffles (seeded with `cfg.seed`).
        shard_info: this host's slice of the examples, or None for all of them.
        num_epochs: passes over the split; None repeats forever.

    Returns:
        A dataset of dicts of int32 tensors `[T]` / `[L]`.
    """
    _hide_gpus_from_tf()
    provider = get_provider(cfg)
    lengths = {k: int(v) for k, v in cfg.task_feature_lengths.items()}
    ds = provider.get_dataset(
        sequence_length=lengths,
        split=cfg.split,
        use_cached=cfg.use_cached,
        shuffle=shuffle,
        seed=cfg.seed,
        shard_info=shard_info,
        num_epochs=num_epochs,
    )
    ds = seqio.EncDecFeatureConverter(pack=cfg.pack)(ds, task_feature_lengths=lengths)
    keys = _feature_keys(cfg.pack)
    ds = ds.map(
        lambda features: {k: tf.cast(features[k], tf.int32) for k in keys},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    options = tf.data.Options()
    # Parallel maps may otherwise reorder elements, which would break resume equality.
    options.deterministic = True
    return ds.with_options(options)


def train_batches(
    cfg: DatasetConfig,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
    start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite stream of this shard's training batches from global batch `start_step` on.

    SeqIO shards the examples (or the source files, when there are enough) before the
    feature converter, so hosts see disjoint examples, and each host batches b = B //
    num_shards of them.

    Args:
        cfg: what to read; `cfg.batch_size` is global.
        shard_index: this host's shard, in [0, num_shards).
        num_shards: number of data shards.
        start_step: global batches already consumed; skipped here.

    Returns:
        An iterator of dicts of int32 numpy arrays `[b, T]` / `[b, L]`.
    """
    b = cfg.per_shard_batch_size(num_shards)
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
    if cfg.pack and cfg.max_segments:
        return _first_fit_batches(cfg, b, shard_info, start_step)
    ds = model_dataset(cfg, shuffle=cfg.shuffle, shard_info=shard_info, num_epochs=None)
    # drop_remainder keeps every batch at b rows (the stream is infinite anyway).
    ds = ds.batch(b, drop_remainder=True)
    if start_step:
        log.info("Skipping %d batches to resume %s.", start_step, cfg.mixture_or_task_name)
        ds = ds.skip(start_step)
    # Built eagerly (not in a generator) so a bad task name fails here, not at first next().
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _first_fit_batches(cfg: DatasetConfig, b: int, shard_info, start_step: int):
    """Batches of `b` rows packed first-fit with at most `cfg.max_segments` examples a row.

    The examples come unpacked from the same seeded stream, so the packed stream is as
    deterministic as the unpacked one; resume re-packs from the start and skips `start_step`
    batches (a batch holds a varying number of examples, so there is no example count to
    skip by).
    """
    from spot_jax.data import packing

    unpacked = dataclasses.replace(cfg, pack=False, max_segments=0)
    ds = model_dataset(unpacked, shuffle=cfg.shuffle, shard_info=shard_info, num_epochs=None)
    examples = (
        (row["encoder_input_tokens"], row["decoder_target_tokens"])
        for row in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    )
    examples = ((x[x != 0], y[y != 0]) for x, y in examples)  # 0 is padding in T5 vocabularies
    lengths = {k: int(v) for k, v in cfg.task_feature_lengths.items()}
    batches = packing.packed_batches(examples, b, lengths, cfg.max_segments)
    if start_step:
        log.info("Re-packing %d batches to resume %s.", start_step, cfg.mixture_or_task_name)
    return itertools.islice(batches, start_step, None)


def eval_batches(
    cfg: DatasetConfig, *, shard_index: int = 0, num_shards: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """One unshuffled pass over the split; the last global batch padded with zero rows.

    Each host reads the whole split in global batches and keeps rows
    [shard_index*b, (shard_index+1)*b) of each, like the synthetic source. Sharding the
    examples instead would leave hosts with different batch counts, and a host that stops
    early deadlocks the others in the next collective.

    Args:
        cfg: what to read; `cfg.shuffle` is ignored.
        shard_index: this host's shard, in [0, num_shards).
        num_shards: number of data shards.

    Returns:
        A finite iterator of dicts of int32 numpy arrays `[b, T]` / `[b, L]`.
    """
    b = cfg.per_shard_batch_size(num_shards)
    ds = model_dataset(cfg, shuffle=False, shard_info=None, num_epochs=1)
    ds = ds.batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)
    rows = slice(shard_index * b, (shard_index + 1) * b)
    return (
        {k: v[rows] for k, v in pad_rows(batch, cfg.batch_size).items()}
        for batch in ds.as_numpy_iterator()
    )


def pad_rows(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads every array of `batch` along dim 0 with zero rows up to `rows`.

    Args:
        batch: arrays `[n, ...]` with n <= rows.
        rows: wanted leading size.

    Returns:
        Arrays `[rows, ...]`; the added rows are all zero, so they carry no loss weight.
    """
    padded = {}
    for key, value in batch.items():
        missing = rows - value.shape[0]
        if missing:
            value = np.concatenate([value, np.zeros((missing, *value.shape[1:]), value.dtype)])
        padded[key] = value
    return padded
