"""HF transformers / PEFT <-> spot_jax: logits parity, bitwise round trip, prompt adapters."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.interop import hf
from spot_jax.models.prompted import PromptedT5
from spot_jax.train import checkpoints
from spot_jax.train import state as state_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def quiet(_):
    pass


def nest(flat):
    out = {}
    for k, v in flat.items():
        node = out
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def restore(path, config, prompt_length=0):
    model = PromptedT5(config, prompt_length=prompt_length, z_loss=0.0)
    abstract = state_lib.flatten_params(nn.unbox(model.abstract_params(1, 4, 4)))
    abstract.pop(checkpoints.PROMPT_PATH, None)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in abstract.items()
    }
    return model, checkpoints.restore_frozen(path, abstract, config)


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


def test_hf_logits_match_spot_jax(tmp_path, make_hf_model):
    hf_model = make_hf_model(tmp_path / "hf")
    config = hf.convert(tmp_path / "hf", tmp_path / "frozen", log=quiet)
    config = dataclasses.replace(config, dtype="float32")
    assert (config.emb_dim, config.num_heads, config.head_dim, config.vocab_size) == (8, 4, 2, 64)
    model, params = restore(tmp_path / "frozen", config)
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


def test_hf_round_trip_is_bitwise(tmp_path, make_hf_model):
    from safetensors.numpy import load_file

    make_hf_model(tmp_path / "hf")
    config, read = hf.read_hf(tmp_path / "hf", log=quiet)
    hf.export(read, config, tmp_path / "out")
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
