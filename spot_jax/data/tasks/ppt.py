"""PPT pre-training tasks over a TFDS text corpus: `ppt_<format>_<corpus>` (TF inside).

    ppt_nsp3_c4       sentence pair: 's1 <extra_id_0> s2' -> '<extra_id_0> yes|maybe|no'
    ppt_mc_c4         next-sentence selection among 6 options -> '<extra_id_0> C'
    ppt_unified_c4    the same with 2..16 options (Unified PPT's one format)
    ppt_mixture_c4    the three above, equal rates
    ppt_cls_<name>    single sentence -> '<extra_id_0> terrible|...|great', pseudo-labelled by a
                      labeler the user plugs in (`register_pseudo_label_task`)

The formats and their builders are in `spot_jax.data.ppt`; this module only reads a corpus
(`Corpus`: any TFDS builder and text field, C4 `c4/en` by default) and registers the tasks.
`register_corpus(Corpus(...))` adds the same tasks for another corpus, e.g. the task-world
demo's text. Inputs hold PPT's long templates: give unified/mc runs an inputs length of 512.
An input longer than its feature length loses its start, not its end (`keep_input_end`), so
the options and the mask `<extra_id_0>` of a template always reach the model.

Under mock data (`SPOT_JAX_TFDS_MOCK`, `spot-jax tasks show --mock-data`), the random text
has no sentence punctuation and a few words per example, so every word counts as a sentence
there and consecutive examples are joined into documents of `MOCK_DOCUMENT_SENTENCES` (PPT's
formats skip documents of fewer than 5 or 6 sentences).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from spot_jax.data import metrics, ppt, ppt_choice
from spot_jax.data.tasks import base

PRETRAIN_FORMATS = ("nsp3", "mc", "unified")
MOCK_DOCUMENT_SENTENCES = 8
# Fixed so that the examples built from a corpus never change between runs.
_BUILD_SEED = 20210904


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A TFDS text corpus to build PPT examples from.

    Attributes:
        name: the corpus part of the task names (`ppt_nsp3_<name>`).
        tfds_name: `builder/config:version`.
        text_field: the feature holding a document's text.
        splits: task split -> TFDS split (slices like 'train[:1%]' give a held-out split to
            corpora without one).
        splitter: how documents are cut into sentences.
        pool_size: documents per block that "other document" sentences come from.
    """

    name: str = "c4"
    tfds_name: str = "c4/en:3.1.0"
    text_field: str = "text"
    splits: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "validation": "validation"}
    )
    splitter: ppt.SentenceSplitter = ppt.SentenceSplitter()
    pool_size: int = 32


C4 = Corpus()
CORPORA: dict[str, Corpus] = {}


def task_name(fmt: str, corpus: str = C4.name) -> str:
    return f"ppt_{fmt}_{corpus}"


def mixture_name(corpus: str = C4.name) -> str:
    return f"ppt_mixture_{corpus}"


def _mock_data_enabled() -> bool:
    from spot_jax.data import tasks

    return tasks.mock_data_enabled()


def corpus_documents(corpus: Corpus, split: str):
    """The split's documents as sentence lists (a Python iterator over TFDS, in file order)."""
    source = base.TfdsSource(tfds_name=corpus.tfds_name, splits=dict(corpus.splits))
    splitter = corpus.splitter
    if _mock_data_enabled():
        splitter = dataclasses.replace(splitter, min_words=1, max_words=1)
    texts = (
        x[corpus.text_field].decode("utf-8", errors="replace")
        for x in source.get_dataset(split=split, shuffle=False).as_numpy_iterator()
    )
    docs = ppt.documents(texts, splitter)
    return _joined(docs, MOCK_DOCUMENT_SENTENCES) if _mock_data_enabled() else docs


def _joined(docs, sentences: int):
    """Consecutive documents joined until each holds `sentences` (the rest ends the stream)."""
    current: list[str] = []
    for doc in docs:
        current += doc
        if len(current) >= sentences:
            yield current
            current = []
    if current:
        yield current


def _build_seed(split: str) -> int:
    # Different splits get different choices even where they share documents.
    return _BUILD_SEED + zlib.crc32(split.encode())


_SIGNATURE = {
    "inputs": tf.TensorSpec((), tf.string),
    "targets": tf.TensorSpec((), tf.string),
    "label": tf.TensorSpec((), tf.int32),
}


def _dataset_fn(
    split: str, shuffle_files: bool, seed: int | None = None, *, corpus: Corpus, build: Callable
) -> tf.data.Dataset:
    del shuffle_files, seed  # the examples are a fixed stream; the Task shuffles them

    def generate():
        for example in build(corpus_documents(corpus, split), seed=_build_seed(split)):
            yield {k: example[k] for k in _SIGNATURE}

    return tf.data.Dataset.from_generator(generate, output_signature=_SIGNATURE)


def keep_input_end(
    dataset: tf.data.Dataset, output_features, sequence_length=None
) -> tf.data.Dataset:
    """Cuts overlong tokenized inputs from the front (SeqIO's trim cuts the end, where PPT's
    templates keep the options and the mask); leaves room for the EOS appended after."""
    if not sequence_length or sequence_length.get("inputs") is None:
        return dataset
    keep = sequence_length["inputs"] - int(output_features["inputs"].add_eos)

    def trim(example):
        return {**example, "inputs": example["inputs"][-keep:]}

    return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)


def _in_vocabulary_tokens(build: Callable) -> Callable:
    """A multiple-choice builder whose budgets count the task vocabulary's tokens, as PPT's."""

    def run(docs, seed: int):
        vocabulary = base.output_features()["inputs"].vocabulary
        return build(docs, seed=seed, cut=ppt_choice.token_cutter(vocabulary))

    return run


def _add_task(name: str, corpus: Corpus, build: Callable) -> str:
    if name in seqio.TaskRegistry.names():
        return name
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(
            functools.partial(_dataset_fn, corpus=corpus, build=build),
            splits=tuple(corpus.splits),
        ),
        output_features=base.output_features(),
        preprocessors=[
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.tokenize,
            keep_input_end,
            seqio.preprocessors.append_eos_after_trim,
        ],
        metric_fns=[metrics.accuracy],
    )
    return name


def register_corpus(corpus: Corpus = C4) -> list[str]:
    """Registers nsp3, mc, unified and their mixture for a corpus; returns the task names."""
    CORPORA[corpus.name] = corpus
    names = []
    for fmt in PRETRAIN_FORMATS:
        build = functools.partial(ppt.examples, fmt, pool_size=corpus.pool_size)
        if fmt in ("mc", "unified"):
            build = _in_vocabulary_tokens(build)
        names.append(_add_task(task_name(fmt, corpus.name), corpus, build))
    if mixture_name(corpus.name) not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(mixture_name(corpus.name), [(n, 1.0) for n in names])
    return names


def register_pseudo_label_task(
    labeler: ppt.Labeler | str,
    name: str = "labeled",
    corpus: Corpus = C4,
    label_words: Sequence[str] = ppt.SENTIMENT_LABEL_WORDS,
    batch_size: int = 64,
) -> str:
    """Registers `ppt_cls_<name>`: corpus sentences labelled by `labeler`; returns the name.

    Args:
        labeler: sentences -> class ids (-1 drops one), or 'module:function' naming such a
            callable; `spot_jax.data.ppt_labeler.PromptLabeler` labels with a saved prompt.
        name: the task name's last part.
        corpus: where the sentences come from.
        label_words: the word of each class id.
        batch_size: sentences per labeler call.

    A training job reaches the task through a module of the user's that calls this at import,
    named by MIXTURE_OR_TASK_MODULE, with MIXTURE_OR_TASK_NAME = 'ppt_cls_<name>'.
    """
    task = f"ppt_cls_{name}"
    if isinstance(labeler, str):
        labeler = _import_callable(labeler)

    def build(docs, seed):
        del seed  # labels come from the labeler, not from random choices
        return ppt.cls_examples(docs, labeler, label_words=label_words, batch_size=batch_size)

    return _add_task(task, corpus, build)


def _import_callable(spec: str) -> Callable:
    import importlib

    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"labeler {spec!r} must be 'module:function'")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"labeler {spec!r} does not name a callable")
    return fn


def register() -> list[str]:
    """Registers the C4 tasks and mixture."""
    return register_corpus(C4)
