"""Hugging Face T5 weights in (out: `hf_export.py`), and PEFT prompt-tuning adapters.

HF's `T5ForConditionalGeneration` names and layouts differ from T5X's in three ways:
  - every `nn.Linear.weight` is [out, in], so each kernel is transposed (the embedding is
    not; `relative_attention_bias` is an nn.Embedding [buckets, heads], transposed too);
  - the relative-position bias lives in block 0 of each stack only, which is exactly T5X's
    one shared `relpos_bias` per stack (umT5, HF's `UMT5ForConditionalGeneration`, has one in
    every block: `T5Config.relpos_per_layer`, each layer's own `relpos_bias`);
  - `shared` is the embedding and `lm_head` the (untied, T5 1.1) logits kernel.
Vocab rows: T5's tokenizer has 32100 ids; T5X pads tables to 32128 and some HF configs keep
32100. We never change the row count unless asked (`vocab_rows`), and say so when we do.

Weights are read and written one tensor at a time (safetensors shards of bounded size), so
large models convert without holding every array at once. torch is needed only for
`pytorch_model.bin` files and bfloat16 safetensors.
"""

import dataclasses
import json
from collections.abc import Callable, Mapping

import numpy as np
from etils import epath

from spot_jax.interop import t5x
from spot_jax.interop.peft_adapter import (  # noqa: F401 (re-exported: hf.export_prompt, ...)
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_PROMPT_KEY,
    export_prompt,
    import_prompt,
    torch_to_numpy,
)
from spot_jax.models.config import T5Config
from spot_jax.train import frozen_checkpoint
from spot_jax.train.checkpoints import CheckpointError

_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}


def name_map(config: T5Config) -> list[tuple[str, str, bool]]:
    """(HF name, T5X name, transposed?) for every weight of a T5 1.1 model."""
    out = [
        ("shared.weight", t5x.EMBEDDING, False),
        ("lm_head.weight", t5x.LOGITS, True),
        ("encoder.final_layer_norm.weight", "encoder/encoder_norm/scale", False),
        ("decoder.final_layer_norm.weight", "decoder/decoder_norm/scale", False),
    ]
    relpos = "layer.0.SelfAttention.relative_attention_bias.weight"
    for stack, layers in (
        ("encoder", config.num_encoder_layers),
        ("decoder", config.num_decoder_layers),
    ):
        if config.relpos_per_layer:
            for i in range(layers):
                table = f"{stack}/layers_{i}/relpos_bias/rel_embedding"
                out.append((f"{stack}.block.{i}.{relpos}", table, True))
        else:
            out.append((f"{stack}.block.0.{relpos}", f"{stack}/relpos_bias/rel_embedding", True))

    def sublayer(hf: str, ours: str, norm: str, attn_hf: str | None, attn: str | None):
        out.append((f"{hf}.layer_norm.weight", f"{ours}/{norm}/scale", False))
        if attn_hf:
            for p, name in _ATTN.items():
                out.append((f"{hf}.{attn_hf}.{p}.weight", f"{ours}/{attn}/{name}/kernel", True))
        else:
            for w in ("wi_0", "wi_1", "wo"):
                out.append((f"{hf}.DenseReluDense.{w}.weight", f"{ours}/mlp/{w}/kernel", True))

    for i in range(config.num_encoder_layers):
        hf, ours = f"encoder.block.{i}.layer", f"encoder/layers_{i}"
        sublayer(f"{hf}.0", ours, "pre_attention_layer_norm", "SelfAttention", "attention")
        sublayer(f"{hf}.1", ours, "pre_mlp_layer_norm", None, None)
    for i in range(config.num_decoder_layers):
        hf, ours = f"decoder.block.{i}.layer", f"decoder/layers_{i}"
        sublayer(
            f"{hf}.0", ours, "pre_self_attention_layer_norm", "SelfAttention", "self_attention"
        )
        sublayer(
            f"{hf}.1",
            ours,
            "pre_cross_attention_layer_norm",
            "EncDecAttention",
            "encoder_decoder_attention",
        )
        sublayer(f"{hf}.2", ours, "pre_mlp_layer_norm", None, None)
    return out


# ---------------------------------------------------------------------------------------------
# HF -> spot_jax.


def config_from_hf(hf: Mapping, vocab_rows: int) -> T5Config:
    """A T5Config from HF's config.json; `vocab_rows` is the embedding's actual row count."""
    proj = hf.get("feed_forward_proj", "relu")
    if proj != "gated-gelu":
        raise CheckpointError(
            f"HF model has feed_forward_proj={proj!r}; spot_jax runs T5 1.1 (gated-gelu) only"
        )
    # T5 1.0 rescales decoder outputs by d**-0.5 before tied logits; T5 1.1 does not.
    # transformers >= 5 records this as `scale_decoder_outputs` (and always ties by name);
    # older configs say it with `tie_word_embeddings`.
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    if scaled:
        raise CheckpointError(
            "HF model rescales decoder outputs for tied embeddings (T5 1.0 style); spot_jax "
            "runs T5 1.1 (untied lm_head, no rescale) only"
        )
    return T5Config(
        vocab_size=vocab_rows,
        emb_dim=hf["d_model"],
        num_heads=hf["num_heads"],
        head_dim=hf["d_kv"],
        mlp_dim=hf["d_ff"],
        num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        relpos_buckets=hf.get("relative_attention_num_buckets", 32),
        relpos_max_distance=hf.get("relative_attention_max_distance", 128),
        relpos_per_layer=hf.get("model_type") == "umt5",
    )


class HFWeights:
    """The tensors of an HF model directory, read one at a time.

    Accepts `model.safetensors`, a sharded `model.safetensors.index.json`, or
    `pytorch_model.bin` (+ index).
    """

    def __init__(self, model_dir: epath.PathLike):
        self.dir = epath.Path(model_dir)
        if not (self.dir / "config.json").exists():
            raise CheckpointError(f"{self.dir} is not an HF model directory (no config.json)")
        self.config = json.loads((self.dir / "config.json").read_text())
        self.files: dict[str, epath.Path] = {}
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if (self.dir / index_name).exists():
                weight_map = json.loads((self.dir / index_name).read_text())["weight_map"]
                self.files = {k: self.dir / f for k, f in weight_map.items()}
                break
        else:
            for single in ("model.safetensors", "pytorch_model.bin"):
                if (self.dir / single).exists():
                    self.files = {k: self.dir / single for k in _keys(self.dir / single)}
                    break
        if not self.files:
            raise CheckpointError(
                f"{self.dir} has no model.safetensors, pytorch_model.bin or their index"
            )
        self._bin: dict[str, Mapping] = {}

    def read(self, name: str) -> np.ndarray:
        if name == "lm_head.weight" and name not in self.files and "shared.weight" in self.files:
            # Saved with lm_head tied to the embedding: the same values.
            return self.read("shared.weight")
        if name not in self.files:
            raise CheckpointError(f"HF model {self.dir} lacks tensor {name}")
        path = self.files[name]
        if not path.exists():
            raise CheckpointError(f"weight file {path} (holding {name}) is missing")
        if path.name.endswith(".safetensors"):
            return _read_safetensor(path, name)
        if str(path) not in self._bin:
            self._bin = {str(path): _torch_load(path)}
        return torch_to_numpy(self._bin[str(path)][name])


def _keys(path: epath.Path) -> list[str]:
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return list(f.keys())
    return list(_torch_load(path))


def _torch_load(path: epath.Path) -> Mapping:
    """A pytorch_model.bin's tensors, memory-mapped where the file allows it."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "zip" not in str(e).lower():
            raise CheckpointError(f"cannot read {path}: {str(e)[:200]}") from e
    # Files from torch < 1.6 are not zip archives and cannot be memory-mapped.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a broken file is the same fact for users
        raise CheckpointError(f"cannot read {path}: {str(e)[:200]}") from e


def _read_safetensor(path: epath.Path, name: str) -> np.ndarray:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.get_tensor(name)
    except (TypeError, ValueError):
        # numpy has no bfloat16 in safetensors' numpy backend; go through torch.
        with safe_open(str(path), framework="pt") as f:
            return torch_to_numpy(f.get_tensor(name))


# Tensors HF saves that carry nothing of their own: copies of `shared`, and a cross-attention
# bias that T5 creates but never uses.
_REDUNDANT = {
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
}
# mT5 is T5 1.1's architecture under another name (same tensors, gated-gelu, untied head);
# umT5 is too, with a relative-position table in every block (`relpos_per_layer`).
_MODEL_TYPES = ("t5", "mt5", "umt5")


def _check_model_type(weights: "HFWeights") -> None:
    model_type = weights.config.get("model_type")
    archs = weights.config.get("architectures") or []
    if model_type not in _MODEL_TYPES and "T5ForConditionalGeneration" not in archs:
        what = ", ".join(archs) or "no architectures"
        raise CheckpointError(
            f"HF model {weights.dir} is model_type={model_type!r} ({what}); spot_jax converts "
            "T5 1.1 models (model_type 't5') only"
        )


def read_hf(
    model_dir: epath.PathLike, vocab_rows: int | None = None, log=print
) -> tuple[T5Config, Callable[[str], np.ndarray]]:
    """The T5Config of an HF T5 1.1 model and a reader of its params under T5X names.

    Args:
      model_dir: HF model directory.
      vocab_rows: resize the embedding and logits to this many rows (pad with zeros or
        slice); None keeps the checkpoint's row count.
    """
    weights = HFWeights(model_dir)
    _check_model_type(weights)
    rows = weights.read("shared.weight").shape[0]
    if weights.config.get("vocab_size") not in (None, rows):
        log(
            f"note: config.json says vocab_size={weights.config['vocab_size']} but "
            f"shared.weight has {rows} rows; using {rows}"
        )
    if vocab_rows and vocab_rows != rows:
        log(f"resizing vocab rows {rows} -> {vocab_rows} (embedding and lm_head)")
    elif rows != 32128:
        log(
            f"note: {rows} vocab rows; T5X checkpoints and prompts use 32128 "
            "(--vocab-rows 32128 pads)"
        )
    config = dataclasses.replace(config_from_hf(weights.config, rows))
    mapping = {ours: (hf, transpose) for hf, ours, transpose in name_map(config)}
    # A tensor we would not read is a weight of some other architecture (a relative bias in
    # every block of a model that says model_type 't5', extra layers): converting without it
    # would make a different model.
    unused = sorted(set(weights.files) - {hf for hf, _ in mapping.values()} - _REDUNDANT)
    if unused:
        raise CheckpointError(
            f"HF model {model_dir} has {len(unused)} tensor(s) a T5 1.1 model does not have, "
            f"e.g. {', '.join(unused[:3])}; it is not a T5 1.1 checkpoint"
        )
    shapes = t5x.param_shapes(config)
    final = dataclasses.replace(config, vocab_size=vocab_rows or rows)

    def read(name: str) -> np.ndarray:
        hf, transpose = mapping[name]
        value = weights.read(hf)
        value = value.T if transpose else value
        if tuple(value.shape) != shapes[name]:
            raise CheckpointError(
                f"HF tensor {hf} has shape {list(value.shape)} but config.json implies "
                f"{list(shapes[name][::-1] if transpose else shapes[name])} for {name}"
            )
        return np.ascontiguousarray(t5x.resize_vocab(name, value, final.vocab_size))

    return final, read


def convert(
    model_dir: epath.PathLike, output: epath.PathLike, vocab_rows: int | None = None, log=print
) -> T5Config:
    """HF T5 1.1 model directory -> spot_jax frozen checkpoint."""
    config, read = read_hf(model_dir, vocab_rows, log)
    t5x.write_frozen_streaming(output, t5x.param_shapes(config), read, config)
    return config


def iter_frozen(path: epath.PathLike) -> tuple[T5Config, Callable[[str], np.ndarray]]:
    """Config and a one-param-at-a-time reader of a spot_jax frozen checkpoint."""
    from spot_jax.train import checkpoints

    meta = frozen_checkpoint.read_frozen_config(path)
    fields = {f.name for f in dataclasses.fields(T5Config)}
    config = T5Config(**{k: v for k, v in meta.items() if k in fields})
    if "relpos_max_distance" not in meta:
        print(
            f"note: {path} does not record relpos_max_distance; assuming "
            f"{config.relpos_max_distance}"
        )
    readers = [t5x.OrbaxParams(group) for group in frozen_checkpoint.frozen_group_dirs(path)]
    owner = {name: r for r in readers for name in r.shapes}

    def read(name: str) -> np.ndarray:
        if name not in owner:
            raise checkpoints.CheckpointError(f"frozen checkpoint {path} lacks parameter {name}")
        return owner[name].read(name)

    return config, read
