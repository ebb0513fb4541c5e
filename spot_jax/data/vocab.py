"""Vocabularies of the T5 1.1 models and of the smoke-test tasks.

Both are SeqIO vocabularies (TF inside), so this module sits behind the TF fence and is
only imported by task definitions and tools, never by the training core.
"""

from __future__ import annotations

import seqio

# The path logic is TF-free (prompt inits tokenise without TensorFlow); re-exported here.
from spot_jax.data.config import DEFAULT_SPM_PATH, VOCAB_ENV_VAR, vocabulary_path  # noqa: F401

DEFAULT_EXTRA_IDS = 100


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
