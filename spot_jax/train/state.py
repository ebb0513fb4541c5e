"""Train state: only what changes. Frozen weights live outside it.

Keeping frozen params out of the state means the jitted step neither donates nor returns them
(no per-step copy of an 11B-param model), the optimizer holds no state for them, and an Orbax
checkpoint of the state is a few MB for prompt tuning.
"""

from collections.abc import Mapping

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax

from spot_jax.train import optim

Params = dict[str, jax.Array]  # flat {'encoder/prompt/prompt/prompt': array}


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar; trainable: flat param dict; opt_state: optimizer state of it."""

    step: jax.Array
    trainable: Params
    opt_state: optax.OptState


def create(
    trainable: Params, optimizer: optax.GradientTransformation, global_step: int = 0
) -> TrainState:
    """A fresh state at step 0 (TRAIN_STEPS counts from here); the optimizer's Adafactor
    statistics start at the frozen model's `global_step`, as T5X's (`optim.at_global_step`)."""
    opt_state = optimizer.init(trainable)
    if global_step:
        opt_state = optim.at_global_step(opt_state, global_step)
    return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, opt_state=opt_state)


def merge_params(trainable: Mapping[str, jax.Array], frozen: Mapping[str, jax.Array]):
    """Flat trainable + flat frozen -> the nested tree the Flax module takes."""
    return flax.traverse_util.unflatten_dict({**frozen, **trainable}, sep="/")


def flatten_params(params) -> Params:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
