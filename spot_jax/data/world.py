"""The task world: a seeded, download-free family of text-to-text tasks for the demo.

Four families, four tasks each; tasks of one family share their input format and latent
structure (one lexicon, one rule) and differ in domain words and label words, so a prompt must
learn *which* task it serves, and prompts of one family should look alike:

    sentiment   'review: the soup was tasty and fresh'              -> a label word (per task)
    topic       'text: the coach saw a goal near the stadium'       -> a topic word (per task)
    nli         'premise: a dog sleeps hypothesis: an animal sleeps' -> a label word (per task)
    extract     'context: anna bought a red cup in paris on monday'  -> one slot (per task)

In each family the last task is a held-out *target* (never in pretraining or the library); the
others are *sources*. Inputs carry no task word (the prompt stands in for it); `with_task_word`
gives the prefixed form that the backbone's multi-task pretraining reads.

Pure Python/numpy (no TF): SeqIO registration is in `spot_jax/data/tasks/world.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable

import numpy as np

DEFAULT_SEED = 20220522
SPLIT_SIZES = {"train": 1024, "validation": 128}
_ADJ = {
    "pos": "tasty fresh lovely superb pleasant charming brilliant delightful".split(),
    "neg": "bland stale dreadful awful dull broken noisy horrible".split(),
}
_DOMAINS = {
    "food": "soup pasta salad bread cake curry pizza steak".split(),
    "movie": "film plot script ending actor scene score cast".split(),
    "hotel": "room bed lobby pool staff view breakfast shower".split(),
    "gadget": "phone laptop screen battery camera charger speaker tablet".split(),
}
_TOPICS = {
    "sport": "coach goal stadium team match player referee ball".split(),
    "science": "atom laboratory theory experiment molecule cell physics telescope".split(),
    "music": "guitar melody concert singer drum album chorus piano".split(),
    "cooking": "oven recipe kitchen spoon flour sauce chef pan".split(),
    "travel": "airport ticket train luggage passport island map tourist".split(),
}
_ADVERBS = "really quite very rather".split()
_VERBS = "saw liked found noticed mentioned described".split()
_PLACES = "near beside behind inside".split()
# NLI lexicons: hypernym -> hyponyms.
_HYPERNYMS = {
    "animals": {"animal": "dog cat horse cow", "bird": "sparrow eagle crow owl"},
    "plants": {"flower": "rose tulip lily daisy", "tree": "oak pine maple birch"},
    "vehicles": {"vehicle": "car bus truck van", "boat": "canoe yacht ferry raft"},
    "tools": {"tool": "hammer saw drill wrench", "utensil": "fork knife ladle whisk"},
}
_ACTIONS = "sleeps moves waits appears rests stands".split()
_MODIFIERS = "small big old young grey brown tiny large".split()
_WHERE = "outside indoors nearby today there again".split()
_SLOTS = {
    "person": "anna boris carla dmitri elena farid greta hugo".split(),
    "color": "red blue green yellow purple orange white black".split(),
    "city": "paris tokyo lima cairo oslo delhi rome quito".split(),
    "day": "monday tuesday wednesday thursday friday saturday sunday weekend".split(),
}
_OBJECTS = "cup lamp chair book clock vase rug kettle".split()


@dataclasses.dataclass(frozen=True)
class WorldTask:
    """One task of the world.

    Attributes:
        name: the task name, `world_<family>_<variant>` (also its SeqIO name).
        family: the family label (what similarity should recover).
        role: 'source' (library, pretraining) or 'target' (held out).
        labels: the answer words of a classification task, or () for extraction.
        make: rng -> (inputs, targets): one example.
    """

    name: str
    family: str
    role: str
    labels: tuple[str, ...]
    make: Callable[[np.random.Generator], tuple[str, str]]


def _pick(rng: np.random.Generator, words) -> str:
    return words[int(rng.integers(len(words)))]


def _sentiment(domain: str, labels: tuple[str, str]):
    def make(rng):
        polarity = int(rng.integers(2))
        adjs = _ADJ["pos" if polarity == 0 else "neg"]
        a, b = rng.choice(len(adjs), size=2, replace=False)
        noun = _pick(rng, _DOMAINS[domain])
        adv = _pick(rng, _ADVERBS)
        return f"review: the {noun} was {adv} {adjs[a]} and {adjs[b]}", labels[polarity]

    return make


def _topic(topics: tuple[str, ...], labels: tuple[str, ...]):
    def make(rng):
        k = int(rng.integers(len(topics)))
        words = rng.choice(_TOPICS[topics[k]], size=3, replace=False)
        verb, place = _pick(rng, _VERBS), _pick(rng, _PLACES)
        return f"text: the {words[0]} {verb} a {words[1]} {place} the {words[2]}", labels[k]

    return make


def _nli(domain: str, labels: tuple[str, str]):
    lexicon = {h: s.split() for h, s in _HYPERNYMS[domain].items()}
    hypernyms = list(lexicon)

    def make(rng):
        h = _pick(rng, hypernyms)
        noun, act = _pick(rng, lexicon[h]), _pick(rng, _ACTIONS)
        mod, where = _pick(rng, _MODIFIERS), _pick(rng, _WHERE)
        entailed = int(rng.integers(2)) == 0
        if entailed:
            hyp_noun, hyp_act = h, act
        elif rng.integers(2):  # the other hypernym: a category mistake
            hyp_noun, hyp_act = _pick(rng, [x for x in hypernyms if x != h]), act
        else:  # the right category, another action
            hyp_noun, hyp_act = h, _pick(rng, [a for a in _ACTIONS if a != act])
        text = f"premise: a {mod} {noun} {act} {where} hypothesis: a {hyp_noun} {hyp_act} {where}"
        return text, labels[0 if entailed else 1]

    return make


def _extract(slot: str):
    def make(rng):
        v = {s: _pick(rng, words) for s, words in _SLOTS.items()}
        obj = _pick(rng, _OBJECTS)
        text = f"context: {v['person']} bought a {v['color']} {obj} in {v['city']} on {v['day']}"
        return text, v[slot]

    return make


def _task_table() -> list[WorldTask]:
    """The world's tasks; in each family the last one is the held-out target."""
    t: list[WorldTask] = []
    for domain, labels, role in (
        ("food", ("positive", "negative"), "source"),
        ("movie", ("good", "bad"), "source"),
        ("gadget", ("yes", "no"), "source"),
        ("hotel", ("good", "bad"), "target"),
    ):
        t.append(WorldTask(f"world_sentiment_{domain}", "sentiment", role, labels,
                           _sentiment(domain, labels)))  # fmt: skip
    for variant, topics, labels, role in (
        ("names", ("sport", "science", "music"), ("sport", "science", "music"), "source"),
        ("codes", ("music", "cooking", "travel"), ("alpha", "beta", "gamma"), "source"),
        ("pairs", ("sport", "travel"), ("first", "second"), "source"),
        ("mixed", ("science", "cooking", "travel"), ("alpha", "beta", "gamma"), "target"),
    ):
        t.append(WorldTask(f"world_topic_{variant}", "topic", role, labels,
                           _topic(topics, labels)))  # fmt: skip
    for domain, labels, role in (
        ("animals", ("entailment", "not_entailment"), "source"),
        ("plants", ("true", "false"), "source"),
        ("vehicles", ("yes", "no"), "source"),
        ("tools", ("entailment", "not_entailment"), "target"),
    ):
        t.append(WorldTask(f"world_nli_{domain}", "nli", role, labels, _nli(domain, labels)))
    for slot, role in (("color", "source"), ("city", "source"), ("day", "source"),
                       ("person", "target")):  # fmt: skip
        t.append(WorldTask(f"world_extract_{slot}", "extract", role, (), _extract(slot)))
    return t


@dataclasses.dataclass(frozen=True)
class World:
    """All tasks and their examples, fixed by `seed`.

    Attributes:
        seed: what fixes every example and split.
        tasks: name -> task, in family order.
        split_sizes: examples per split of every task.
    """

    seed: int
    tasks: dict[str, WorldTask]
    split_sizes: dict[str, int]

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(t.family for t in self.tasks.values()))

    def names(self, role: str | None = None) -> list[str]:
        """Task names, in family order; only 'source' or 'target' ones when `role` is given."""
        return [n for n, t in self.tasks.items() if role is None or t.role == role]

    def family(self, name: str) -> str:
        return self.task(name).family

    def task(self, name: str) -> WorldTask:
        if name not in self.tasks:
            raise ValueError(f"no world task {name!r}; world tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def examples(self, name: str, split: str) -> list[tuple[str, str]]:
        """`(inputs, targets)` pairs of one split; train and validation never share an input."""
        if split not in self.split_sizes:
            raise ValueError(f"world tasks have splits {list(self.split_sizes)}, not {split!r}")
        return list(_examples(self.seed, name, tuple(self.split_sizes.items()))[split])

    def with_task_word(self, name: str, inputs: str) -> str:
        """The input led by its task words, '<family> <variant>:', as T5 writes multi-task
        inputs (e.g. 'sentiment food: review: ...'); tasks of a family share the first word."""
        family, variant = name.removeprefix("world_").split("_", 1)
        return f"{family} {variant}: {inputs}"

    def unlabeled_text(self) -> list[str]:
        """Inputs of every source task's train split: the backbone's pretraining text.

        A family's tasks share their input distribution, so a source input can also be a
        target's input; those are dropped, so no target example (of any split) reaches the
        backbone, only the shared lexicon does.
        """
        return [x for n in self.names("source") for x, _ in self.pretraining_examples(n)]

    def pretraining_examples(self, name: str) -> list[tuple[str, str]]:
        """A source's train examples minus those whose input is also a target's input."""
        if self.task(name).role != "source":
            raise ValueError(f"{name} is a held-out target; it never enters pretraining")
        held_out = _target_inputs(self.seed, tuple(self.split_sizes.items()))
        return [(x, y) for x, y in self.examples(name, "train") if x not in held_out]

    def corpus(self) -> list[str]:
        """Every input (with and without task words) and target of every task: the text the
        vocabulary is trained on."""
        pairs = [(n, p) for n in self.tasks for split in self.split_sizes
                 for p in self.examples(n, split)]  # fmt: skip
        return [s for n, (x, y) in pairs for s in (x, self.with_task_word(n, x), y)]


@functools.lru_cache(maxsize=64)
def _examples(seed: int, name: str, sizes: tuple[tuple[str, int], ...]):
    """Distinct examples of a task, split in order; seeded by (world seed, task name)."""
    task = {t.name: t for t in _task_table()}[name]
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    total = sum(n for _, n in sizes)
    seen: dict[str, str] = {}
    for _ in range(50 * total):
        x, y = task.make(rng)
        seen.setdefault(x, y)
        if len(seen) == total:
            break
    else:  # a task whose space of inputs is too small for the split sizes
        raise ValueError(f"world task {name} has only {len(seen)} distinct inputs, needs {total}")
    pairs, out, start = list(seen.items()), {}, 0
    for split, n in sizes:
        out[split] = tuple(pairs[start : start + n])
        start += n
    return out


@functools.lru_cache(maxsize=8)
def _target_inputs(seed: int, sizes: tuple[tuple[str, int], ...]) -> frozenset[str]:
    targets = [t.name for t in _task_table() if t.role == "target"]
    return frozenset(x for n in targets for pairs in _examples(seed, n, sizes).values()
                     for x, _ in pairs)  # fmt: skip


def build_world(seed: int = DEFAULT_SEED, split_sizes: dict[str, int] | None = None) -> World:
    """The world of `seed`: 16 tasks in 4 families, 12 sources and 4 held-out targets."""
    sizes = dict(split_sizes or SPLIT_SIZES)
    return World(seed, {t.name: t for t in _task_table()}, sizes)


# ---------------------------------------------------------------------------------------------
# Vocabulary: a small SentencePiece model of the world's text.

VOCAB_PIECES = 512
VOCAB_VERSION = 2
EXTRA_IDS = 32  # sentinels for span corruption, at the top of the id range as in T5


def train_vocabulary(world: World, path, pieces: int = VOCAB_PIECES) -> None:
    """Trains a word-level SentencePiece model on the world's corpus and writes it to `path`.

    T5's id layout: 0 pad, 1 EOS, 2 UNK, no BOS; sentinels are added on top by the vocabulary
    (`seqio.SentencePieceVocabulary(path, extra_ids=EXTRA_IDS)` or `sentinel_id`).
    """
    import io
    import pathlib

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(world.corpus()),
        model_writer=model,
        vocab_size=pieces,
        model_type="word",  # a closed lexicon: one id per word keeps sequences short
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,  # same pieces on every machine
        minloglevel=2,
    )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}")
    tmp.write_bytes(model.getvalue())
    tmp.rename(path)  # atomic: concurrent builders never see half a model


def sentinel_id(vocab_size: int, i: int) -> int:
    """Id of sentinel i (<extra_id_i>) in a vocabulary of `vocab_size` ids, as in seqio."""
    return vocab_size - 1 - i


CACHE_ENV_VAR = "SPOT_JAX_CACHE"


def cache_root(cache_dir=None):
    """Where the world's derived files live: `cache_dir`, $SPOT_JAX_CACHE or ~/.cache/spot_jax."""
    import os
    import pathlib

    root = cache_dir or os.environ.get(CACHE_ENV_VAR) or pathlib.Path.home() / ".cache/spot_jax"
    return pathlib.Path(root) / "world"


def vocabulary_name(seed: int) -> str:
    """The vocabulary's cache file name; the version changes whenever the corpus does."""
    return f"vocab-v{VOCAB_VERSION}-seed{seed}-{VOCAB_PIECES}.model"


def vocabulary_file(world: World, cache_dir=None):
    """The world's SentencePiece model file, trained on first use and cached by world seed."""
    path = cache_root(cache_dir) / vocabulary_name(world.seed)
    if not path.exists():
        train_vocabulary(world, path)
    return path
