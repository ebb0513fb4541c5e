"""Optimizers: T5X's Adafactor in optax pieces, learning-rate schedules, and trainable masks.

Prompt-tuning's defaults: Adafactor with decay_rate 0.8, no parameter scaling, update clipping
at RMS 1.0, weight decay 1e-5 applied as `(1 - wd) * param` (NOT scaled by the learning rate,
as in T5X), and a constant learning rate of 0.3. As in T5X, Adafactor's second-moment decay
reads the global step, which continues from the pretrained checkpoint's (`at_global_step`).
"""

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spot_jax.models import prompted

# Default TRAINABLE: prompt-tuning's PROMPT_REGEX, matched (fullmatch) against 'a/b/c' paths.
PROMPT_REGEX = r".*/prompt/.*"


def learning_rate_schedule(
    factors: str = "constant",
    base_learning_rate: float = 0.3,
    warmup_steps: int = 1000,
    decay_steps: int | None = None,
    min_learning_rate: float = 1e-8,
) -> Callable[[jax.Array], jax.Array]:
    """T5X-style schedule: the product of named factors.

    Args:
      factors: '*'-separated names among constant, linear_warmup, rsqrt_decay, linear_decay
        (decays linearly to 0 at `decay_steps`) and cosine_decay (over `decay_steps`).
      base_learning_rate: value of 'constant'.
      warmup_steps: length of the warmup and the floor of rsqrt_decay.
      decay_steps: length of linear/cosine decay.
      min_learning_rate: lower bound of the result.
    """
    names = [f.strip() for f in factors.split("*")]
    known = {"constant", "linear_warmup", "rsqrt_decay", "linear_decay", "cosine_decay"}
    unknown = set(names) - known
    if unknown:
        raise ValueError(f"unknown learning-rate factors {sorted(unknown)}; known: {sorted(known)}")
    if {"linear_decay", "cosine_decay"} & set(names) and not decay_steps:
        raise ValueError("linear_decay and cosine_decay need decay_steps")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        lr = jnp.asarray(1.0, jnp.float32)
        for name in names:
            if name == "constant":
                lr *= base_learning_rate
            elif name == "linear_warmup":
                lr *= jnp.minimum(1.0, step / max(warmup_steps, 1))
            elif name == "rsqrt_decay":
                lr /= jnp.sqrt(jnp.maximum(step, warmup_steps))
            elif name == "linear_decay":
                lr *= jnp.maximum(0.0, 1.0 - step / decay_steps)
            elif name == "cosine_decay":
                lr *= 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step, decay_steps) / decay_steps))
        return jnp.maximum(lr, min_learning_rate)

    return schedule


class Optimizer(NamedTuple):
    """An optax transformation that also says its learning rate: a float or a schedule of the
    0-based update count. The trainer logs it as `train/learning_rate` (T5X's summary); any
    optax transformation still works as an optimizer, without that line."""

    init: Callable[..., Any]
    update: Callable[..., Any]
    learning_rate: float | Callable[[jax.Array], jax.Array]


def learning_rate_at(optimizer, step: int) -> float | None:
    """The rate `optimizer` used for its update number `step` (0-based); None if unknown."""
    lr = getattr(optimizer, "learning_rate", None)
    if lr is None:
        return None
    return float(lr(step)) if callable(lr) else float(lr)


def at_global_step(opt_state: optax.OptState, step: int) -> optax.OptState:
    """Starts Adafactor's second-moment decay at the model's global `step`, as T5X's does.

    T5X computes the decay `1 - (step - step_offset + 1)^-0.8` from the global step, which a
    run started from a pretrained checkpoint continues (1,100,000 for the LM-adapted T5 1.1):
    prompt tuning then runs with a decay near 1, so the fresh prompt's second moment stays
    small and each update is clipped to RMS 1 x the learning rate, step after step (t5x
    adafactor.py; prompt-tuning keeps `step_offset=0`). optax counts from 0 instead; setting
    the count reproduces T5X. Learning-rate schedules keep their own count (from 0).
    """

    def start(node):
        if isinstance(node, optax.FactoredState):
            return node._replace(count=jnp.full_like(node.count, step))
        return node

    return jax.tree.map(start, opt_state, is_leaf=lambda n: isinstance(n, optax.FactoredState))


def _decoupled_weight_decay(rate: float) -> optax.GradientTransformation:
    """Adds `-rate * param` to the update, unscaled by the learning rate (T5X Adafactor)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params")
        updates = jax.tree.map(lambda u, p: u - rate * p.astype(u.dtype), updates, params)
        return updates, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _param_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _averaged_axes(name: str, x: jax.Array) -> tuple[int, ...]:
    """The axes T5X's Adafactor averages a param's update RMS and scale over: all but a scanned
    stack's leading layer axis ('layers' is a BATCH axis in T5X's logical factor rules), so a
    scanned model clips and scales each layer on its own, as an unscanned one does."""
    return tuple(range(1 if prompted.is_stacked(name) else 0, x.ndim))


def _rms(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def _clip_by_rms(threshold: float) -> optax.GradientTransformation:
    """T5X's update clipping: y / max(1, RMS(y) / threshold), per param (per layer if scanned)."""

    def update_fn(updates, state, params=None):
        def clip(path, u):
            return u / jnp.maximum(1.0, _rms(u, _averaged_axes(_param_name(path), u)) / threshold)

        return jax.tree_util.tree_map_with_path(clip, updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _scale_by_param_rms(min_scale: float) -> optax.GradientTransformation:
    """T5X's multiply_by_parameter_scale: updates times max(RMS(param), min_scale), per param
    (per layer if scanned)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("parameter scaling needs params")

        def scale(path, u, p):
            p = p.astype(jnp.float32)
            return u * jnp.maximum(_rms(p, _averaged_axes(_param_name(path), p)), min_scale)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def adafactor(
    learning_rate: float | Callable = 0.3,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    clipping_threshold: float | None = 1.0,
    weight_decay_rate: float | None = 1e-5,
    multiply_by_parameter_scale: bool = False,
    factored: bool = True,
    min_dim_size_to_factor: int = 128,
    epsilon1: float = 1e-30,
    epsilon2: float = 1e-3,
    beta1: float | None = None,
) -> Optimizer:
    """T5X's Adafactor. A [100, H] prompt (both dims < 128 at P=100) gets an unfactored v."""
    chain = [
        optax.scale_by_factored_rms(
            factored=factored,
            decay_rate=decay_rate,
            step_offset=step_offset,
            min_dim_size_to_factor=min_dim_size_to_factor,
            epsilon=epsilon1,
        )
    ]
    if clipping_threshold is not None:
        chain.append(_clip_by_rms(clipping_threshold))
    if multiply_by_parameter_scale:
        chain.append(_scale_by_param_rms(epsilon2))
    chain.append(optax.scale_by_learning_rate(learning_rate))
    if beta1 is not None:
        chain.append(optax.ema(beta1, debias=False))
    if weight_decay_rate:
        chain.append(_decoupled_weight_decay(weight_decay_rate))
    transform = optax.chain(*chain)
    return Optimizer(transform.init, transform.update, learning_rate)


def adamw(
    learning_rate: float | Callable = 1e-3, weight_decay: float = 0.0, clip_norm: float = 1.0
) -> Optimizer:
    """AdamW with global-norm clipping (PEFT's usual prompt-tuning optimizer)."""
    transform = optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(learning_rate, weight_decay=weight_decay),
    )
    return Optimizer(transform.init, transform.update, learning_rate)


def split_trainable(
    flat_params: Mapping[str, jax.Array], trainable_regex: str
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Splits a flat {'a/b/c': array} dict into (trainable, frozen) by `re.fullmatch`."""
    pattern = re.compile(trainable_regex)
    trainable = {k: v for k, v in flat_params.items() if pattern.fullmatch(k)}
    frozen = {k: v for k, v in flat_params.items() if not pattern.fullmatch(k)}
    if not trainable:
        raise ValueError(
            f"TRAINABLE={trainable_regex!r} matches no parameter; e.g. {next(iter(flat_params))!r}"
        )
    return trainable, frozen
