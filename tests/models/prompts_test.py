"""Prompt initialisers: ranges, sampled rows, class-label means, fixed arrays and files."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import prompts

VOCAB_MODEL = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"


@pytest.fixture
def embeddings():
    return np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)


def test_random_uniform_default_is_zero_to_half():
    prompt = np.asarray(prompts.random_uniform()(jax.random.PRNGKey(0), (100, 16)))
    assert prompt.shape == (100, 16) and prompt.dtype == np.float32
    assert prompt.min() >= 0.0 and prompt.max() < 0.5
    # Fills the range, not a corner of it.
    assert prompt.min() < 0.01 and prompt.max() > 0.49
    assert abs(prompt.mean() - 0.25) < 0.01
    symmetric = np.asarray(prompts.random_uniform(1.0, minval=-0.5)(jax.random.PRNGKey(0), (50, 8)))
    assert symmetric.min() >= -0.5 and symmetric.max() < 0.5 and symmetric.min() < -0.4


def test_random_uniform_depends_on_rng():
    init = prompts.random_uniform()
    a, b = init(jax.random.PRNGKey(0), (4, 4)), init(jax.random.PRNGKey(1), (4, 4))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, init(jax.random.PRNGKey(0), (4, 4)))


def _row_ids(prompt, table):
    """Index of the table row each prompt row equals (exactly), or -1."""
    ids = []
    for row in np.asarray(prompt):
        hits = np.flatnonzero(np.all(table == row, axis=1))
        ids.append(int(hits[0]) if len(hits) else -1)
    return ids


def test_sampled_vocab_rows_are_distinct_rows_of_the_population(embeddings):
    init = prompts.sampled_vocab(embeddings, population_size=20)
    prompt = init(jax.random.PRNGKey(3), (12, 6))
    ids = _row_ids(prompt, embeddings)
    assert all(0 <= i < 20 for i in ids), ids
    assert len(set(ids)) == 12  # without replacement
    other = _row_ids(init(jax.random.PRNGKey(4), (12, 6)), embeddings)
    assert other != ids


def test_sampled_vocab_without_a_table_asks_for_the_model_embeddings(embeddings):
    init = prompts.sampled_vocab(population_size=20)
    assert init.needs_embeddings
    with pytest.raises(ValueError, match="embedding table"):
        init(jax.random.PRNGKey(0), (4, 6))
    ids = _row_ids(init(jax.random.PRNGKey(0), (4, 6), embeddings=embeddings), embeddings)
    assert all(0 <= i < 20 for i in ids)
    with pytest.raises(ValueError, match="width"):
        init(jax.random.PRNGKey(0), (4, 7), embeddings=embeddings)


def test_sampled_vocab_longer_than_population_samples_with_replacement(embeddings):
    prompt = prompts.sampled_vocab(embeddings, population_size=3)(jax.random.PRNGKey(0), (8, 6))
    ids = _row_ids(prompt, embeddings)
    assert set(ids) <= {0, 1, 2}


def test_class_labels_rows_are_mean_subword_embeddings(embeddings):
    labels = [[3, 4], [7], [10, 11, 12]]
    init = prompts.class_labels(labels, embeddings, population_size=20)
    prompt = np.asarray(init(jax.random.PRNGKey(0), (5, 6)))
    np.testing.assert_allclose(prompt[0], embeddings[[3, 4]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(prompt[1], embeddings[7], rtol=1e-6)
    np.testing.assert_allclose(prompt[2], embeddings[[10, 11, 12]].mean(0), rtol=1e-6)
    # The rest is sampled vocabulary.
    assert all(0 <= i < 20 for i in _row_ids(prompt[3:], embeddings))
    with pytest.raises(ValueError, match="class label 1"):
        prompts.class_labels([[3], []], embeddings)(jax.random.PRNGKey(0), (4, 6))


def test_from_text_uses_token_rows_first(embeddings):
    prompt = np.asarray(prompts.from_text([5, 9], embeddings, 20)(jax.random.PRNGKey(0), (4, 6)))
    np.testing.assert_array_equal(prompt[:2], embeddings[[5, 9]])


def test_from_text_repeat_tiles_the_text_to_the_prompt_length(embeddings):
    rng = jax.random.PRNGKey(0)
    prompt = np.asarray(prompts.from_text([5, 9, 3], embeddings, fill="repeat")(rng, (7, 6)))
    np.testing.assert_array_equal(prompt, embeddings[[5, 9, 3, 5, 9, 3, 5]])
    short = np.asarray(prompts.from_text([5, 9, 3], embeddings, fill="repeat")(rng, (2, 6)))
    np.testing.assert_array_equal(short, embeddings[[5, 9]])
    with pytest.raises(ValueError, match="no ids"):
        prompts.from_text([], embeddings)
    with pytest.raises(ValueError, match="fill"):
        prompts.from_text([5], embeddings, fill="zeros")
    with pytest.raises(ValueError, match="token id 70 is outside the model's vocabulary of 50"):
        prompts.from_text([5, 70], embeddings)(rng, (4, 6))


@pytest.mark.skipif(not VOCAB_MODEL.exists(), reason="shared fixtures not present")
def test_text_init_equals_pefts_text_init(tmp_path):
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from peft.tuners.prompt_tuning import PromptEmbedding

    # PEFT tokenises with a Hugging Face tokenizer loaded by path: the same SentencePiece model.
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "spiece.model").write_bytes(VOCAB_MODEL.read_bytes())
    transformers.T5Tokenizer.from_pretrained(tmp_path / "spm").save_pretrained(tmp_path / "tok")
    text, length = "Classify if the review is positive or negative:", 25
    table = np.random.default_rng(0).normal(size=(32128, 8)).astype(np.float32)
    cfg = peft.PromptTuningConfig(
        task_type="SEQ_2_SEQ_LM",
        num_virtual_tokens=length,
        token_dim=8,
        num_transformer_submodules=1,
        prompt_tuning_init=peft.PromptTuningInit.TEXT,
        prompt_tuning_init_text=text,
        tokenizer_name_or_path=str(tmp_path / "tok"),
    )
    theirs = PromptEmbedding(cfg, torch.nn.Embedding.from_pretrained(torch.from_numpy(table)))
    ids = prompts.text_ids(text, str(VOCAB_MODEL), add_eos=True)
    ours = prompts.from_text(ids, table, fill="repeat")(jax.random.PRNGKey(0), (length, 8))
    np.testing.assert_array_equal(np.asarray(ours), theirs.embedding.weight.detach().numpy())


def test_from_array_returns_the_array_and_names_both_shapes():
    fixed = np.arange(12, dtype=np.float32).reshape(3, 4)
    init = prompts.from_array(fixed, source="my.npy")
    np.testing.assert_array_equal(init(jax.random.PRNGKey(0), (3, 4)), fixed)
    with pytest.raises(ValueError) as err:
        init(jax.random.PRNGKey(0), (5, 4))
    message = str(err.value)
    assert "my.npy" in message and "[3, 4]" in message and "[5, 4]" in message
    assert "PROMPT_LENGTH" in message
    bad = fixed.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prompts.from_array(bad)(jax.random.PRNGKey(0), (3, 4))


def test_from_file_reads_np_save_without_suffix(tmp_path):
    fixed = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    path = tmp_path / "encoder.prompt.prompt.prompt"
    with path.open("wb") as f:
        np.save(f, fixed)
    got = prompts.from_file(str(path))(jax.random.PRNGKey(0), (3, 4), jnp.float32)
    np.testing.assert_array_equal(got, fixed)
    with pytest.raises(FileNotFoundError, match="PROMPT_FILE"):
        prompts.from_file(str(tmp_path / "missing"))
    junk = tmp_path / "junk"
    junk.write_text("not numpy")
    with pytest.raises(ValueError, match="not a numpy file"):
        prompts.from_file(str(junk))


@pytest.mark.skipif(not VOCAB_MODEL.exists(), reason="shared fixtures not present")
def test_tokenize_class_labels_with_the_t5_vocabulary():
    ids = prompts.tokenize(["positive", "negative"], str(VOCAB_MODEL))
    assert len(ids) == 2 and all(ids) and ids[0] != ids[1]
    assert all(2 < i < 32000 for row in ids for i in row)


@pytest.mark.skipif(not VOCAB_MODEL.exists(), reason="shared fixtures not present")
def test_tokenize_without_a_path_reads_spot_jax_vocab(monkeypatch, tmp_path):
    # The gin inits' default VOCABULARY_PATH = None: the local copy $SPOT_JAX_VOCAB names.
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(VOCAB_MODEL))
    assert prompts.text_ids("classify the sentiment") == prompts.text_ids(
        "classify the sentiment", str(VOCAB_MODEL)
    )
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match="SPOT_JAX_VOCAB, to a local copy"):
        prompts.tokenize(["x"])


def test_rescaled_keeps_the_direction_and_sets_the_rms(embeddings):
    prompt = np.random.default_rng(1).normal(scale=5.0, size=(4, 6)).astype(np.float32)
    fixed = prompts.rescaled(prompts.from_array(prompt), 0.5)
    assert not getattr(fixed, "needs_embeddings", False)
    got = np.asarray(fixed(None, (4, 6)))
    np.testing.assert_allclose(np.sqrt(np.mean(got**2)), 0.5, rtol=1e-6)
    factor = np.sqrt(np.mean(prompt**2)) / 0.5
    np.testing.assert_allclose(got * factor, prompt, rtol=1e-5)  # one factor for every entry
    # 'embeddings': the RMS of the population rows a sampled-vocab init draws from.
    init = prompts.rescaled(prompts.from_array(prompt), "embeddings", population_size=20)
    assert init.needs_embeddings
    with pytest.raises(ValueError, match="embedding table"):
        init(None, (4, 6))
    got = np.asarray(init(None, (4, 6), embeddings=embeddings))
    want = np.sqrt(np.mean(embeddings[:20] ** 2))
    np.testing.assert_allclose(np.sqrt(np.mean(got**2)), want, rtol=1e-6)


def test_rescaled_passes_the_table_to_an_inner_init_that_needs_it(embeddings):
    init = prompts.rescaled(prompts.sampled_vocab(population_size=20), 3.0)
    assert init.needs_embeddings
    got = np.asarray(init(jax.random.PRNGKey(0), (5, 6), embeddings=embeddings))
    np.testing.assert_allclose(np.sqrt(np.mean(got**2)), 3.0, rtol=1e-6)


@pytest.mark.parametrize("rms", [0.0, -1.0, float("nan"), "vocab"])
def test_rescaled_refuses_a_bad_rms(rms):
    with pytest.raises(ValueError, match="positive number or 'embeddings'"):
        prompts.rescaled(prompts.from_array(np.ones((2, 2))), rms)
    with pytest.raises(ValueError, match="all-zero"):
        prompts.rescaled(prompts.from_array(np.zeros((2, 2))), 1.0)(None, (2, 2))
