"""Shared helpers of the interop tests: a tiny random-weight HF T5 1.1 on disk."""

import pytest


@pytest.fixture
def make_hf_model():
    """A function (path, vocab=64) -> saved random HF T5ForConditionalGeneration (eval mode)."""
    return tiny_hf_model


def tiny_hf_model(path, vocab=64):
    """A random-weight HF T5 1.1 (norm scales randomised too, so no weight is trivial)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=vocab,
        d_model=8,
        d_kv=2,
        num_heads=4,
        d_ff=16,
        num_layers=2,
        num_decoder_layers=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # T5 1.1 has its own lm_head (transformers >= 5 ties it by default).
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    model.save_pretrained(path)
    return model
