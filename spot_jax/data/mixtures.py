"""SPoT's multi-task mixtures: examples-proportional mixing with a size cap.

Raffel et al.'s examples-proportional mixing, as SPoT uses it (paper §2.1.3): task i is
sampled with rate min(n_i, K), n_i its train-split size (`base.train_size`: ReCoRD counts
its one-example-per-answer expansion, 138,854) and K = 2**19 = 524,288. Tasks without a train
split (eval-only twins) get rate 0 and are evaluated, not trained on.

    spot_glue_mixture               the 8 GLUE tasks SPoT reports (no WNLI)
    spot_super_glue_mixture         the 8 SuperGLUE tasks, WSC as T5 trains it: the simple
                                    train variant (259) + its eval twin (rate 0)
    spot_glue_super_glue_mixture    both (RTE appears in each benchmark; both copies are kept)
    spot_<family>_mixture           SPoT's other source families (paper App. B): nli,
                                    paraphrase, sentiment, mrqa, summarization,
                                    translation, rainbow, gem
    spot_all_mixture                the paper's "All": C4 prefix LM + every supervised task of
                                    the mixtures above, each once
    spot_glue_mnli_and_dev_v200     SPoT's MNLI mixture: train on MNLI, eval on both dev sets

`STUDY_SOURCES` and `STUDY_TARGETS` name the transferability study's tasks (paper §3, Table 2:
16 sources, each trained on its own, and 10 low-resource targets).

CR, αNLI and CxC are read from their published files (`tasks.files`: a mixture holding them
needs the files, or mock data). WikiLingua is GEM's `gem/wiki_lingua_english_en`; GEM's XSum
subset and the summarization family's full XSum are both in "All".

`register_mixture(name, task_names, cap)` builds one from any tasks at run time (SPoT's
top-k multi-task transfer mixes the retrieved source tasks this way). A mixture can also be
named by its tasks, `spot_mix__<task>__<task>...` (`mixture_name`): the pipeline registers such
a name on first use, so a run's config.gin alone reproduces its data.
"""

from __future__ import annotations

from collections.abc import Sequence

import seqio

from spot_jax.data import config
from spot_jax.data.tasks import (
    base,
    c4,
    files,
    gem,
    glue,
    nli,
    qa,
    rainbow,
    reading,
    sentiment,
    summarization,
    super_glue,
    translation,
)

DEFAULT_CAP = 2**19

GLUE_TASKS = tuple(glue.task_name(t) for t in glue.TASKS if t != "wnli")
# T5's SuperGLUE mixture: WSC in its simple (generate the referent) form, not True/False.
SUPER_GLUE_TASKS = (
    *(super_glue.task_name(t) for t in super_glue.TASKS if t != "wsc"),
    super_glue.WSC_SIMPLE_TRAIN,
    super_glue.WSC_SIMPLE_EVAL,
)
# SPoT's families (paper App. B); ANLI's three rounds.
FAMILY_TASKS = {
    "nli": (
        *(nli.anli_task_name(r) for r in nli.ANLI_ROUNDS),
        super_glue.task_name("cb"),
        nli.doc_nli_task_name(),
        glue.task_name("mnli"),
        glue.task_name("qnli"),
        glue.task_name("rte"),
        nli.snli_task_name(),
    ),
    "paraphrase": (files.CXC_NAME, *(glue.task_name(t) for t in ("mrpc", "qqp", "stsb"))),
    "sentiment": (
        sentiment.goemotions_spec().name,
        sentiment.sentiment140_spec().name,
        glue.task_name("sst2"),
        sentiment.task_name("yelp_polarity_reviews"),
        files.CR_NAME,
    ),
    "mrqa": tuple(qa.mrqa_task_name(s) for s in qa.MRQA_IN_DOMAIN),
    "summarization": tuple(summarization.task_name(t) for t in summarization.TASKS),
    "translation": tuple(translation.task_name(p) for p in translation.PAIRS),
    "rainbow": (files.ALPHA_NLI_NAME, *(rainbow.task_name(t) for t in rainbow.TASKS)),
    "gem": tuple(gem.task_name(c) for c in gem.TASKS),
}
# The paper's "All": C4 (prefix LM, SPoT's C4 source) and every supervised task, once each.
ALL_TASKS = (
    c4.PREFIX_LM_NAME,
    *dict.fromkeys(
        GLUE_TASKS + SUPER_GLUE_TASKS + tuple(t for ts in FAMILY_TASKS.values() for t in ts)
    ),
)
# The transferability study (paper §3, Table 2's order): 16 source tasks and 10 targets.
# RACE's 25K is RACE-middle's train set.
STUDY_SOURCES = (
    c4.PREFIX_LM_NAME,
    nli.doc_nli_task_name(),
    sentiment.task_name("yelp_polarity_reviews"),
    glue.task_name("mnli"),
    glue.task_name("qqp"),
    glue.task_name("qnli"),
    super_glue.task_name("record"),
    files.CXC_NAME,
    qa.SQUAD_NAME,
    reading.DROP_NAME,
    glue.task_name("sst2"),
    rainbow.task_name("winogrande"),
    rainbow.task_name("hellaswag"),
    super_glue.task_name("multirc"),
    rainbow.task_name("cosmos_qa"),
    reading.race_task_name("middle"),
)
STUDY_TARGETS = (
    super_glue.task_name("boolq"),
    glue.task_name("cola"),
    glue.task_name("stsb"),
    super_glue.task_name("wic"),
    files.CR_NAME,
    glue.task_name("mrpc"),
    glue.task_name("rte"),
    super_glue.task_name("wsc"),
    super_glue.task_name("copa"),
    super_glue.task_name("cb"),
)
MIXTURES = {
    "spot_glue_mixture": GLUE_TASKS,
    "spot_super_glue_mixture": SUPER_GLUE_TASKS,
    "spot_glue_super_glue_mixture": GLUE_TASKS + SUPER_GLUE_TASKS,
    **{f"spot_{family}_mixture": names for family, names in FAMILY_TASKS.items()},
    "spot_all_mixture": ALL_TASKS,
    "spot_glue_mnli_and_dev_v200": tuple(glue.SPOT_MNLI_TASKS),
}


def examples_proportional_rate(task_name: str, cap: int = DEFAULT_CAP) -> float:
    """min(train examples, cap) for one task (see `base.train_size` for the sizes); 0 for a
    task without a train split (an eval-only member, as T5 weighs its WSC eval twin)."""
    if "train" not in seqio.get_mixture_or_task(task_name).splits:
        return 0.0
    return float(min(base.train_size(task_name), cap))


def rates(mixture_name: str) -> dict[str, float]:
    """The (unnormalised) sampling rate of each task of a registered mixture."""
    mixture = seqio.get_mixture_or_task(mixture_name)
    return {task.name: float(mixture.get_rate(task)) for task in mixture.tasks}


# What each mixture registered here was built from: name -> (task names, cap).
_REGISTERED: dict[str, tuple[tuple[str, ...], int]] = {}


class _CappedRate:
    """A picklable, printable rate function: min(train size, cap)."""

    def __init__(self, cap: int):
        self.cap = cap

    def __call__(self, task: seqio.Task) -> float:
        return examples_proportional_rate(task.name, self.cap)

    def __repr__(self) -> str:
        return f"examples_proportional(cap={self.cap})"


def register_mixture(name: str, task_names: Sequence[str], cap: int = DEFAULT_CAP) -> seqio.Mixture:
    """Registers an examples-proportional mixture of `task_names` (rates min(n_i, cap)).

    Registering the same name again with the same tasks returns the existing mixture; with
    different tasks or cap it replaces it.

    Raises:
        ValueError: if a task is not registered.
    """
    if any(t not in seqio.TaskRegistry.names() for t in task_names):
        from spot_jax.data import tasks

        tasks.register_all()
    unknown = [t for t in task_names if t not in seqio.TaskRegistry.names()]
    if unknown:
        raise ValueError(f"Cannot mix unregistered tasks {unknown}.")
    if name in seqio.MixtureRegistry.names():
        if _REGISTERED.get(name) == (tuple(task_names), cap):
            return seqio.MixtureRegistry.get(name)
        seqio.MixtureRegistry.remove(name)
    _REGISTERED[name] = (tuple(task_names), cap)
    return seqio.MixtureRegistry.add(name, list(task_names), default_rate=_CappedRate(cap))


MIX_PREFIX = config.MIX_PREFIX


def mixture_name(task_names: Sequence[str]) -> str:
    """The self-describing name of the default-cap mixture of `task_names`."""
    if any("__" in t for t in task_names):
        raise ValueError(f"task names with '__' cannot be named in a mixture: {task_names}")
    return MIX_PREFIX + "__".join(task_names)


def resolve(name: str) -> str | None:
    """Registers a `spot_mix__...` name as the mixture of its tasks; None for other names."""
    if not name.startswith(MIX_PREFIX):
        return None
    from spot_jax.data.tasks import few_shot

    task_names = name[len(MIX_PREFIX) :].split("__")
    for task in task_names:
        if task not in seqio.TaskRegistry.names():
            few_shot.resolve(task)
    register_mixture(name, task_names)
    return name


def register() -> list[str]:
    """Registers SPoT's default mixtures."""
    for name, task_names in MIXTURES.items():
        register_mixture(name, task_names)
    return list(MIXTURES)


register()
