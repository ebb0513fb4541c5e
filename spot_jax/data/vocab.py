"""Vocabularies of the T5 1.1 models and of the smoke-test tasks.

Both are SeqIO vocabularies (TF inside), so this module sits behind the TF fence and is
only imported by task definitions and tools, never by the training core.
"""

from __future__ import annotations

import os

import seqio

# T5 1.1's SentencePiece model: 32000 pieces + 100 sentinel ids (models pad to 32128).
DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
# Lets offline machines point at a local copy without editing gin files.
VOCAB_ENV_VAR = "SPOT_JAX_VOCAB"
DEFAULT_EXTRA_IDS = 100


def vocabulary_path(path: str | None = None) -> str:
    """The SentencePiece model to use: `path`, else $SPOT_JAX_VOCAB, else T5's public one."""
    return path or os.environ.get(VOCAB_ENV_VAR) or DEFAULT_SPM_PATH


def get_vocabulary(
    path: str | None = None, extra_ids: int = DEFAULT_EXTRA_IDS
) -> seqio.SentencePieceVocabulary:
    """T5's SentencePiece vocabulary (ids: 0 pad, 1 EOS, 2 UNK).

    SeqIO reads the model file lazily, on first encode/decode, so building tasks does not
    need the file to be reachable.

    Args:
        path: SentencePiece model file; see `vocabulary_path` for the fallbacks.
        extra_ids: sentinel ids appended after the pieces (T5 uses 100).

    Returns:
        A `seqio.SentencePieceVocabulary`.
    """
    return seqio.SentencePieceVocabulary(vocabulary_path(path), extra_ids=extra_ids)


def byte_vocabulary() -> seqio.ByteVocabulary:
    """UTF-8 bytes as ids 3..258 (0 pad, 1 EOS, 2 UNK); needs no model file."""
    return seqio.ByteVocabulary()
