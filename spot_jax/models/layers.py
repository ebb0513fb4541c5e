"""T5 1.1 building blocks in Flax linen, with T5X's parameter names, shapes and logical axes.

Kernels are 2-D (T5X's DenseGeneral stores `[prod(in), prod(out)]`), so attention projections
are `[H, heads * head_dim]` with the 'joined_kv' axis and checkpoints map one to one. Params are
created in `param_dtype` (float32) and cast to the activation dtype at use.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import axes
from spot_jax.models import fused_attention

Array = jax.Array

# Attention bias for masked positions: large negative, not -inf, so fully masked rows (padding)
# give a uniform softmax instead of NaN.
NEG_INF = -1e10


class KeyMask(NamedTuple):
    """An attention bias without the padding (e.g. T5's relative positions, [1, heads, Q, K])
    and the keys each row may attend to ([B, K], 1 = attend), kept apart so that the fused
    kernel gets the padding as per-row key counts, not inside a [B, heads, Q, K] bias. Query
    rows are not masked (a padded query's output is garbage the caller zeroes)."""

    bias: Array
    keys: Array

    def dense(self) -> Array:
        """The whole additive bias, broadcastable to [B, heads, Q, K]."""
        padding = jnp.where(self.keys > 0, 0.0, NEG_INF)[:, None, None, :]
        return self.bias + padding.astype(jnp.float32)


class Normed(NamedTuple):
    """A layer norm's output with its scale not yet applied (`norms.RMSNorm(fold_scale=True)`):
    `Dense` multiplies the scale into its kernel, `(x * scale) @ W = x @ (scale[:, None] * W)`,
    so no scaled copy of the activation is ever written."""

    x: Array  # [..., H], normalised rows
    scale: Array  # [H]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape


attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
mlp_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


@jax.custom_vjp
def softmax(logits: Array) -> Array:
    """Softmax over the last axis whose backward reads the saved probabilities.

    Same values and gradient as `jax.nn.softmax`. With that one, XLA:CPU rebuilt the
    probabilities in each attention backward from the exponentials and a broadcast copy of the
    reciprocal row sums ([B, heads, Q, K] per layer); reading the saved output is 3-4% faster
    for the float32 small train step (docs/benchmarks.md). As a `custom_vjp` it has no
    forward-mode derivative (`jax.jvp`); reverse mode (`grad`, `vjp`) is what training uses.
    """
    return jax.nn.softmax(logits)


def _softmax_forward(logits: Array) -> tuple[Array, Array]:
    probs = jax.nn.softmax(logits)
    return probs, probs


def _softmax_backward(probs: Array, grad: Array) -> tuple[Array]:
    # d softmax: p * (g - sum(g * p)), the rows' Jacobian-vector product.
    return (probs * (grad - jnp.sum(grad * probs, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_forward, _softmax_backward)


def param_with_axes(module: nn.Module, name: str, init, shape, logical_axes, dtype) -> Array:
    """Creates a param annotated with its logical axes (read back by `nn.get_partition_spec`)."""
    return module.param(name, nn.with_logical_partitioning(init, logical_axes), shape, dtype)


def constrain(x: Array, logical_axes: tuple[str | None, ...]) -> Array:
    """Sharding constraint on an activation at a block boundary (no-op without a mesh)."""
    return nn.with_logical_constraint(x, logical_axes)


def _gated_gelu(gate: Array, linear: Array) -> Array:
    # flax's gelu defaults to the tanh approximation, as T5X (and HF's gelu_new) use.
    return nn.gelu(gate) * linear


# The gated GELU's backward pass recomputes its intermediates from its two inputs. Autodiff
# saves what its derivative rules read: five [B, L, mlp] arrays besides the inputs (x^2, tanh,
# 1 - tanh^2, ...). A scanned stack writes every saved array into a per-layer stack and reads it
# back (XL, no remat: ~2.4 GB a layer with the norms' float32 copies, 10% of the step in those
# copies on an H200), where XLA fuses the recomputation into the backward kernels that read the
# inputs anyway. Same values. (`norms._recomputed_rms_norm` does the same for the layer norms.)
_recomputed_gated_gelu = jax.checkpoint(_gated_gelu)


class Dense(nn.Module):
    """Bias-free projection with a 2-D kernel `[in, out]` and logical axes."""

    features: int
    kernel_axes: tuple[str, str]
    kernel_init: Any = mlp_kernel_init
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array | Normed) -> Array:
        kernel = param_with_axes(
            self,
            "kernel",
            self.kernel_init,
            (x.shape[-1], self.features),
            self.kernel_axes,
            self.param_dtype,
        )
        if isinstance(x, Normed):  # the norm's scale multiplies the kernel's rows instead
            kernel = kernel * jnp.asarray(x.scale, kernel.dtype)[:, None]
            x = x.x
        return jnp.dot(jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype))


class Embed(nn.Module):
    """Token embedding `[V, H]`; T5 1.1 has no sqrt(H) scaling and untied logits."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = param_with_axes(
            self,
            "embedding",
            nn.initializers.normal(stddev=1.0),
            (self.num_embeddings, self.features),
            (axes.VOCAB, axes.EMBED),
            self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        """ids: [B, T] int -> [B, T, H] in the activation dtype."""
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)


class Kernel(nn.Module):
    """The `kernel` param of a `Dense` of the same name, without applying it (same path, init
    and axes), for computations that contract the kernel with something else than inputs."""

    in_features: int
    features: int
    kernel_axes: tuple[str, str]
    kernel_init: Any = mlp_kernel_init
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        shape = (self.in_features, self.features)
        return param_with_axes(
            self, "kernel", self.kernel_init, shape, self.kernel_axes, self.param_dtype
        )


def absorbed_is_cheaper(q_len: int, k_len: int, features: int, num_heads: int, head_dim: int):
    """Whether cross-attention costs fewer multiply-adds with the key/value projections absorbed.

    Projected (T5X's order): K = kv @ Wk and V = kv @ Wv over all k_len memory rows, then
    scores and context in head_dim. Absorbed: q @ Wk_h^T per head, scores and context against
    the memory rows themselves (width `features`), then @ Wv_h. Cheaper when the queries are
    few: a 16-token decoder target over a 228-token prompted input needs 3x fewer, and one
    decoding step 50x fewer (the projection of the whole memory is not redone every step).
    """
    joined = num_heads * head_dim
    projected = 2 * k_len * features * joined + 2 * q_len * k_len * joined
    absorbed = 2 * q_len * joined * features + 2 * num_heads * q_len * k_len * features
    return absorbed < projected


class MultiHeadAttention(nn.Module):
    """T5 attention: no 1/sqrt(d) at run time (folded into the query init), no biases.

    In decode mode it keeps a key/value cache `[B, max_len, heads, head_dim]` and attends one
    new query position per call. `cross_projection` picks how attention to a separate memory
    (`inputs_kv` not `inputs_q`) is evaluated: 'projected' (keys and values projected first),
    'absorbed' (the projections multiplied into the query and context instead; same math,
    other rounding) or 'auto' (whichever takes fewer multiply-adds, `absorbed_is_cheaper`).
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32
    float32_logits: bool = False
    implementation: str = "xla"
    cross_projection: str = "projected"
    fused_bias_grad: str = "auto"  # `fused_attention.attention`'s bias_grad

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        bias: Array | None,
        *,
        deterministic: bool,
        decode: bool = False,
    ) -> Array:
        """inputs_q: [B, Q, H]; inputs_kv: [B, K, H]; bias: broadcastable to [B, heads, Q, K],
        or a `KeyMask` (the fused kernel then reads the padding as key counts: valid keys must
        lead each row, as SeqIO pads at the end)."""
        features = inputs_q.shape[-1]
        joined = self.num_heads * self.head_dim
        dense = functools.partial(
            Dense,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_axes=(axes.EMBED, axes.JOINED_KV),
        )
        query_init = lambda *a: attention_kernel_init(*a) / np.sqrt(self.head_dim)  # noqa: E731
        split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, self.head_dim))  # noqa: E731
        q = split(dense(joined, kernel_init=query_init, name="query")(inputs_q))
        dropout = not deterministic and self.dropout_rate > 0
        fused = self.implementation == "cudnn" and not decode and not dropout
        key_counts = None
        if isinstance(bias, KeyMask):
            if fused and not self._absorb(inputs_q, inputs_kv, decode):
                key_counts = jnp.sum(bias.keys > 0, axis=-1).astype(jnp.int32)
                bias = bias.bias
            else:
                bias = bias.dense()
        if self._absorb(inputs_q, inputs_kv, decode):
            out = self._absorbed(q, inputs_kv, bias, deterministic=deterministic)
            return self._out(out.reshape(inputs_q.shape[:2] + (joined,)), features)
        k = split(dense(joined, kernel_init=attention_kernel_init, name="key")(inputs_kv))
        v = split(dense(joined, kernel_init=attention_kernel_init, name="value")(inputs_kv))
        head_axes = (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
        q, k, v = (constrain(t, head_axes) for t in (q, k, v))

        if decode:
            k, v, bias = self._update_cache(k, v, bias)

        if fused:
            bias_q = None if bias is None else jnp.asarray(bias, q.dtype)
            out = fused_attention.attention(
                q, k, v, bias_q, key_counts, bias_grad=self.fused_bias_grad
            )
            return self._out(out.reshape(inputs_q.shape[:2] + (joined,)), features)
        logits_dtype = jnp.float32 if self.float32_logits else self.dtype
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=logits_dtype)
        if bias is not None:
            logits = logits + jnp.asarray(bias, logits_dtype)
        weights = softmax(logits).astype(self.dtype)
        if not deterministic and self.dropout_rate > 0:
            # One mask per key column, shared over query rows (T5X broadcasts the query dim).
            shape = weights.shape[:2] + (1,) + weights.shape[3:]
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.dropout_rate, shape)
            weights = weights * keep.astype(self.dtype) / (1 - self.dropout_rate)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(inputs_q.shape[:2] + (joined,))
        return self._out(out, features)

    def _absorb(self, inputs_q: Array, inputs_kv: Array, decode: bool) -> bool:
        if self.cross_projection == "projected" or decode or inputs_q is inputs_kv:
            return False
        if self.cross_projection == "absorbed":
            return True
        # By FLOPs whatever `implementation` says: the absorbed form is a few einsums (its keys
        # are H wide, beyond fused attention kernels), and cuDNN keeps the self-attention.
        return absorbed_is_cheaper(
            inputs_q.shape[1],
            inputs_kv.shape[1],
            inputs_kv.shape[-1],
            self.num_heads,
            self.head_dim,
        )

    def _absorbed(self, q: Array, memory: Array, bias: Array | None, *, deterministic: bool):
        """Attention of q [B, Q, heads, D] to memory [B, K, H] with Wk, Wv folded into the
        query and the context (`absorbed_is_cheaper`). Returns [B, Q, heads, D]."""
        width = memory.shape[-1]
        kernel = functools.partial(
            Kernel,
            width,
            self.num_heads * self.head_dim,
            (axes.EMBED, axes.JOINED_KV),
            attention_kernel_init,
            self.param_dtype,
        )
        per_head = (width, self.num_heads, self.head_dim)
        wk = jnp.asarray(kernel(name="key")(), self.dtype).reshape(per_head)
        wv = jnp.asarray(kernel(name="value")(), self.dtype).reshape(per_head)
        memory = jnp.asarray(memory, self.dtype)
        logits_dtype = jnp.float32 if self.float32_logits else self.dtype
        # Query-major layouts ([B, Q, heads, ...]) make each einsum one plain batched matmul
        # over B with rows (Q, heads); head-major ones cost transposes, and with one query (a
        # decoding step) fall off the fast matmul path on CPU.
        q_memory = jnp.einsum("bqhd,ehd->bqhe", q, wk)  # [B, Q, heads, H]
        logits = jnp.einsum("bqhe,bke->bqhk", q_memory, memory, preferred_element_type=logits_dtype)
        if bias is not None:
            logits = logits + jnp.swapaxes(jnp.asarray(bias, logits_dtype), 1, 2)
        weights = softmax(logits).astype(self.dtype)  # [B, Q, heads, K]
        if not deterministic and self.dropout_rate > 0:
            # The projected path's mask ([B, heads, 1, K]), so both forms drop the same keys.
            shape = (weights.shape[0], weights.shape[2], 1, weights.shape[3])
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1 - self.dropout_rate, shape)
            keep = jnp.swapaxes(keep, 1, 2)
            weights = weights * keep.astype(self.dtype) / (1 - self.dropout_rate)
        context = jnp.einsum("bqhk,bke->bqhe", weights, memory)  # [B, Q, heads, H]
        return jnp.einsum("bqhe,ehd->bqhd", context, wv)

    def _out(self, out: Array, features: int) -> Array:
        return Dense(
            features,
            kernel_axes=(axes.JOINED_KV, axes.EMBED),
            kernel_init=attention_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out)

    def _update_cache(self, k: Array, v: Array, bias: Array | None):
        """Writes this step's key/value at `cache_index` and returns the whole cache.

        The first call (cache initialisation, via `init` with the full-length decoder input)
        only sizes the cache; later calls take one token.
        """
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            return k, v, bias
        if k.shape[1] != 1:
            raise ValueError(f"decode mode takes one token per call, got length {k.shape[1]}")
        index = cache_index.value
        max_len = cached_key.value.shape[1]
        cached_key.value = jax.lax.dynamic_update_slice_in_dim(cached_key.value, k, index, axis=1)
        cached_value.value = jax.lax.dynamic_update_slice_in_dim(
            cached_value.value, v, index, axis=1
        )
        cache_index.value = index + 1
        # Only positions written so far are visible.
        visible = jnp.arange(max_len) <= index
        causal_bias = jnp.where(visible, 0.0, NEG_INF)[None, None, None, :]
        bias = causal_bias if bias is None else bias + causal_bias
        return cached_key.value, cached_value.value, bias


class MlpBlock(nn.Module):
    """Gated GELU: gelu(x @ wi_0) * (x @ wi_1) -> dropout -> wo.

    `recompute`: the backward pass keeps the two projections and recomputes the GELU from them
    (`_recomputed_gated_gelu`); False: autodiff's residuals (seven [B, L, mlp] arrays)."""

    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32
    recompute: bool = True

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        dense = functools.partial(Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = dense(self.mlp_dim, kernel_axes=(axes.EMBED, axes.MLP), name="wi_0")(x)
        linear = dense(self.mlp_dim, kernel_axes=(axes.EMBED, axes.MLP), name="wi_1")(x)
        h = (_recomputed_gated_gelu if self.recompute else _gated_gelu)(gate, linear)
        h = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
        h = constrain(h, (axes.BATCH, axes.LENGTH, axes.MLP))
        return dense(x.shape[-1], kernel_axes=(axes.MLP, axes.EMBED), name="wo")(h)
