"""PPT's multiple-choice pre-training formats (Gu et al. 2022): next-sentence selection.

    mc       NSS: which of 6 options neighbours the query sentence
             'query ? A. o1. B. o2. ... F. o6. ? The correct one is <extra_id_0>'
             -> '<extra_id_0> C'
    unified  Unified PPT: the same task with n options, n uniform in 2..16 per document

Every sentence of a document is a query, as in PPT's preprocessing (`queries='one'` takes one
per document). The answer is a neighbour of the query: the next sentence or the previous one,
half and half (the only one at either end of the document). The distractors follow PPT's
layout for n (`layout`): some sentences of the query's own document that are neither the query
nor one of its neighbours, and the rest from 4 other documents of the block, spread evenly.
Query and options are cut to PPT's per-n token budgets, which shrink as n grows so that 16
options still fit a 512-token input. A `cut` function applies a budget: the corpus tasks count
the model's tokens as PPT does (`token_cutter`: the first n SentencePiece pieces), plain calls
count words (`word_cutter`, `WORDS_PER_TOKEN` about what T5's SentencePiece gives English
text); the tasks cut any overflow from the front of the input (`tasks.ppt`), so the options and
`<extra_id_0>` always survive.

Determinism: as for every PPT builder, the choices for document number g of the stream come
from `np.random.default_rng([seed, g])` (see `spot_jax.data.ppt`).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from spot_jax.data.ppt import MASK, Example, neighbour, seeded_documents

OPTION_LETTERS = string.ascii_uppercase[:16]
MC_NUM_OPTIONS = 6
UNIFIED_NUM_OPTIONS = (2, 16)
OTHER_DOCUMENTS = 4  # PPT reads the distractors of a document from 4 other documents
WORDS_PER_TOKEN = 0.75


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an n-option example is built.

    Attributes:
        query_tokens: the query's budget.
        option_tokens: each option's budget.
        same_document: distractors from the query's document (never the query or a neighbour).
        other_documents: distractors from each of the other documents.
    """

    query_tokens: int
    option_tokens: int
    same_document: int
    other_documents: tuple[int, ...]

    @property
    def num_options(self) -> int:
        return 1 + self.same_document + sum(self.other_documents)


# PPT's NSS data: 1 neighbour, 1 sentence of the same document, 1 from each of 4 others.
NSS_LAYOUT = Layout(389, 86, 1, (1, 1, 1, 1))
# Unified PPT's (query, option) token budgets by option count: (n_low, n_high, query, option).
_UNIFIED_BUDGETS = (
    (2, 4, 400, 50), (5, 5, 400, 40), (6, 6, 300, 40), (7, 7, 250, 30), (8, 9, 200, 30),
    (10, 16, 150, 20),
)  # fmt: skip


def layout(num_options: int) -> Layout:
    """Unified PPT's layout for n options: 1, 2 or 3 same-document distractors (n <= 6, <= 10,
    more) and the others spread over 4 other documents, the first ones taking one more."""
    if not 2 <= num_options <= len(OPTION_LETTERS):
        raise ValueError(f"num_options must lie in 2..{len(OPTION_LETTERS)}, got {num_options}")
    query, option = next((q, o) for lo, hi, q, o in _UNIFIED_BUDGETS if lo <= num_options <= hi)
    same = 1 if num_options <= 6 else 2 if num_options <= 10 else 3
    rest = num_options - 1 - same
    spread = tuple(rest // OTHER_DOCUMENTS + (k < rest % OTHER_DOCUMENTS) for k in range(4))
    return Layout(query, option, same, spread)


def mc_template(query: str, options: Sequence[str], mask: str = MASK) -> str:
    """PPT's multiple-choice input: 'query ? A. o1. B. o2. ? The correct one is <X>'."""
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"2 to {len(OPTION_LETTERS)} options, got {len(options)}")
    listed = " ".join(
        f"{letter}. {option.rstrip('.!?')}."
        for letter, option in zip(OPTION_LETTERS[: len(options)], options, strict=True)
    )
    return f"{query.rstrip('.!?')} ? {listed} ? The correct one is {mask}"


# (text, token budget) -> the text cut to the budget.
Cutter = Callable[[str, int], str]


def word_cutter(words_per_token: float = WORDS_PER_TOKEN) -> Cutter:
    """Budgets in words: the first `budget * words_per_token` words (at least one)."""

    def cut(text: str, tokens: int) -> str:
        return " ".join(text.split()[: max(1, int(tokens * words_per_token))])

    return cut


def token_cutter(vocabulary: Any) -> Cutter:
    """Budgets in the model's tokens, as PPT cuts (`encode(text)[:budget]`): the text of the
    first `budget` pieces of a SeqIO vocabulary (anything with `encode` and `decode`)."""

    def cut(text: str, tokens: int) -> str:
        ids = vocabulary.encode(text)
        return text if len(ids) <= tokens else vocabulary.decode(list(ids[:tokens])).strip()

    return cut


def _sample(rng: np.random.Generator, items: Sequence, k: int) -> list:
    return [items[j] for j in rng.choice(len(items), k, replace=False)] if k else []


def mc_examples(
    docs: Iterable[Sequence[str]],
    *,
    seed: int = 0,
    num_options: int | tuple[int, int] = MC_NUM_OPTIONS,
    pool_size: int = 32,
    queries: str = "every",
    min_sentences: int | None = None,
    cut: Cutter | None = None,
    mask: str = MASK,
) -> Iterator[Example]:
    """Next-sentence selection: which option neighbours the query sentence.

    Args:
        docs: documents as sentence lists, in a fixed order.
        seed: seed of every choice.
        num_options: 6 (PPT's NSS, `NSS_LAYOUT`), another fixed count, or an inclusive
            (low, high) range drawn uniformly per document (Unified PPT: (2, 16)); counts other
            than NSS's follow `layout(n)`.
        pool_size: documents per block (the other documents come from it).
        queries: 'every' sentence of a document is a query (PPT), or 'one' per document.
        min_sentences: shorter documents are skipped (PPT: 5 for NSS, 6 for Unified PPT, the
            default by `num_options`).
        cut: applies PPT's token budgets to the query and options (default `word_cutter()`).
        mask: the mask token `<X>`.

    Returns:
        Examples `{'inputs': template, 'targets': '<X> LETTER', 'label': option index,
        'num_options': n}`. A document whose block lacks other documents long enough for the
        layout is skipped, and so is a query whose answer's text reappears among the
        distractors (it would have two right answers).
    """
    low, high = (num_options, num_options) if isinstance(num_options, int) else num_options
    if not 2 <= low <= high <= len(OPTION_LETTERS):
        raise ValueError(f"num_options must lie in 2..{len(OPTION_LETTERS)}, got {num_options}")
    if queries not in ("every", "one"):
        raise ValueError(f"queries must be 'every' or 'one', got {queries!r}")
    nss = num_options == MC_NUM_OPTIONS
    cut = cut or word_cutter()
    min_sentences = (5 if nss else 6) if min_sentences is None else min_sentences
    for block, i, doc, rng in seeded_documents(docs, pool_size, seed, min_sentences):
        shape = NSS_LAYOUT if nss else layout(int(rng.integers(low, high + 1)))
        others = _other_documents(block, i, shape, rng)
        if others is None:
            continue
        option_tokens = shape.option_tokens
        positions = range(len(doc)) if queries == "every" else [int(rng.integers(len(doc)))]
        for q in positions:
            p = neighbour(q, len(doc), rng)
            apart = [j for j in range(len(doc)) if abs(j - q) >= 2]
            if len(apart) < shape.same_document:
                continue
            answer = cut(doc[p], option_tokens)
            same = _sample(rng, apart, shape.same_document)
            distractors = [cut(doc[j], option_tokens) for j in same]
            for other, count in others:
                distractors += [cut(s, option_tokens) for s in _sample(rng, other, count)]
            if answer in distractors:
                continue
            options = [answer, *distractors]
            order = rng.permutation(len(options))
            label = int(np.flatnonzero(order == 0)[0])
            yield {
                "inputs": mc_template(
                    cut(doc[q], shape.query_tokens),
                    [options[k] for k in order],
                    mask,
                ),
                "targets": f"{mask} {OPTION_LETTERS[label]}",
                "label": label,
                "num_options": len(options),
            }


def _other_documents(block, i: int, shape: Layout, rng: np.random.Generator):
    """(document, count) for each of the layout's other documents that gives distractors:
    distinct documents of the block, each with at least `count` sentences; None when the block
    has too few."""
    candidates = [j for j in range(len(block)) if j != i]
    picked = []
    for count in (c for c in shape.other_documents if c):
        fits = [j for j in candidates if len(block[j]) >= count]
        if not fits:
            return None
        j = fits[int(rng.integers(len(fits)))]
        candidates.remove(j)
        picked.append((block[j], count))
    return picked
