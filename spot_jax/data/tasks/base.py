"""What every SPoT TFDS task shares: naming, output features, the preprocessor chain.

Task names follow the SPoT code: `spot_<benchmark>_<task>_v<tfds version without dots>`,
e.g. `spot_glue_rte_v200` (tfds `glue/rte:2.0.0`). Each task has a "taskless" twin,
`<name>_taskless`, whose inputs lack the leading task word (prompt tuning's
`remove_first_text_token`), for runs where the prompt alone should identify the task.

Train-split sizes come from the TFDS builder info when the data is prepared, else from
`KNOWN_TRAIN_SIZES` (the TFDS catalog's counts), so mixture rates exist before any download
and under `tfds.testing.mock_data` (whose builders report no split sizes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import seqio

from spot_jax.data import preprocessors, vocab

TASKLESS_SUFFIX = "_taskless"

# Train examples per task, from the TFDS catalog (glue 2.0.0, super_glue 1.0.2).
KNOWN_TRAIN_SIZES = {
    "spot_glue_cola_v200": 8_551,
    "spot_glue_sst2_v200": 67_349,
    "spot_glue_mrpc_v200": 3_668,
    "spot_glue_qqp_v200": 363_846,
    "spot_glue_stsb_v200": 5_749,
    "spot_glue_mnli_v200": 392_702,
    "spot_glue_mnli_train_v200": 392_702,
    "spot_glue_qnli_v200": 104_743,
    "spot_glue_rte_v200": 2_490,
    "spot_glue_wnli_v200": 635,
    "spot_super_glue_boolq_v102": 9_427,
    "spot_super_glue_cb_v102": 250,
    "spot_super_glue_copa_v102": 400,
    "spot_super_glue_multirc_v102": 27_243,
    "spot_super_glue_record_v102": 100_730,
    "spot_super_glue_rte_v102": 2_490,
    "spot_super_glue_wic_v102": 5_428,
    "spot_super_glue_wsc_v102": 554,
    # snli 1.1.0, anli 0.1.0, imdb_reviews 1.0.0, yelp_polarity_reviews 0.2.0, squad 3.0.0.
    # (SNLI's count includes the 785 pairs without a gold label that the task drops.)
    "spot_snli_v110": 550_152,
    "spot_anli_r1_v010": 16_946,
    "spot_anli_r2_v010": 45_460,
    "spot_anli_r3_v010": 100_459,
    "spot_imdb_reviews_v100": 25_000,
    "spot_yelp_polarity_reviews_v020": 560_000,
    "spot_squad_v11_v300": 87_599,
    # sentiment140 1.0.0, goemotions 0.1.0; mrqa 1.0.0 in-domain train sets (MRQA's counts).
    "spot_doc_nli_v100": 942_314,
    "spot_sentiment140_v100": 1_600_000,
    "spot_goemotions_v010": 43_410,
    "spot_mrqa_squad_v100": 86_588,
    "spot_mrqa_news_qa_v100": 74_160,
    "spot_mrqa_trivia_qa_v100": 61_688,
    "spot_mrqa_search_qa_v100": 117_384,
    "spot_mrqa_hotpot_qa_v100": 72_928,
    "spot_mrqa_natural_questions_v100": 104_071,
    # Summarization (tfds versions as in tasks/summarization.py).
    "spot_aeslc_v100": 14_436,
    "spot_billsum_v300": 18_949,
    "spot_cnn_dailymail_v340": 287_113,
    "spot_gigaword_v120": 3_803_957,
    "spot_multi_news_v210": 44_972,
    "spot_newsroom_v100": 995_041,
    "spot_samsum_v100": 14_732,
    "spot_xsum_v110": 203_577,
}

# Tasks whose preprocessing changes the number of train examples, so TFDS's split size is not
# theirs: ReCoRD makes one example per answer (100,730 passages-queries -> 138,854, the weight
# in T5's SUPER_GLUE_WEIGHT_MAPPING); simple WSC keeps only the 259 correct referents of 554.
PREPROCESSED_TRAIN_SIZES = {
    "spot_super_glue_record_v102": 138_854,
    "spot_super_glue_wsc_v102_simple_train": 259,
}


def output_features() -> dict[str, seqio.Feature]:
    """T5's SentencePiece vocabulary on inputs and targets, EOS appended to both."""
    spm = vocab.get_vocabulary()
    return {
        "inputs": seqio.Feature(spm, add_eos=True, required=False),
        "targets": seqio.Feature(spm, add_eos=True),
    }


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One TFDS-backed text-to-text task.

    Attributes:
        name: the SeqIO name, `spot_<benchmark>_<task>_v<version>`.
        tfds_name: `builder/config:version`.
        splits: task split -> TFDS split.
        text_preprocessor: raw TFDS example dataset -> `{'inputs', 'targets', ...}` strings.
        postprocess_fn: decoded text -> what the metrics compare.
        metric_fns: SeqIO `(targets, predictions)` metric functions.
        label_names: class names when the task is a classification over integer labels
            (few-shot subsets balance over them), else None.
        label_key: the raw TFDS feature holding the class (few-shot subsets read it before
            the text preprocessor runs).
        few_shot_classes: the raw `label_key` values few-shot subsets balance over, one class
            each; None means 0..len(label_names)-1. A class the train split lacks cannot fill
            its quota, so leave it out here (Sentiment140's train has no neutral tweets).
        token_preprocessors: run on the tokenized example before EOS is appended (e.g. to cut
            inputs from the middle rather than the end).
        taskless_twin: also register `<name>_taskless` (inputs without the leading task word);
            False for formats that start with no task word.
        source: builds the data source when the data is not a TFDS builder (`files`: datasets
            read from their published files); `tfds_name` then only names the data.
        examples_of: splits raw rows into the task's examples before anything else (RACE:
            articles -> one row per question); few-shot subsets count and balance these rows.
    """

    name: str
    tfds_name: str
    splits: Mapping[str, str]
    text_preprocessor: Callable
    postprocess_fn: Callable
    metric_fns: Sequence[Callable]
    label_names: Sequence[str] | None = None
    label_key: str = "label"
    few_shot_classes: Sequence[int] | None = None
    token_preprocessors: Sequence[Callable] = ()
    taskless_twin: bool = True
    source: Callable[[], seqio.DataSource] | None = None
    examples_of: Callable | None = None


def data_source(spec: TaskSpec) -> seqio.DataSource:
    """The spec's raw examples: its own source, else its TFDS builder."""
    if spec.source is not None:
        return spec.source()
    return TfdsSource(tfds_name=spec.tfds_name, splits=dict(spec.splits))


SPECS: dict[str, TaskSpec] = {}


class TfdsSource(seqio.TfdsDataSource):
    """seqio's TFDS source, which also reads builders that list no files.

    Mock builders (`tfds.testing.mock_data`) and unprepared datasets report no split files
    or sizes; seqio then shards the examples instead of the files, and sizes are unknown.
    """

    def list_shards(self, split: str):
        try:
            return super().list_shards(split)
        except KeyError:
            return []

    def num_input_examples(self, split: str) -> int | None:
        try:
            return super().num_input_examples(split)
        except KeyError:
            return None


def preprocessor_chain(spec: TaskSpec, taskless: bool = False, split_rows: bool = True) -> list:
    """Text preprocessing, then (after the cache point) tokenize and append EOS.

    The cache placeholder sits before tokenization, so `Task.preprocess_precache` yields
    the strings the model will read (what `spot-jax tasks show` prints). `split_rows=False`
    leaves out `spec.examples_of`, for sources that already give one row per example.
    """
    chain = [spec.text_preprocessor]
    if spec.examples_of is not None and split_rows:
        chain.insert(0, spec.examples_of)
    if taskless:
        chain.append(preprocessors.remove_task_prefix)
    return [
        *chain,
        seqio.CacheDatasetPlaceholder(),
        seqio.preprocessors.tokenize,
        *spec.token_preprocessors,
        seqio.preprocessors.append_eos_after_trim,
    ]


def register_spec(spec: TaskSpec) -> None:
    """Registers the task and its taskless twin once (imports and register_all may repeat)."""
    SPECS[spec.name] = spec
    variants = ((spec.name, False), (spec.name + TASKLESS_SUFFIX, True))
    for name, taskless in variants[: 2 if spec.taskless_twin else 1]:
        if name in seqio.TaskRegistry.names():
            continue
        seqio.TaskRegistry.add(
            name,
            source=data_source(spec),
            output_features=output_features(),
            preprocessors=preprocessor_chain(spec, taskless),
            postprocess_fn=spec.postprocess_fn,
            metric_fns=list(spec.metric_fns),
        )


def register_specs(specs: Iterable[TaskSpec]) -> list[str]:
    """Registers each spec (and its taskless twin) in order; returns the main task names.

    A benchmark module's `register()` builds its specs and hands them here, so every
    benchmark registers its tasks, and reports which it registered, the same way.
    """
    names = []
    for spec in specs:
        register_spec(spec)
        names.append(spec.name)
    return names


def train_size(task_name: str) -> int:
    """Train examples of a task (few-shot, taskless and task-index variants: those of what
    they read).

    `PREPROCESSED_TRAIN_SIZES` first (tasks whose preprocessing adds or drops examples), then
    the TFDS builder info when it knows the split, else `KNOWN_TRAIN_SIZES`.

    Raises:
        ValueError: when neither knows the task.
    """
    from spot_jax.data.tasks import task_index

    task_name = task_index.source_task(task_name)
    base = task_name.removesuffix(TASKLESS_SUFFIX)
    if base in PREPROCESSED_TRAIN_SIZES:
        return PREPROCESSED_TRAIN_SIZES[base]
    task = seqio.get_mixture_or_task(task_name)
    try:
        n = task.source.num_input_examples("train")
    except Exception:  # noqa: BLE001 - unprepared data or mock builders: use the catalog
        n = None
    if n:
        return int(n)
    if base in KNOWN_TRAIN_SIZES:
        return KNOWN_TRAIN_SIZES[base]
    raise ValueError(
        f"No train-split size known for task {task_name!r}; prepare its TFDS data or add "
        "it to spot_jax.data.tasks.base.KNOWN_TRAIN_SIZES."
    )
