"""The task world's 16 tasks as SeqIO tasks (`world_<family>_<variant>`), all in memory.

Examples come from `spot_jax.data.world` (seeded, nothing to download); the vocabulary is the
world's word-level SentencePiece model, trained on first use into the cache directory
($SPOT_JAX_CACHE, default ~/.cache/spot_jax), so registering costs nothing and
`spot-jax tasks show world_topic_names` needs no vocabulary at all (it stops before tokenizing).

Each task also has the `<name>_prefixed` twin whose inputs start with the task word (how the
backbone's multi-task pretraining reads source tasks).
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from spot_jax.data import metrics, world
from spot_jax.data.tasks import demo

PREFIXED_SUFFIX = "_prefixed"


class WorldVocabulary(seqio.SentencePieceVocabulary):
    """The world's SentencePiece vocabulary; trains and caches its model file on first use."""

    def __init__(self, seed: int = world.DEFAULT_SEED):
        self._world_seed = seed
        path = world.cache_root() / world.vocabulary_name(seed)
        super().__init__(str(path), extra_ids=world.EXTRA_IDS)

    def _model_context(self):
        if not self._model:
            world.vocabulary_file(world.build_world(self._world_seed))
        return super()._model_context()


@functools.lru_cache(maxsize=1)
def vocabulary() -> WorldVocabulary:
    return WorldVocabulary()


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, name: str,
                prefixed: bool) -> tf.data.Dataset:  # fmt: skip
    """SeqIO FunctionDataSource callback: one split as `{'inputs', 'targets'}` strings."""
    del shuffle_files, seed  # no files; the Task's shuffle buffer covers the whole split
    w = world.build_world()
    pairs = w.examples(name, split)
    inputs = [w.with_task_word(name, x) if prefixed else x for x, _ in pairs]
    return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": [y for _, y in pairs]})


def register() -> None:
    """Registers every world task and its prefixed twin once (imports may repeat)."""
    w = world.build_world()
    features = {
        "inputs": seqio.Feature(vocabulary(), add_eos=True),
        "targets": seqio.Feature(vocabulary(), add_eos=True),
    }
    for name in w.names():
        for task_name, prefixed in ((name, False), (name + PREFIXED_SUFFIX, True)):
            if task_name in seqio.TaskRegistry.names():
                continue
            seqio.TaskRegistry.add(
                task_name,
                source=seqio.FunctionDataSource(
                    functools.partial(_dataset_fn, name=name, prefixed=prefixed),
                    splits=tuple(w.split_sizes),
                    num_input_examples=dict(w.split_sizes),
                ),
                output_features=features,
                preprocessors=[
                    seqio.CacheDatasetPlaceholder(),
                    seqio.preprocessors.tokenize,
                    seqio.preprocessors.append_eos_after_trim,
                ],
                postprocess_fn=demo.normalize_text,
                # Exact match of the normalised text is the accuracy of a classification task
                # and of extraction. Named `accuracy`, the task's own metric ('best' is chosen by
                # it), not `sequence_accuracy`: that key would replace the Evaluator's own
                # exact-match fraction with a percent.
                metric_fns=[metrics.accuracy],
                shuffle_buffer_size=max(w.split_sizes.values()),
            )
