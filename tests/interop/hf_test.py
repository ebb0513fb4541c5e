"""HF transformers / PEFT <-> spot_jax: logits parity, bitwise round trip, prompt adapters."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from spot_jax.interop import hf, hf_export
from spot_jax.models.prompted import PromptedT5
from spot_jax.train import checkpoints, frozen_checkpoint
from spot_jax.train import state as state_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def quiet(_):
    pass


def nest(flat):
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def restore(path, config, prompt_length=0):
    model = PromptedT5(config, prompt_length=prompt_length, z_loss=0.0)
    abstract = state_lib.flatten_params(nn.unbox(model.abstract_params(1, 4, 4)))
    abstract.pop(checkpoints.PROMPT_PATH, None)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in abstract.items()
    }
    return model, frozen_checkpoint.restore_frozen(path, abstract, config)


def random_batch(rng, vocab, batch=3, inputs=7, targets=5):
    enc = rng.integers(2, vocab, (batch, inputs))
    dec_t = rng.integers(2, vocab, (batch, targets))
    for b in range(batch):  # ragged padding
        enc[b, inputs - b :] = 0
        dec_t[b, targets - b :] = 0
    dec_in = np.concatenate([np.zeros((batch, 1), int), dec_t[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc.astype(np.int32),
        "decoder_input_tokens": dec_in.astype(np.int32),
        "decoder_target_tokens": dec_t.astype(np.int32),
        "decoder_loss_weights": (dec_t > 0).astype(np.float32),
    }


def assert_same_logits(model, params, hf_model):
    """spot_jax's and the HF model's logits on a random ragged batch (64-token vocab)."""
    batch = random_batch(np.random.default_rng(0), 64)
    ours = np.asarray(model.logits(nest(params), {k: jnp.asarray(v) for k, v in batch.items()}))
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.tensor(batch["encoder_input_tokens"]),
            attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"]),
        ).logits.numpy()
    # Compare at real target positions: T5X also masks padded decoder positions, HF does not.
    real = batch["decoder_target_tokens"] > 0
    assert real.sum() < real.size
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


def test_hf_logits_match_spot_jax(tmp_path, make_hf_model):
    hf_model = make_hf_model(tmp_path / "hf")
    config = hf.convert(tmp_path / "hf", tmp_path / "frozen", log=quiet)
    config = dataclasses.replace(config, dtype="float32")
    assert (config.emb_dim, config.num_heads, config.head_dim, config.vocab_size) == (8, 4, 2, 64)
    model, params = restore(tmp_path / "frozen", config)
    assert_same_logits(model, params, hf_model)


def test_hf_round_trip_is_bitwise(tmp_path, make_hf_model):
    from safetensors.numpy import load_file

    make_hf_model(tmp_path / "hf")
    config, read = hf.read_hf(tmp_path / "hf", log=quiet)
    hf_export.export(read, config, tmp_path / "out")
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    original = {k: v for k, v in original.items() if not k.endswith("embed_tokens.weight")}
    assert set(exported) == set(original)
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out")
    state = reloaded.state_dict()
    for k, v in original.items():
        np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)


def test_vocab_rows_are_resized_only_when_asked(tmp_path, make_hf_model):
    make_hf_model(tmp_path / "hf", vocab=60)
    messages = []
    config, read = hf.read_hf(tmp_path / "hf", log=messages.append)
    assert config.vocab_size == 60 and read(hf.t5x.EMBEDDING).shape == (60, 8)
    assert any("32128" in m for m in messages)
    config, read = hf.read_hf(tmp_path / "hf", vocab_rows=64, log=messages.append)
    assert any("60 -> 64" in m for m in messages)
    emb, logits = read(hf.t5x.EMBEDDING), read(hf.t5x.LOGITS)
    assert emb.shape == (64, 8) and logits.shape == (8, 64)
    assert not emb[60:].any() and not logits[:, 60:].any()


@pytest.mark.slow
def test_peft_prompt_adapter_gives_same_loss(tmp_path, make_hf_model):
    peft = pytest.importorskip("peft")
    hf_model = make_hf_model(tmp_path / "hf")
    config = hf.convert(tmp_path / "hf", tmp_path / "frozen", log=quiet)
    config = dataclasses.replace(config, dtype="float32")
    prompt = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    hf.export_prompt(prompt, config, tmp_path / "adapter")
    np.testing.assert_array_equal(hf.import_prompt(tmp_path / "adapter"), prompt)

    model, params = restore(tmp_path / "frozen", config, prompt_length=3)
    params[checkpoints.PROMPT_PATH] = jnp.asarray(prompt)
    batch = random_batch(np.random.default_rng(2), 64)
    loss_sum, metrics = model.loss(nest(params), {k: jnp.asarray(v) for k, v in batch.items()})
    ours = float(loss_sum / metrics["weight_sum"])

    peft_model = peft.PeftModel.from_pretrained(hf_model, tmp_path / "adapter").eval()
    labels = np.where(batch["decoder_loss_weights"] > 0, batch["decoder_target_tokens"], -100)
    with torch.no_grad():
        theirs = peft_model(
            input_ids=torch.tensor(batch["encoder_input_tokens"]),
            attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0).long(),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"]),
            labels=torch.tensor(labels).long(),
        ).loss.item()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("position", ["prefix", "prefix_after_bos", "suffix", "suffix_after_eos"])
def test_prompt_positions_match_hf_fed_the_prompt_placed_by_hand(tmp_path, make_hf_model, position):
    # prompt-tuning's combination functions, built here in numpy: HF's T5 gets the embedded
    # rows with the prompt inserted at k (prefix 0, after BOS 1, suffix before the last
    # token n - 1, after it n) and the first n + P positions unmasked.
    hf_model = make_hf_model(tmp_path / "hf")
    config = hf.convert(tmp_path / "hf", tmp_path / "frozen", log=quiet)
    model, params = restore(tmp_path / "frozen", dataclasses.replace(config, dtype="float32"), 3)
    model = model.replace(prompt_position=position)
    prompt = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    params[checkpoints.PROMPT_PATH] = jnp.asarray(prompt)
    batch = random_batch(np.random.default_rng(2), 64)
    ours = np.asarray(model.logits(nest(params), {k: jnp.asarray(v) for k, v in batch.items()}))

    table = hf_model.shared.weight.detach().numpy()
    rows, masks = [], []
    for tokens in batch["encoder_input_tokens"]:
        n = int((tokens > 0).sum())
        k = {"prefix": 0, "prefix_after_bos": 1, "suffix": n - 1, "suffix_after_eos": n}[position]
        rows.append(np.concatenate([table[tokens[:k]], prompt, table[tokens[k:]]]))
        masks.append(np.arange(len(tokens) + 3) < n + 3)
    with torch.no_grad():
        theirs = hf_model(
            inputs_embeds=torch.tensor(np.stack(rows)),
            attention_mask=torch.tensor(np.stack(masks)).long(),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"]),
        ).logits.numpy()
    real = batch["decoder_target_tokens"] > 0
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)
    if position != "prefix":  # the position matters: the prefix model's logits differ
        prefix = np.asarray(
            model.replace(prompt_position="prefix").logits(
                nest(params), {k: jnp.asarray(v) for k, v in batch.items()}
            )
        )
        assert np.abs(prefix[real] - theirs[real]).max() > 1e-3


def _umt5(path):
    """A tiny random HF UMT5 model (T5 1.1's names, a relative-position table in every block)."""
    umt5 = transformers.UMT5Config(
        vocab_size=64, d_model=8, d_kv=2, num_heads=4, d_ff=16, num_layers=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.UMT5ForConditionalGeneration(umt5).eval()
    model.save_pretrained(path)
    return model


def test_umt5_logits_match_and_round_trip_bitwise(tmp_path):
    from safetensors.numpy import load_file

    hf_model = _umt5(tmp_path / "umt5")
    config = hf.convert(tmp_path / "umt5", tmp_path / "frozen", log=quiet)
    assert config.relpos_per_layer
    model, params = restore(tmp_path / "frozen", dataclasses.replace(config, dtype="float32"))
    tables = [params[f"encoder/layers_{i}/relpos_bias/rel_embedding"] for i in range(2)]
    assert not np.allclose(tables[0], tables[1])  # the layers' own tables, not one copied
    assert_same_logits(model, params, hf_model)
    # Restored into a T5 1.1 model (one table per stack): refused by name.
    shared = dataclasses.replace(config, relpos_per_layer=False)
    with pytest.raises(checkpoints.CheckpointError, match="relpos_per_layer=True in checkpoint"):
        restore(tmp_path / "frozen", shared)

    config, read = hf.read_hf(tmp_path / "umt5", log=quiet)
    hf_export.export(read, config, tmp_path / "out")
    original = load_file(str(tmp_path / "umt5" / "model.safetensors"))
    original = {k: v for k, v in original.items() if not k.endswith("embed_tokens.weight")}
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    # transformers 5 ties UMT5's lm_head to `shared` and saves it once; we write it out, as T5
    # 1.1's untied head (released umT5 checkpoints have their own).
    assert set(exported) - set(original) <= {"lm_head.weight"}
    np.testing.assert_array_equal(exported["lm_head.weight"], original["shared.weight"])
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    assert type(reloaded).__name__ == "UMT5ForConditionalGeneration"


def test_other_architectures_are_refused_by_name(tmp_path):
    _umt5(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "longt5"}))
    with pytest.raises(checkpoints.CheckpointError, match="model_type='longt5'"):
        hf.read_hf(tmp_path / "m", log=quiet)
    # umT5's tensors under model_type 't5' (a table in every block): the unmapped ones are named.
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(checkpoints.CheckpointError, match="block.1.layer.0.SelfAttention"):
        hf.read_hf(tmp_path / "m", log=quiet)
    assert not (tmp_path / "frozen").exists()


def test_a_legacy_pytorch_bin_reads_like_safetensors(tmp_path, make_hf_model):
    from safetensors.numpy import load_file

    model = make_hf_model(tmp_path / "hf")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    # torch < 1.6's format: not a zip archive, so it cannot be memory-mapped.
    torch.save(
        model.state_dict(), legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False
    )
    _, read = hf.read_hf(legacy, log=quiet)
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    np.testing.assert_array_equal(read(hf.t5x.EMBEDDING), original["shared.weight"])
    kernel = "encoder/layers_1/mlp/wo/kernel"
    np.testing.assert_array_equal(
        read(kernel), original["encoder.block.1.layer.1.DenseReluDense.wo.weight"].T
    )


def test_export_writes_dtype_generation_config_and_tokenizer(tmp_path, make_hf_model):
    sentencepiece = pytest.importorskip("sentencepiece")
    model = make_hf_model(tmp_path / "hf")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "hf16")
    config, read = hf.read_hf(tmp_path / "hf16", log=quiet)
    spm = tmp_path / "vocab.model"
    words = [f"w{i} x{i % 7} y{i % 3}" for i in range(200)]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(words), model_prefix=str(spm)[: -len(".model")], vocab_size=20,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    hf_export.export(read, config, tmp_path / "out", vocabulary=spm)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["dtype"] == written["torch_dtype"] == "bfloat16"
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    assert (generation.decoder_start_token_id, generation.eos_token_id) == (0, 1)
    assert generation.pad_token_id == 0
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert reloaded.dtype == torch.bfloat16
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = sentencepiece.SentencePieceProcessor(model_file=str(spm)).encode("w12 x3 y1")
    assert tokenizer("w12 x3 y1").input_ids == [*ids, 1]
