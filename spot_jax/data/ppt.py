"""PPT's pre-training formats (Gu et al. 2022) built from plain documents (pure Python/numpy).

A corpus is a stream of documents; `SentenceSplitter` cuts each into sentences, and the
builders below turn a stream of sentence lists into text-to-text examples, each
`{'inputs': str, 'targets': str, 'label': int}`, in PPT's templates with T5's sentinel as the
mask `<X>` (T5 ids of the label words: yes 4273, maybe 2087, no 150, as in PPT's code):

    nsp3     sentence pair, 3-way next-sentence prediction
             's1 <extra_id_0> s2' -> '<extra_id_0> yes|maybe|no'
             (neighbouring sentences | same document, not neighbours | another document)
    mc       next-sentence selection among 6 options (`spot_jax.data.ppt_choice`)
             'query ? A. o1. B. o2. ... F. o6. ? The correct one is <extra_id_0>'
             -> '<extra_id_0> C'
    unified  the same with 2..16 options (Unified PPT's one format for all)
    cls      single sentence, pseudo-labelled by a user's labeler
             's <extra_id_0>' -> '<extra_id_0> terrible|bad|maybe|good|great'

As in PPT's preprocessing, every sentence of a document is a query (s1) of nsp3, mc and
unified; `queries='one'` takes one per document instead.

Determinism: documents are processed in blocks of `pool_size`; "other document" sentences come
from the other documents of the block, and every choice for the document number g of the
stream uses `np.random.default_rng([seed, g])`, so the k-th example of a stream is a fixed
thing (resume skips batches and relies on it). NSP labels stay balanced by default: each
example takes the least-used label it can have (`label_draw='random'` draws them as PPT does).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

MASK = "<extra_id_0>"
NSP_LABEL_WORDS = ("yes", "maybe", "no")  # adjacent, same document, other document
SENTIMENT_LABEL_WORDS = ("terrible", "bad", "maybe", "good", "great")
FORMATS = ("nsp3", "mc", "unified", "cls")

Example = dict[str, object]
# A labeler maps a batch of sentences to class ids; -1 drops the sentence (e.g. low confidence).
Labeler = Callable[[Sequence[str]], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class SentenceSplitter:
    """Deterministic rule-based sentence splitting.

    A sentence ends at `end_pattern` (terminal punctuation, optional closing quotes, then
    whitespace) or at a line break, except after an abbreviation or a single-letter initial
    ('Dr. Smith', 'J. Doe'); sentences longer than `max_words` words are cut into chunks of
    `max_words` (so run-on text still fits TASK_FEATURE_LENGTHS), and shorter ones than
    `min_words` are dropped.

    Attributes:
        end_pattern: regex matching the gap between two sentences.
        min_words: shortest sentence kept.
        max_words: longest sentence; longer ones are chunked.
        abbreviations: words after which a period does not end a sentence.
    """

    end_pattern: str = r"(?<=[.!?])[ \t]+|(?<=[.!?][\"'\u201d\u2019)\]])[ \t]+|\s*\n\s*"
    min_words: int = 1
    max_words: int = 64
    abbreviations: tuple[str, ...] = (
        "Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "Jr.", "Sr.", "vs.", "etc.", "e.g.",
        "i.e.", "No.", "Inc.", "Ltd.", "Co.", "U.S.", "a.m.", "p.m.",
    )  # fmt: skip

    def __post_init__(self):
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(
                f"SentenceSplitter needs 1 <= min_words <= max_words, got {self.min_words} "
                f"and {self.max_words}"
            )

    def _continues(self, piece: str) -> bool:
        last = piece.rsplit(None, 1)[-1] if piece.strip() else ""
        return last in self.abbreviations or re.fullmatch(r"[A-Z]\.", last) is not None

    def __call__(self, text: str) -> list[str]:
        # Cut at every gap, except after an abbreviation (a line break always ends a sentence).
        pieces, current, start = [], "", 0
        for gap in re.finditer(self.end_pattern, text):
            current += text[start : gap.start()]
            start = gap.end()
            if "\n" in gap.group(0) or not self._continues(current):
                pieces.append(current)
                current = ""
            else:
                current += " "
        pieces.append(current + text[start:])
        sentences = []
        for piece in pieces:
            words = piece.split()
            for start in range(0, len(words), self.max_words):
                chunk = words[start : start + self.max_words]
                if len(chunk) >= self.min_words:
                    sentences.append(" ".join(chunk))
        return sentences


def documents(texts: Iterable[str], splitter: SentenceSplitter) -> Iterator[list[str]]:
    """Sentence lists of the texts; documents without a sentence are skipped."""
    for text in texts:
        sentences = splitter(text)
        if sentences:
            yield sentences


def blocks(docs: Iterable[Sequence[str]], pool_size: int) -> Iterator[list[Sequence[str]]]:
    """The documents in consecutive blocks of `pool_size` (the last may be shorter)."""
    if pool_size < 2:
        raise ValueError(f"pool_size must be >= 2 (other documents are needed), got {pool_size}")
    block: list[Sequence[str]] = []
    for doc in docs:
        block.append(doc)
        if len(block) == pool_size:
            yield block
            block = []
    if block:
        yield block


def seeded_documents(
    docs: Iterable[Sequence[str]], pool_size: int, seed: int, min_sentences: int
) -> Iterator[tuple[list[Sequence[str]], int, Sequence[str], np.random.Generator]]:
    """(block, index in the block, document, rng) of each document with at least
    `min_sentences` (and 2) sentences; document number g of the stream, skipped ones counted,
    draws from `np.random.default_rng([seed, g])`."""
    g = 0
    for block in blocks(docs, pool_size):
        for i, doc in enumerate(block):
            rng = np.random.default_rng([seed, g])
            g += 1
            if len(doc) >= max(min_sentences, 2):
                yield block, i, doc, rng


def _other_sentence(block, i: int, rng: np.random.Generator) -> str | None:
    others = [j for j in range(len(block)) if j != i]
    if not others:
        return None
    doc = block[others[rng.integers(len(others))]]
    return doc[rng.integers(len(doc))]


def nsp_pair(doc: Sequence[str], label: int, rng: np.random.Generator) -> tuple[str, str]:
    """The (s1, s2) pair of one document for label 0 (adjacent) or 1 (same doc, apart)."""
    n = len(doc)
    if label == 0:
        i = int(rng.integers(n - 1))
        pair = (doc[i], doc[i + 1])
        # PPT's "adjacent" is either neighbour: the previous sentence half of the time.
        return pair if rng.random() < 0.5 else pair[::-1]
    pairs = [(i, j) for i in range(n) for j in range(n) if abs(i - j) >= 2]
    i, j = pairs[rng.integers(len(pairs))]
    return doc[i], doc[j]


def neighbour(q: int, length: int, rng: np.random.Generator) -> int:
    """PPT's neighbour of sentence q: the next or the previous one, half and half (the only one
    at either end of the document)."""
    if q == 0:
        return 1
    if q == length - 1:
        return q - 1
    return q + 1 if rng.random() < 0.5 else q - 1


def nsp_examples(
    docs: Iterable[Sequence[str]],
    *,
    seed: int = 0,
    pool_size: int = 32,
    queries: str = "every",
    min_sentences: int = 5,
    label_words: Sequence[str] = NSP_LABEL_WORDS,
    mask: str = MASK,
    label_draw: str = "balanced",
) -> Iterator[Example]:
    """PPT's 3-way next-sentence prediction.

    Args:
        docs: documents as sentence lists, in a fixed order.
        seed: seed of every choice.
        pool_size: documents per block ("other document" sentences come from the block).
        queries: 'every' sentence of a document is a first sentence s1, paired with a neighbour
            (label 0), a sentence of the document two or more apart (1) or a sentence of another
            document (2), as in PPT's preprocessing; 'one' makes one example per document from
            any pair of its sentences (for corpora of short documents, e.g. the demo's).
        min_sentences: shorter documents are skipped (PPT: 5; 'one' accepts 2, and takes label
            1 from documents of 3 or more).
        label_words: the words of labels 0 adjacent, 1 same document, 2 other document.
        mask: the mask token `<X>` (T5's first sentinel; a vocabulary without sentinels,
            such as a demo's, passes its own).
        label_draw: 'balanced': each example takes the least-used label it can have (ties at
            random), so the labels stay balanced in every prefix of the stream; 'random':
            uniformly among those it can have, as PPT's preprocessing draws them.

    Returns:
        Examples `{'inputs': 's1 <X> s2', 'targets': '<X> word', 'label': 0|1|2}`.
    """
    if len(label_words) != 3:
        raise ValueError(f"nsp3 needs 3 label words, got {list(label_words)}")
    if queries not in ("every", "one"):
        raise ValueError(f"queries must be 'every' or 'one', got {queries!r}")
    if label_draw not in ("balanced", "random"):
        raise ValueError(f"label_draw must be 'balanced' or 'random', got {label_draw!r}")
    counts = [0, 0, 0]

    def pick(rng, possible):
        eligible = [label for label, ok in enumerate(possible) if ok]
        if label_draw == "balanced":
            fewest = min(counts[label] for label in eligible)
            eligible = [label for label in eligible if counts[label] == fewest]
        label = eligible[rng.integers(len(eligible))]
        counts[label] += 1
        return label

    for block, i, doc, rng in seeded_documents(docs, pool_size, seed, min_sentences):
        if queries == "one":
            label = pick(rng, (True, len(doc) >= 3, len(block) >= 2))
            if label == 2:
                pairs = [(doc[rng.integers(len(doc))], _other_sentence(block, i, rng))]
            else:
                pairs = [nsp_pair(doc, label, rng)]
            labels = [label]
        else:
            pairs, labels = [], []
            for q in range(len(doc)):
                apart = [j for j in range(len(doc)) if abs(j - q) >= 2]
                label = pick(rng, (True, bool(apart), len(block) >= 2))
                if label == 0:
                    s2 = doc[neighbour(q, len(doc), rng)]
                elif label == 1:
                    s2 = doc[apart[rng.integers(len(apart))]]
                else:
                    s2 = _other_sentence(block, i, rng)
                pairs.append((doc[q], s2))
                labels.append(label)
        for (s1, s2), label in zip(pairs, labels, strict=True):
            yield {
                "inputs": f"{s1} {mask} {s2}",
                "targets": f"{mask} {label_words[label]}",
                "label": label,
            }


def cls_examples(
    docs: Iterable[Sequence[str]],
    labeler: Labeler,
    *,
    label_words: Sequence[str] = SENTIMENT_LABEL_WORDS,
    batch_size: int = 64,
    mask: str = MASK,
) -> Iterator[Example]:
    """Single-sentence classification with pseudo labels: every sentence, labelled in batches.

    Args:
        docs: documents as sentence lists.
        labeler: sentences -> class ids in [0, len(label_words)), or -1 to drop a sentence.
        label_words: the word of each class (PPT: Yelp-5's terrible ... great).
        batch_size: sentences per labeler call.
        mask: the mask token `<X>`.

    Returns:
        Examples `{'inputs': 's <X>', 'targets': '<X> word', 'label': class id}`.

    Raises:
        ValueError: the labeler returned the wrong number of labels or an unknown class id.
    """
    batch: list[str] = []

    def flush():
        labels = [int(x) for x in labeler(list(batch))]
        if len(labels) != len(batch):
            raise ValueError(f"labeler returned {len(labels)} labels for {len(batch)} sentences")
        for sentence, label in zip(batch, labels, strict=True):
            if label == -1:
                continue
            if not 0 <= label < len(label_words):
                raise ValueError(
                    f"labeler returned class {label}; expected -1 or 0..{len(label_words) - 1} "
                    f"for label words {list(label_words)}"
                )
            yield {
                "inputs": f"{sentence} {mask}",
                "targets": f"{mask} {label_words[label]}",
                "label": label,
            }

    for doc in docs:
        for sentence in doc:
            batch.append(sentence)
            if len(batch) == batch_size:
                yield from flush()
                batch = []
    if batch:
        yield from flush()


def examples(
    fmt: str, docs: Iterable[Sequence[str]], *, seed: int = 0, **kwargs
) -> Iterator[Example]:
    """The builder of a format by name ('nsp3', 'mc', 'unified'; 'cls' needs `labeler=`)."""
    if fmt == "nsp3":
        return nsp_examples(docs, seed=seed, **kwargs)
    if fmt in ("mc", "unified"):
        # Imported here: ppt_choice builds on this module's blocks and neighbours.
        from spot_jax.data import ppt_choice

        if fmt == "unified":
            kwargs = {"num_options": ppt_choice.UNIFIED_NUM_OPTIONS, **kwargs}
        return ppt_choice.mc_examples(docs, seed=seed, **kwargs)
    if fmt == "cls":
        return cls_examples(docs, **kwargs)
    raise ValueError(f"unknown PPT format {fmt!r}; choose one of {', '.join(FORMATS)}")
