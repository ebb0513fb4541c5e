"""spot_jax: soft prompt transfer (SPoT) on a slim T5X-compatible JAX runtime."""

__version__ = "0.1.0"
