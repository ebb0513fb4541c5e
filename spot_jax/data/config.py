"""What data a job reads: the one config object behind every input iterator.

This module must stay importable without TensorFlow: the training core builds a
`DatasetConfig` from gin before it knows whether the data will come from SeqIO or
from the numpy synthetic source.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

# The name that routes a config to `spot_jax.data.synthetic` instead of SeqIO.
SYNTHETIC = "synthetic"
# Prefix of task-named mixtures, `spot_mix__<task>__<task>...` (see data/mixtures.py).
MIX_PREFIX = "spot_mix__"

# Task features every text-to-text task provides (seqio's EncDecFeatureConverter names).
TASK_FEATURES = ("inputs", "targets")
# T5 1.1's SentencePiece model: 32000 pieces + 100 sentinel ids (models pad to 32128).
DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
# Multi-task prompts: task i's examples lead with its sentinel `<extra_id_i>`, id
# TASK_INDEX_VOCAB - 1 - i (prompt-tuning's `sentinel_to_task` with T5's 32100 ids).
TASK_INDEX_VOCAB = 32100
# Prefixes of task-index variants and of their mixtures (data/tasks/task_index.py).
TASK_INDEX_PREFIX = "task_index_"
MULTITASK_PREFIX = "spot_multitask__"
# Lets offline machines point at a local copy without editing gin files.
VOCAB_ENV_VAR = "SPOT_JAX_VOCAB"


def vocabulary_path(path: str | None = None) -> str:
    """The SentencePiece model to use: `path`, else $SPOT_JAX_VOCAB, else T5's public one."""
    return path or os.environ.get(VOCAB_ENV_VAR) or DEFAULT_SPM_PATH


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Selects a split of a SeqIO task/mixture (or the synthetic source) and how to batch it.

    Mirrors T5X's `utils.DatasetConfig` for the fields prompt tuning uses.

    Attributes:
        mixture_or_task_name: a registered SeqIO task or mixture name, or `'synthetic'` for
            the numpy source used by tests and benchmarks.
        task_feature_lengths: maximum lengths of the task features, keys `'inputs'` (T) and
            `'targets'` (L). Batches have shapes `[b, T]` and `[b, L]`. None (an eval split of
            a SeqIO task or mixture; T5X's infer_eval default): the split's longest, found by
            `spot_jax.data.with_lengths` before the job reads it.
        split: dataset split, e.g. `'train'` or `'validation'`.
        batch_size: the GLOBAL batch size B; each of `num_shards` hosts gets B // num_shards
            rows.
        shuffle: whether the (train) stream is shuffled. Eval iterators never shuffle.
        seed: seed of the shuffle (and of the synthetic examples). Fixed seeds make the stream
            reproducible, which resume after a crash relies on.
        pack: whether several examples share one row (with `*_segment_ids`/`*_positions`).
        max_segments: with `pack`, the most examples in one row: first-fit packing of the
            training stream with that cap (`data.packing`), so that a prompted model with the
            same `PromptedT5(max_segments=...)` gives every example its own prompt copy. 0 with
            `pack`: seqio's packer, which has no cap (model tuning).
        use_cached: read a SeqIO task's offline cache instead of preprocessing on the fly.
        vocab_size: vocabulary size of the synthetic source (token ids lie in [3, vocab_size)).
        module: a Python module to import before looking the task up, so that it registers
            its tasks (T5X's MIXTURE_OR_TASK_MODULE).
    """

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int] | None
    split: str = "train"
    batch_size: int = 32
    shuffle: bool = True
    seed: int = 0
    pack: bool = False
    max_segments: int = 0
    use_cached: bool = False
    vocab_size: int | None = None
    module: str | None = None

    def __post_init__(self):
        if self.task_feature_lengths is None:
            if self.is_synthetic or self.split == "train":
                raise ValueError(
                    "task_feature_lengths=None (each eval split's longest) is for the eval "
                    "splits of SeqIO tasks; give the train split and the synthetic source "
                    "fixed lengths"
                )
            return
        missing = [k for k in TASK_FEATURES if k not in self.task_feature_lengths]
        if missing:
            raise ValueError(
                f"DatasetConfig.task_feature_lengths needs keys {list(TASK_FEATURES)}; "
                f"missing {missing} in {dict(self.task_feature_lengths)}."
            )
        for key, length in self.task_feature_lengths.items():
            if int(length) < 1:
                raise ValueError(f"task_feature_lengths[{key!r}] must be >= 1, got {length}.")
        if self.batch_size < 1:
            raise ValueError(f"DatasetConfig.batch_size must be >= 1, got {self.batch_size}.")
        if self.max_segments < 0 or (self.max_segments and not self.pack):
            raise ValueError(
                f"DatasetConfig.max_segments={self.max_segments} needs pack=True and a value "
                ">= 1 (or 0 for no packing cap)."
            )

    @property
    def is_synthetic(self) -> bool:
        """Whether this config selects the numpy synthetic source."""
        return self.mixture_or_task_name == SYNTHETIC

    @property
    def inputs_length(self) -> int:
        """T, the encoder length."""
        return int(self.task_feature_lengths["inputs"])

    @property
    def targets_length(self) -> int:
        """L, the decoder length."""
        return int(self.task_feature_lengths["targets"])

    def per_shard_batch_size(self, num_shards: int) -> int:
        """Rows per host, b = B // num_shards.

        Raises:
            ValueError: if the global batch does not split evenly, since hosts must run the
                same global step on equal slices (T5X's `get_data_layout` refuses it too).
        """
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        if self.batch_size % num_shards:
            raise ValueError(
                f"Global batch size {self.batch_size} is not divisible by the number of data "
                f"shards {num_shards}; choose a batch size that is a multiple of {num_shards}."
            )
        return self.batch_size // num_shards
