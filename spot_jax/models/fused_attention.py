"""cuDNN's fused attention with the bias gradient computed only when something needs it.

JAX's `dot_product_attention(implementation='cudnn')` asks the backward kernel for dbias
whenever a bias is given, and a custom call's output cannot be pruned: cuDNN materialises the
[B, heads, L, L] score gradient and reduces it to the bias's shape in every layer of every
step (`fmha_dbias`, 3.4% of an XL step on an H200). T5's bias is made of the relative-position
table and the padding, and in prompt tuning the table is frozen: that dbias is thrown away.

`attention` wraps the call in a `jax.custom_vjp` with symbolic zeros, so its forward knows
whether the bias is perturbed (differentiated) in this trace. Only then does the kernel
export dbias; otherwise the call is traced with JAX's decision overridden at the one place it
is made, which moved between releases:
  - JAX <= 0.10: the module-global `should_export_dbias(...)`, made to answer no;
  - JAX 0.11: `has_dbias = has_bias and bias_is_differentiable` (True for any explicit bias),
    handed to the private `_dot_product_attention` as `variadic_args=(has_bias, has_dbias)`:
    that call's `variadic_args` is rewritten to `(has_bias, False)`, after which JAX's own
    backward rule returns no bias cotangent.
Model tuning (a trainable table), or a JAX with neither, gets JAX's own behaviour.
"""

import contextlib
import functools
import inspect
import threading

import jax
import jax.numpy as jnp

BIAS_GRAD = ("auto", "always")


# The override is process-wide: traces of the call, overridden or not, take turns, so a trace
# in another thread that wants dbias never sees it.
_OVERRIDE_LOCK = threading.RLock()


def _without_dbias(call):
    """`call` (JAX's private `_dot_product_attention`) with `variadic_args[1]` (has_dbias) False,
    or None where its signature has no `variadic_args`."""
    try:
        signature = inspect.signature(getattr(call, "fun", call))  # custom_vjp keeps `fun`
    except (TypeError, ValueError):
        return None
    if "variadic_args" not in signature.parameters:
        return None

    def call_without_dbias(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        has_bias, *_ = bound.arguments["variadic_args"]
        bound.arguments["variadic_args"] = (has_bias, False)
        return call(*bound.args, **bound.kwargs)

    return call_without_dbias


@contextlib.contextmanager
def _dbias_export(wanted: bool):
    """Within, JAX's cuDNN attention exports dbias only if `wanted` (no-op where neither
    override applies: JAX then decides, which is never wrong, only slower)."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo as cudnn
    except ImportError:
        cudnn = None
    with _OVERRIDE_LOCK:
        if wanted or cudnn is None:
            yield
            return
        if hasattr(cudnn, "should_export_dbias"):  # JAX <= 0.10
            name, override = "should_export_dbias", lambda *args, **kwargs: False
        else:  # JAX 0.11
            name = "_dot_product_attention"
            override = _without_dbias(getattr(cudnn, name, None))
        if override is None:
            yield
            return
        original = getattr(cudnn, name)
        setattr(cudnn, name, override)
        try:
            yield
        finally:
            setattr(cudnn, name, original)


def _call(q, k, v, bias, key_counts, implementation: str, dbias: bool):
    # Scale 1 because T5 folds 1/sqrt(d) into the query init.
    with _dbias_export(dbias):
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            bias=bias,
            scale=1.0,
            key_value_seq_lengths=key_counts,
            implementation=implementation,
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attend(q, k, v, bias, key_counts, implementation):
    # Run as is when nothing is differentiated (inference, or a decoder layer before any
    # perturbed input): no backward follows.
    return _call(q, k, v, bias, key_counts, implementation, dbias=False)


def _attend_fwd(q, k, v, bias, key_counts, implementation):
    # symbolic_zeros: each array argument arrives as CustomVJPPrimal(value, perturbed).
    wanted = bias.perturbed
    counts = None if key_counts is None else key_counts.value

    def fn(q, k, v, b):
        return _call(q, k, v, b, counts, implementation, dbias=wanted)

    return jax.vjp(fn, q.value, k.value, v.value, bias.value)


def _attend_bwd(implementation, vjp, g):
    del implementation
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        g = jnp.zeros(g.shape, g.dtype)
    # Unwanted, the bias's cotangent is zeros, which JAX drops: nothing differentiates it.
    dq, dk, dv, dbias = vjp(g)
    return dq, dk, dv, dbias, None


_attend.defvjp(_attend_fwd, _attend_bwd, symbolic_zeros=True)


def attention(q, k, v, bias=None, key_counts=None, *, implementation="cudnn", bias_grad="auto"):
    """`jax.nn.dot_product_attention` (scale 1) over q [B, Q, heads, D], k/v [B, K, heads, D].

    Args:
      bias: broadcastable to [B, heads, Q, K], or None.
      key_counts: [B] valid keys per row (they lead the row), or None.
      bias_grad: 'auto' (dbias only where the bias is differentiated) or 'always' (JAX's
        default: whenever there is a bias).
    """
    if bias_grad not in BIAS_GRAD:
        raise ValueError(f"bias_grad must be one of {BIAS_GRAD}, got {bias_grad!r}")
    if bias is None or bias_grad == "always":
        return _call(q, k, v, bias, key_counts, implementation, dbias=True)
    return _attend(q, k, v, bias, key_counts, implementation)
