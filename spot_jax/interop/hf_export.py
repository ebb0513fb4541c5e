"""spot_jax weights written as a Hugging Face T5 model directory (`hf.py` reads them back).

`export` writes config.json (`hf_config`: T5ForConditionalGeneration, or
UMT5ForConditionalGeneration for a relative-position table per layer), generation_config.json
and the weights as safetensors shards of bounded size, one tensor at a time, under HF's names
and layouts (`hf.name_map`: kernels transposed). A prompt goes out as a PEFT adapter
(`peft_adapter.export_prompt`).
"""

import json
from collections.abc import Callable

import numpy as np
from etils import epath

from spot_jax.interop import hf as hf_lib
from spot_jax.models.config import T5Config


def hf_config(config: T5Config, dtype: str = "float32") -> dict:
    """config.json of T5ForConditionalGeneration for a T5 1.1 model with `dtype` weights
    (UMT5ForConditionalGeneration for one with a relpos table per layer)."""
    umt5 = config.relpos_per_layer
    return {
        "architectures": ["UMT5ForConditionalGeneration" if umt5 else "T5ForConditionalGeneration"],
        "model_type": "umt5" if umt5 else "t5",
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relpos_buckets,
        "relative_attention_max_distance": config.relpos_max_distance,
        "vocab_size": config.vocab_size,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.1,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "scale_decoder_outputs": False,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "torch_dtype": dtype,
        "dtype": dtype,  # transformers >= 5 reads this name; older ones read torch_dtype
    }


# generation_config.json: T5's special ids, so `generate` starts and stops as T5X decodes.
GENERATION_CONFIG = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}


def export(
    read: Callable[[str], np.ndarray],
    config: T5Config,
    output: epath.PathLike,
    max_shard_bytes: int = 5 << 30,
    vocabulary: epath.PathLike | None = None,
) -> None:
    """Writes an HF model directory from a param reader.

    config.json (with the weights' dtype), generation_config.json, model.safetensors (or
    shards + index), and with `vocabulary` (a SentencePiece model) spiece.model, so
    AutoTokenizer loads from the directory too.
    """
    from safetensors.numpy import save_file

    output = epath.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    written: list[dict[str, str]] = []
    size = 0
    dtypes: set[str] = set()

    def flush() -> None:
        if not shards[-1]:
            return
        shard_name = f"model-{len(written) + 1:05d}.safetensors"
        save_file(shards[-1], str(output / shard_name), metadata={"format": "pt"})
        written.append({k: shard_name for k in shards[-1]})
        shards[-1] = {}

    for hf, ours, transpose in hf_lib.name_map(config):
        value = np.asarray(read(ours))
        value = np.ascontiguousarray(value.T if transpose else value)
        dtypes.add(str(value.dtype))
        if size and size + value.nbytes > max_shard_bytes:
            flush()
            size = 0
        shards[-1][hf] = value
        size += value.nbytes
    flush()
    # HF loads every weight in config's dtype; with mixed dtypes float32 loses nothing.
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    (output / "config.json").write_text(json.dumps(hf_config(config, dtype), indent=2))
    (output / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    if vocabulary is not None:
        (output / "spiece.model").write_bytes(epath.Path(vocabulary).read_bytes())
    if len(written) == 1:
        (output / "model-00001.safetensors").rename(output / "model.safetensors")
        return
    weight_map = {k: v for shard in written for k, v in shard.items()}
    (output / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2)
    )
