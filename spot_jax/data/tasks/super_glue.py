"""SuperGLUE tasks in T5's format: `spot_super_glue_<task>_v102` (tfds `super_glue/*:1.0.2`).

    boolq    'boolq passage: <p> question: <q>' -> False | True
    cb       'cb hypothesis: <h> premise: <p>' -> entailment | contradiction | neutral
    copa     'copa choice1: <a> choice2: <b> premise: <p> question: cause|effect' -> choice1|2
    multirc  'multirc question: <q> answer: <a> paragraph: <p>' (HTML removed) -> False | True
    record   'record query: <q> entities: e1, e2 passage: <p>' -> one example per answer
    rte      'rte hypothesis: <h> premise: <p>' -> entailment | not_entailment
    wic      'wic sentence1: <s1> sentence2: <s2> word: <w>' -> False | True
    wsc      'wsc text: ... * noun * ... # pronoun # ...' -> False | True (tfds wsc.fixed)
    wsc_v102_simple_train  'wsc: ... *pronoun* ...' -> the referent (correct candidates only)
    wsc_v102_simple_eval   the same over every candidate; scored by whether the model named
                           this candidate exactly when it is the referent (accuracy)

WSC: T5 and prompt tuning train and evaluate only the "simple" form
(`super_glue_wsc_v102_simple_train` / `_simple_eval`, the model generates the referent), and
their SuperGLUE mixture weighs WSC by the simple train variant's 259 examples; our mixture
does the same (`mixtures.SUPER_GLUE_TASKS`). The True/False `spot_super_glue_wsc_v102` stays
registered for the few-shot targets (`few_shot.DEFAULT_TASKS`) and runs that name it.

MultiRC and ReCoRD keep their question/passage ids so the metrics can group answers back
into questions (MultiRC exact match; ReCoRD's max over answers, one copy per query).
"""

from __future__ import annotations

import functools

import tensorflow_datasets as tfds

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base

VERSION = "1.0.2"
TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_FEATURE_ORDER = {
    "multirc": ("question", "answer", "paragraph"),
    # The word's character offsets are left out, as T5 does.
    "wic": ("sentence1", "sentence2", "word"),
}


def task_name(task: str) -> str:
    return f"spot_super_glue_{task}_v{VERSION.replace('.', '')}"


def spec(task: str) -> base.TaskSpec:
    """The TaskSpec of one SuperGLUE task."""
    tfds_config = "wsc.fixed" if task == "wsc" else task
    config = tfds.text.super_glue.SuperGlue.builder_configs[tfds_config]
    label_names = tuple(config.label_classes)
    class_ids = functools.partial(
        postprocessors.string_label_to_class_id, label_classes=label_names
    )
    if task == "record":
        text_pp, postprocess = preprocessors.record, postprocessors.record
        metric_fns, label_names = [metrics.record], None
    elif task == "wsc":
        text_pp, postprocess, metric_fns = preprocessors.wsc, class_ids, [metrics.accuracy]
    else:
        text_pp = functools.partial(
            preprocessors.glue,
            benchmark_name=task,
            label_names=label_names,
            feature_names=_FEATURE_ORDER.get(task),
        )
        if task == "multirc":
            postprocess, metric_fns = postprocessors.multirc, [metrics.multirc]
        elif task == "cb":
            postprocess = class_ids
            metric_fns = [metrics.mean_multiclass_f1(num_classes=3), metrics.accuracy]
        else:
            postprocess, metric_fns = class_ids, [metrics.accuracy]
    return base.TaskSpec(
        name=task_name(task),
        tfds_name=f"super_glue/{tfds_config}:{VERSION}",
        splits=_SPLITS,
        text_preprocessor=text_pp,
        postprocess_fn=postprocess,
        metric_fns=metric_fns,
        label_names=label_names,
    )


WSC_SIMPLE_TRAIN = "spot_super_glue_wsc_v102_simple_train"
WSC_SIMPLE_EVAL = "spot_super_glue_wsc_v102_simple_eval"


def wsc_simple_spec(train: bool) -> base.TaskSpec:
    """T5's simple WSC: the train variant (correct referents only) or the eval variant."""
    return base.TaskSpec(
        name=WSC_SIMPLE_TRAIN if train else WSC_SIMPLE_EVAL,
        tfds_name=f"super_glue/wsc.fixed:{VERSION}",
        splits={"train": "train"} if train else {"validation": "validation", "test": "test"},
        text_preprocessor=functools.partial(preprocessors.wsc_simple, correct_referent_only=train),
        postprocess_fn=postprocessors.wsc_simple,
        metric_fns=[] if train else [metrics.accuracy],
    )


def register() -> list[str]:
    """Registers the SuperGLUE tasks (and taskless twins); returns the main task names."""
    specs = [*(spec(task) for task in TASKS), wsc_simple_spec(True), wsc_simple_spec(False)]
    return base.register_specs(specs)
