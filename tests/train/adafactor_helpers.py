"""Helpers of the optimizer-state tests (tests/train is on sys.path under pytest)."""

import jax
import optax

from spot_jax.train import optim


def model_tune_adafactor(**kw):
    """runs/model_tune.gin's Adafactor: parameter scaling, no weight decay, lr 1e-3."""
    return optim.adafactor(
        learning_rate=1e-3, weight_decay_rate=None, multiply_by_parameter_scale=True, **kw
    )


def factored_state(opt_state) -> optax.FactoredState:
    """The (first) Adafactor state in an optax state tree."""
    is_fs = lambda n: isinstance(n, optax.FactoredState)  # noqa: E731
    return next(n for n in jax.tree.leaves(opt_state, is_leaf=is_fs) if is_fs(n))
