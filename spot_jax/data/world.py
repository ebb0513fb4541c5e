"""The task world: a seeded, download-free family of text-to-text tasks for the demo.

Every task reads the same kind of input, a one-line scene,

    'anna liked the tasty guitar in paris on monday'

and four families of tasks compute different things from it; tasks of one family share their
operation (the latent structure) and differ in label words or in the slot they read:

    sentiment   the adjective's polarity     positive/negative, good/bad, yes/no (is positive)
    topic       the noun's topic (lexicon)    topic names, code words, yes/no (is sport)
    extract     copy one slot                 the person, the city, the day
    lookup      a slot through a lexicon      city -> continent, day -> weekday/weekend, ...

Since the input is the same for all, the prompt alone says which operation to perform, so
prompts of one family should resemble each other. In each family the last task is a held-out
*target* (never in pretraining or the library), related to its family's sources:
'is the adjective negative?', 'is the topic music?', 'the object', 'is the city in europe?'.
Inputs carry no task word (the prompt stands in for it); `with_task_word` gives the prefixed
form ('sentiment polarity: ...') that the backbone's multi-task pretraining reads.

Pure Python/numpy (no TF): SeqIO registration is in `spot_jax/data/tasks/world.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

DEFAULT_SEED = 20220522
SPLIT_SIZES = {"train": 1024, "validation": 128}
_POLARITY = {
    "positive": "tasty fresh lovely superb pleasant charming brilliant delightful".split(),
    "negative": "bland stale dreadful awful dull broken noisy horrible".split(),
}
_TOPICS = {
    "sport": "ball racket helmet trophy jersey whistle medal bicycle".split(),
    "science": "atom microscope telescope molecule magnet battery crystal formula".split(),
    "music": "guitar piano drum violin album melody trumpet flute".split(),
    "cooking": "oven recipe spoon flour sauce kettle pan soup".split(),
}
_PEOPLE = {"female": "anna carla elena greta".split(), "male": "boris dmitri farid hugo".split()}
_CITIES = {
    "europe": "paris oslo rome madrid".split(),
    "asia": "tokyo delhi seoul hanoi".split(),
    "america": "lima quito boston denver".split(),
    "africa": "cairo lagos nairobi dakar".split(),
}
_DAYS = {"weekday": "monday tuesday wednesday thursday friday".split(),
         "weekend": "saturday sunday".split()}  # fmt: skip
_VERBS = "saw liked found noticed bought described".split()
_WEEK = [*_DAYS["weekday"], *_DAYS["weekend"]]  # calendar order: a document's days follow it
# PPT's sentence-pair label words (adjacent / same document / other document); 'maybe' is in
# no task, so the vocabulary adds it (see `train_vocabulary`).
PPT_LABEL_WORDS = ("yes", "maybe", "no")


def _invert(groups: dict[str, list[str]]) -> dict[str, str]:
    return {word: label for label, words in groups.items() for word in words}


_LEXICON = {
    "adjective": _invert(_POLARITY),
    "noun": _invert(_TOPICS),
    "person": _invert(_PEOPLE),
    "city": _invert(_CITIES),
    "day": _invert(_DAYS),
}


@dataclasses.dataclass(frozen=True)
class WorldTask:
    """One task of the world.

    Attributes:
        name: the task name, `world_<family>_<variant>` (also its SeqIO name).
        family: the family label (what similarity should recover).
        role: 'source' (library, pretraining) or 'target' (held out).
        slot: the scene slot the task reads.
        answer: maps the slot's category (`_LEXICON`) or, for extraction, its word to the
            answer word; None copies the word.
    """

    name: str
    family: str
    role: str
    slot: str
    answer: dict[str, str] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The answer words of a classification task; () for extraction."""
        return tuple(sorted(set(self.answer.values()))) if self.answer else ()

    def make(self, rng: np.random.Generator) -> tuple[str, str]:
        """One (scene, answer) example; a classification's answers are drawn uniformly first,
        so every label is equally common (no majority-class shortcut)."""
        scene = {slot: _pick(rng, sorted(words)) for slot, words in _LEXICON.items()}
        if self.answer is not None:
            label = _pick(rng, self.labels)
            lexicon = _LEXICON[self.slot]
            scene[self.slot] = _pick(
                rng, sorted(w for w in lexicon if self.answer[lexicon[w]] == label)
            )
        verb = _pick(rng, _VERBS)
        text = (f"{scene['person']} {verb} the {scene['adjective']} {scene['noun']} "
                f"in {scene['city']} on {scene['day']}")  # fmt: skip
        word = scene[self.slot]
        return text, word if self.answer is None else self.answer[_LEXICON[self.slot][word]]


def _pick(rng: np.random.Generator, words) -> str:
    return words[int(rng.integers(len(words)))]


def _yes_if(group: str, groups) -> dict[str, str]:
    return {g: "yes" if g == group else "no" for g in groups}


def _task_table() -> list[WorldTask]:
    """The world's 16 tasks; in each family the last one is the held-out target."""
    same = lambda groups: {g: g for g in groups}  # noqa: E731
    codes = dict(zip(_TOPICS, ("alpha", "beta", "gamma", "delta"), strict=True))
    spec = [
        ("sentiment", "polarity", "adjective", same(_POLARITY)),
        ("sentiment", "goodbad", "adjective", {"positive": "good", "negative": "bad"}),
        ("sentiment", "ispositive", "adjective", _yes_if("positive", _POLARITY)),
        ("sentiment", "isnegative", "adjective", _yes_if("negative", _POLARITY)),
        ("topic", "names", "noun", same(_TOPICS)),
        ("topic", "codes", "noun", codes),
        ("topic", "issport", "noun", _yes_if("sport", _TOPICS)),
        ("topic", "ismusic", "noun", _yes_if("music", _TOPICS)),
        ("extract", "person", "person", None),
        ("extract", "city", "city", None),
        ("extract", "day", "day", None),
        ("extract", "object", "noun", None),
        ("lookup", "continent", "city", same(_CITIES)),
        ("lookup", "weekend", "day", same(_DAYS)),
        ("lookup", "gender", "person", same(_PEOPLE)),
        ("lookup", "europe", "city", _yes_if("europe", _CITIES)),
    ]
    families = [s[0] for s in spec]
    return [
        WorldTask(
            f"world_{family}_{variant}",
            family,
            "target" if i + 1 == len(spec) or families[i + 1] != family else "source",
            slot,
            answer,
        )  # fmt: skip
        for i, (family, variant, slot, answer) in enumerate(spec)
    ]


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

    def documents(self, count: int, seed: int = 0, sizes: tuple[int, int] = (3, 6)):
        """Seeded multi-scene documents for PPT's formats: each follows one person in one city
        over consecutive days, so a scene's neighbour is the same person and city on the next
        or previous day, and another document's scene is (nearly always) someone elsewhere.

        Scenes are drawn only from `unlabeled_text()` (source train inputs minus every target
        input), so no target example of any split enters a document.

        Args:
            count: documents to make.
            seed: what fixes them (with the world's seed).
            sizes: inclusive (fewest, most) scenes per document; at most 7 (a week).

        Returns:
            `count` documents, each a list of scenes (sentences) in day order.
        """
        low, high = sizes
        if not 2 <= low <= high <= len(_WEEK):
            raise ValueError(f"document sizes must satisfy 2 <= low <= high <= 7, got {sizes}")
        pool: dict[tuple[str, str, str], list[str]] = {}
        for scene in dict.fromkeys(self.unlabeled_text()):
            words = scene.split()  # person verb the adjective noun in city on day
            pool.setdefault((words[0], words[6], words[8]), []).append(scene)
        rng = np.random.default_rng([self.seed, seed])
        places = sorted({(p, c) for p, c, _ in pool})
        docs = []
        while len(docs) < count:
            n = int(rng.integers(low, high + 1))
            person, city = places[int(rng.integers(len(places)))]
            start = int(rng.integers(len(_WEEK) - n + 1))
            days = _WEEK[start : start + n]
            if all((person, city, d) in pool for d in days):  # a gap in the pool: draw again
                docs.append([_pick(rng, pool[(person, city, d)]) for d in days])
        return docs

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
VOCAB_VERSION = 4  # 4: + PPT_LABEL_WORDS
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
    # PPT's label words once, at the end: a word-level model gives each the last ids (rarest),
    # so the tasks' words keep their pieces and ids.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*world.corpus(), " ".join(PPT_LABEL_WORDS)]),
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
