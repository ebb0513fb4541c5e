"""T5 1.1 model configuration: one frozen dataclass and the named sizes.

Sizes follow T5X's `t5x/examples/t5/t5_1_1/*.gin`; 'tiny' is our test shape and the two
fixture shapes match the real T5X test checkpoints under `shared/fixtures/t5x/`.
"""

import dataclasses
import warnings
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 1.1 encoder-decoder.

    Attributes:
      vocab_size: rows of the embedding and columns of the logits (32128 for T5).
      emb_dim: model width H.
      num_heads: attention heads.
      num_encoder_layers: encoder depth.
      num_decoder_layers: decoder depth.
      head_dim: width of one head; num_heads * head_dim is T5X's 'joined_kv'.
      mlp_dim: hidden width of the gated-GELU MLP.
      relpos_buckets: relative position buckets (32 in T5).
      relpos_max_distance: distance beyond which buckets saturate (128 in T5).
      dropout_rate: dropout everywhere (0.1 when fine-tuning in T5X).
      attention_dropout_rate: dropout of the attention probabilities; None (default): the
        `dropout_rate`, as T5X. 0.0 with `attention_impl='cudnn'` lets training use the fused
        kernel, which has no dropout (the residual and MLP dropout stay at `dropout_rate`).
      dtype: activation dtype; params are kept in `param_dtype`.
      param_dtype: dtype of params as created (float32 in T5X).
      frozen_dtype: if set, frozen weights are cast to this dtype (e.g. bfloat16) when loaded,
        halving their memory; trainable params stay in `param_dtype`.
      float32_attention_logits: compute attention softmax in float32.
      remat_policy: 'none', 'full' (recompute each layer) or 'dots' (save matmul outputs).
      relpos_per_layer: every layer has its own relative-position bias table (umT5, and T5X's
        scalable_t5 network) instead of T5 1.1's one per stack.
      scan_layers: stack layers and run them with `nn.scan` (faster compiles at depth).
      scan_unroll: with scan_layers, layers per loop iteration (`nn.scan`'s unroll: fewer
        loop trips and launches per step for longer compiles; params and checkpoints alike).
      attention_impl: 'xla' (einsum + softmax, any device) or 'cudnn' (fused attention via
        `jax.nn.dot_product_attention` on NVIDIA GPUs; used when no attention dropout applies).
      attention_padding: how the encoder's self-attention masks padding: 'key_mask' (the
        default: the bias stays [1, heads, L, L] and only padded keys are masked: per row by
        XLA, as key counts by the fused cuDNN kernel, which needs the padding at the end of
        each row, as SeqIO pads; 1.12x the large train step on an H200) or 'bias' (T5X's: a
        [B, 1, L, L] query-and-key mask added to the relative-position bias, so every layer
        reads a [B, heads, L, L] bias, and cuDNN writes a dbias that size). Same loss and
        gradients; padded queries' outputs are zeroed after the encoder either way. Packed rows
        always use 'bias'.
      cross_projection: how the decoder attends to the encoder output: 'projected' (T5X's
        order: project every encoder position to keys and values, per layer), 'absorbed' (fold
        the key/value kernels into the few decoder queries instead; same math, different
        rounding) or 'auto' (whichever needs fewer multiply-adds for the shapes at hand; see
        `layers.absorbed_is_cheaper`). Params and checkpoints are the same for all three.
      fused_bias_grad: with attention_impl='cudnn', when the kernel's backward computes the
        bias gradient: 'auto' (only where the bias is differentiated, i.e. a trainable
        relative-position table; prompt tuning's frozen one needs none) or 'always' (JAX's
        default: for every bias, a [B, heads, L, L] gradient reduced and thrown away).
      recompute_elementwise: the backward pass recomputes the layer norms' and the gated
        GELU's elementwise intermediates from their inputs instead of keeping autodiff's
        residuals (`layers._recomputed_gated_gelu`): a scanned stack then saves 2 [B, L, mlp]
        arrays a layer instead of 7, and bfloat16 norm inputs instead of float32 copies. Same
        loss and gradients.
      fold_norm_scale: the layer norms in front of attention and MLP blocks hand their scale to
        the projections that read them, which multiply it into their kernels (`norms.RMSNorm`'s
        `fold_scale`): XLA:GPU otherwise writes one scaled copy of the normalised activation
        per projection. Same math, other rounding; params and checkpoints unchanged. Off by
        default: 1.03x on the H200's XL step with XLA's Triton GEMMs, 0.99x with cuBLAS (our
        default there) and on CPUs (docs/benchmarks.md).
    """

    vocab_size: int = 32128
    emb_dim: int = 768
    num_heads: int = 12
    num_encoder_layers: int = 12
    num_decoder_layers: int = 12
    head_dim: int = 64
    mlp_dim: int = 2048
    relpos_buckets: int = 32
    relpos_max_distance: int = 128
    relpos_per_layer: bool = False
    dropout_rate: float = 0.0
    attention_dropout_rate: float | None = None
    dtype: Any = "bfloat16"
    param_dtype: Any = "float32"
    frozen_dtype: Any = None
    float32_attention_logits: bool = False
    remat_policy: str = "none"
    scan_layers: bool = False
    scan_unroll: int = 1
    attention_impl: str = "xla"
    attention_padding: str = "key_mask"
    cross_projection: str = "auto"
    fused_bias_grad: str = "auto"
    recompute_elementwise: bool = True
    fold_norm_scale: bool = False

    def __post_init__(self):
        if self.attention_impl not in ("xla", "cudnn"):
            raise ValueError(f"attention_impl must be xla or cudnn, got {self.attention_impl!r}")
        if self.cross_projection not in ("auto", "projected", "absorbed"):
            raise ValueError(
                "cross_projection must be auto, projected or absorbed, got "
                f"{self.cross_projection!r}"
            )
        if self.attention_padding not in ("bias", "key_mask"):
            raise ValueError(
                f"attention_padding must be bias or key_mask, got {self.attention_padding!r}"
            )
        if self.fused_bias_grad not in ("auto", "always"):
            raise ValueError(
                f"fused_bias_grad must be auto or always, got {self.fused_bias_grad!r}"
            )
        if self.scan_unroll < 1:
            raise ValueError(f"scan_unroll must be >= 1, got {self.scan_unroll}")
        if self.remat_policy not in ("none", "full", "dots"):
            raise ValueError(f"remat_policy must be none, full or dots, got {self.remat_policy!r}")
        if self.attention_impl == "cudnn" and self.attention_dropout > 0:
            warnings.warn(
                f"attention_impl='cudnn' with attention dropout {self.attention_dropout}: training "
                "steps use XLA attention (the fused kernel has no dropout; evals still use it). "
                "Set T5Config.attention_dropout_rate = 0.0 to train with it.",
                stacklevel=2,
            )

    @property
    def attention_dropout(self) -> float:
        """Dropout rate of the attention probabilities (`dropout_rate` unless set apart)."""
        if self.attention_dropout_rate is None:
            return self.dropout_rate
        return self.attention_dropout_rate

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def joined_kv(self) -> int:
        return self.num_heads * self.head_dim

    def shape_dict(self) -> dict[str, int]:
        """The fields that fix parameter shapes (what a checkpoint must agree with)."""
        return {
            "vocab_size": self.vocab_size,
            "emb_dim": self.emb_dim,
            "num_heads": self.num_heads,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "head_dim": self.head_dim,
            "mlp_dim": self.mlp_dim,
            "relpos_buckets": self.relpos_buckets,
            # Only when set, so T5 1.1 models keep the shape fingerprints they always had.
            **({"relpos_per_layer": True} if self.relpos_per_layer else {}),
        }


_SIZES = {
    "tiny": dict(
        vocab_size=512,
        emb_dim=8,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        head_dim=2,
        mlp_dim=16,
        relpos_buckets=8,
        relpos_max_distance=16,
    ),
    # Shape of t5x/testdata/test_t5_tiny.checkpoint_0 (shared/fixtures/t5x/).
    "t5x_test_tiny": dict(
        emb_dim=8, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, head_dim=3, mlp_dim=16
    ),
    # Shape of prompt-tuning's test_data/test_t5_1_1_tiny/checkpoint_3.
    "pt_test_tiny": dict(
        emb_dim=4,
        num_heads=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        head_dim=2,
        mlp_dim=8,
        relpos_buckets=4,
        relpos_max_distance=8,
    ),
    "small": dict(
        emb_dim=512, num_heads=6, num_encoder_layers=8, num_decoder_layers=8, mlp_dim=1024
    ),
    "base": dict(
        emb_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, mlp_dim=2048
    ),
    "large": dict(
        emb_dim=1024, num_heads=16, num_encoder_layers=24, num_decoder_layers=24, mlp_dim=2816
    ),
    "xl": dict(
        emb_dim=2048, num_heads=32, num_encoder_layers=24, num_decoder_layers=24, mlp_dim=5120
    ),
    "xxl": dict(
        emb_dim=4096, num_heads=64, num_encoder_layers=24, num_decoder_layers=24, mlp_dim=10240
    ),
}

SIZES = tuple(_SIZES)


def named_config(name: str, **overrides) -> T5Config:
    """Returns the T5 1.1 config called `name` ('tiny', 'small', ..., 'xxl'), with overrides."""
    if name not in _SIZES:
        raise ValueError(f"unknown T5 size {name!r}; choose one of {', '.join(SIZES)}")
    return T5Config(**{**_SIZES[name], **overrides})


def field_value(key: str, text: str):
    """A T5Config field's value from command-line text, in the field's type (`scan_unroll=2`
    is an int, `recompute_elementwise=False` a bool); for tools' `--baseline` / `--set`."""
    defaults = {f.name: f.default for f in dataclasses.fields(T5Config)}
    if key not in defaults:
        raise ValueError(f"{key!r} is not a T5Config field")
    default = defaults[key]
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int | float):
        return type(default)(text)
    if default is None and text.replace(".", "", 1).isdigit():  # attention_dropout_rate=0.0
        return float(text)
    return text
