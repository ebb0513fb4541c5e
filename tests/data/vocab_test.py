"""Vocabulary factories (SeqIO, so behind the TF marker)."""

import os
import pathlib

import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")

from spot_jax.data import vocab  # noqa: E402

# Shared fixtures are on dev machines only (tests/conftest.py finds them); a user's clone skips.
SPM = pathlib.Path(os.environ["SPOT_JAX_TEST_SHARED"], "fixtures", "t5_sentencepiece.model")


def test_path_precedence(monkeypatch):
    monkeypatch.delenv(vocab.VOCAB_ENV_VAR, raising=False)
    assert vocab.vocabulary_path() == vocab.DEFAULT_SPM_PATH
    monkeypatch.setenv(vocab.VOCAB_ENV_VAR, "/tmp/env.model")
    assert vocab.get_vocabulary().sentencepiece_model_file == "/tmp/env.model"
    assert vocab.vocabulary_path("/tmp/arg.model") == "/tmp/arg.model"


@pytest.mark.skipif(not SPM.exists(), reason="shared fixtures absent")
def test_t5_sentencepiece_round_trip():
    v = vocab.get_vocabulary(str(SPM))
    assert v.vocab_size == 32100
    assert (v.eos_id, v.pad_id) == (1, 0)
    ids = v.encode("Prompts transfer well.")
    assert all(3 <= i < 32000 for i in ids)
    assert v.decode(ids) == "Prompts transfer well."


def test_byte_vocabulary_offsets_bytes_by_three():
    v = vocab.byte_vocabulary()
    assert v.encode("AB") == [ord("A") + 3, ord("B") + 3]
    assert v.decode([ord("A") + 3, 1, 50]) == "A"
