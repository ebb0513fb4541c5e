"""T5 1.1 parameter shapes: the T5X names of a config, a config inferred from shapes, checks.

Shared by the T5X and Hugging Face importers: both map onto the same T5X-named flat dict.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from spot_jax.models.config import _SIZES, T5Config
from spot_jax.train.checkpoints import CheckpointError

EMBEDDING = "token_embedder/embedding"
LOGITS = "decoder/logits_dense/kernel"
STACK_RELPOS = "encoder/relpos_bias/rel_embedding"  # T5 1.1: one table per stack
LAYER_RELPOS = "encoder/layers_0/relpos_bias/rel_embedding"  # umT5: one per layer


def param_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """T5X names and shapes of every frozen param of a T5 1.1 model (no prompt)."""
    d, hk, f = config.emb_dim, config.joined_kv, config.mlp_dim
    v, h, b = config.vocab_size, config.num_heads, config.relpos_buckets
    out = {
        EMBEDDING: (v, d),
        LOGITS: (d, v),
        "encoder/encoder_norm/scale": (d,),
        "decoder/decoder_norm/scale": (d,),
    }

    for stack, layers in (
        ("encoder", config.num_encoder_layers),
        ("decoder", config.num_decoder_layers),
    ):
        # T5 1.1: one table per stack; umT5 / scalable_t5: one in every layer.
        owners = [f"{stack}/layers_{i}" for i in range(layers)]
        for owner in owners if config.relpos_per_layer else [stack]:
            out[f"{owner}/relpos_bias/rel_embedding"] = (h, b)

    def block(prefix: str, parts: Mapping[str, str]) -> None:
        for norm, attn in parts.items():
            out[f"{prefix}/{norm}/scale"] = (d,)
            if attn:
                for proj in ("query", "key", "value"):
                    out[f"{prefix}/{attn}/{proj}/kernel"] = (d, hk)
                out[f"{prefix}/{attn}/out/kernel"] = (hk, d)
        out[f"{prefix}/mlp/wi_0/kernel"] = (d, f)
        out[f"{prefix}/mlp/wi_1/kernel"] = (d, f)
        out[f"{prefix}/mlp/wo/kernel"] = (f, d)

    for i in range(config.num_encoder_layers):
        block(
            f"encoder/layers_{i}",
            {"pre_attention_layer_norm": "attention", "pre_mlp_layer_norm": ""},
        )
    for i in range(config.num_decoder_layers):
        block(
            f"decoder/layers_{i}",
            {
                "pre_self_attention_layer_norm": "self_attention",
                "pre_cross_attention_layer_norm": "encoder_decoder_attention",
                "pre_mlp_layer_norm": "",
            },
        )
    return out


def infer_config(
    shapes: Mapping[str, tuple[int, ...]],
    config: T5Config | str | None = None,
    source: str = "checkpoint",
    **overrides,
) -> T5Config:
    """The T5Config of a checkpoint from its param shapes.

    Shapes fix widths, heads, depths, vocab and relpos buckets. They cannot tell
    `relpos_max_distance` (or dtypes); that comes from `config` (a T5Config or a
    `named_config` name), else from the named size whose shapes match, else T5's 128 when
    there are T5's 32 buckets. `overrides` win over everything.

    Raises:
      CheckpointError: params are missing, or a given config disagrees with the shapes (names
        the parameter and both shapes).
    """
    per_layer = LAYER_RELPOS in shapes and STACK_RELPOS not in shapes
    for name in (
        EMBEDDING,
        LAYER_RELPOS if per_layer else STACK_RELPOS,
        "encoder/layers_0/mlp/wi_0/kernel",
    ):
        if name not in shapes:
            raise CheckpointError(
                f"{source} lacks {name}; is it a T5 1.1 (gated-GELU, shared relpos bias) model?"
            )
    vocab, d = shapes[EMBEDDING]
    heads, buckets = shapes[LAYER_RELPOS if per_layer else STACK_RELPOS]
    joined_kv = shapes["encoder/layers_0/attention/query/kernel"][1]
    inferred = dict(
        vocab_size=vocab,
        emb_dim=d,
        num_heads=heads,
        head_dim=joined_kv // heads,
        mlp_dim=shapes["encoder/layers_0/mlp/wi_0/kernel"][1],
        relpos_buckets=buckets,
        num_encoder_layers=_count_layers(shapes, "encoder"),
        num_decoder_layers=_count_layers(shapes, "decoder"),
        **({"relpos_per_layer": True} if per_layer else {}),
    )
    if isinstance(config, str):
        from spot_jax.models.config import named_config

        config = named_config(config)
    if config is None:
        base = {}
        for size in _SIZES.values():
            if all(
                size.get(k, getattr(T5Config, k)) == v
                for k, v in inferred.items()
                if k != "relpos_per_layer"  # umT5 has a named size's shapes otherwise
            ):
                base = {"relpos_max_distance": size.get("relpos_max_distance", 128)}
                break
        if not base:
            if buckets != 32 and "relpos_max_distance" not in overrides:
                raise CheckpointError(
                    f"{source} has {buckets} relpos buckets; its relpos_max_distance cannot be "
                    "read from shapes: pass --config NAME or a relpos_max_distance override"
                )
            base = {"relpos_max_distance": 128}
        config = T5Config(**base, **inferred)
    elif per_layer:  # a named size's widths, with the checkpoint's relpos layout
        config = dataclasses.replace(config, relpos_per_layer=True)
    config = dataclasses.replace(config, **overrides)
    check_shapes(shapes, config, source)
    return config


def _count_layers(shapes: Mapping[str, Any], stack: str) -> int:
    layers = {k.split("/")[1] for k in shapes if k.startswith(f"{stack}/layers_")}
    return len(layers)


def check_shapes(
    shapes: Mapping[str, tuple[int, ...]], config: T5Config, source: str = "checkpoint"
) -> None:
    """Raises CheckpointError naming the first param missing or of another shape."""
    for name, want in param_shapes(config).items():
        if name not in shapes:
            raise CheckpointError(f"{source} lacks parameter {name} (model config {config})")
        if tuple(shapes[name]) != tuple(want):
            raise CheckpointError(
                f"parameter {name} has shape {list(shapes[name])} in {source} but the "
                f"configured model needs {list(want)}"
            )


def resize_vocab(name: str, value: np.ndarray, rows: int) -> np.ndarray:
    """Pads (zeros) or slices the vocab axis of the embedding / logits kernel to `rows`.

    T5's SentencePiece vocab has 32100 ids and T5X pads its tables to 32128; some HF configs
    keep 32100. The 28 extra rows are never produced by the tokenizer, so zero rows are inert
    for inputs; their logits columns, though, are live, so the caller states the change.
    """
    axis = {EMBEDDING: 0, LOGITS: 1}.get(name)
    if axis is None or value.shape[axis] == rows:
        return value
    if value.shape[axis] > rows:
        return np.take(value, np.arange(rows), axis=axis)
    pad = [(0, 0)] * value.ndim
    pad[axis] = (0, rows - value.shape[axis])
    return np.pad(value, pad)
