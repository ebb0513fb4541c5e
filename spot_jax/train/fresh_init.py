"""Seeded fresh init of the frozen weights: the model's own, or drawn as its scanned twin.

Every param's initializer draws threefry bits, and XLA expands each threefry call into a few
hundred integer ops. An unscanned T5 draws once per param of every layer: T5 1.1 base's init is
a program of 104k optimised HLO ops that takes 16 s to compile on our 2-core CPU and over 100 s
on an H200 (2026-11-27: its ~2,900 fusions are each a GPU kernel to build), which stalled every
unscanned benchmark line there. A scanned model draws one layer's params per loop trip (13.6k
ops, 1.9 s).

`as_scanned=True` initialises an unscanned model as its scanned twin and cuts the stacks into
layers (`prompted.unstack_flat`, T5X's `layers_{i}` names): the same shapes and initializers,
with each layer's values drawn from the scan's per-layer keys instead of keys named after the
layer, so a scanned and an unscanned model given one seed start from the same weights. The
benchmark uses it (its weights are random anyway). It is not the default: the values differ
from the model's own init (T5X's), and a fresh init is what a pretraining run starts from.

Whatever the draw, `gpu_threefry_kernels` has JAX lower each threefry call for an NVIDIA or AMD
GPU as one kernel (`jax_threefry_gpu_kernel_lowering`: the same bits, none of the inlined
rounds), which `initial_params.build_params` uses for its init: the model's own init keeps its
values with a fraction of the program to compile (checked here by lowering for CUDA on a CPU;
its GPU compile time is yet to be measured). Training steps keep JAX's default (dropout's bits
stay fused into their consumers instead of being written out by a kernel).
"""

import contextlib
import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
from jax._src import config as jax_config

from spot_jax.models.prompted import PromptedT5, is_prompt_path, unstack_flat
from spot_jax.train import state as state_lib


def _own_init(model: PromptedT5, batch: Mapping[str, jax.Array]):
    def init(rng):
        flat = state_lib.flatten_params(nn.unbox(model.init(rng, batch)))
        # The prompts have their own initialisers (initial_params.build_params).
        return {k: v for k, v in flat.items() if not is_prompt_path(k)}

    return init


def scanned_twin(model: PromptedT5) -> PromptedT5:
    """The same model with its layers stacked and scanned (the prompt, decoding etc. kept)."""
    return model.replace(config=dataclasses.replace(model.config, scan_layers=True))


def frozen_init(
    model: PromptedT5, batch: Mapping[str, jax.Array], *, as_scanned: bool = False
) -> Callable:
    """`rng -> flat frozen params` (prompt left out) in `model.config.frozen_dtype`, to jit.

    Args:
      batch: arrays of the shapes to initialise for (their values are not read).
      as_scanned: an unscanned model is drawn as its scanned twin (compiles in seconds at any
        depth; other values than the model's own init). Where the twin's params don't line up
        with the model's, the model's own init runs.
    """
    init = _own_init(model, batch)
    if as_scanned and not model.config.scan_layers:
        twin_init = _own_init(scanned_twin(model), batch)
        cut = lambda rng: unstack_flat(twin_init(rng))  # noqa: E731
        shapes = lambda fn: {  # noqa: E731
            k: (v.shape, v.dtype) for k, v in jax.eval_shape(fn, jax.random.PRNGKey(0)).items()
        }
        if shapes(cut) == shapes(init):
            init = cut
    dtype = model.config.frozen_dtype
    return lambda rng: {k: v.astype(dtype) if dtype else v for k, v in init(rng).items()}


@contextlib.contextmanager
def gpu_threefry_kernels():
    """Within, programs traced and lowered for GPUs draw threefry bits with one kernel per call
    (a no-op on CPU and TPU, and where JAX lacks the flag)."""
    flag = getattr(jax_config, "threefry_gpu_kernel_lowering", None)
    if flag is None:
        yield
        return
    with flag(True):
        yield
