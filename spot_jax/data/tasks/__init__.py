"""SeqIO tasks and mixtures spot_jax registers (TF inside: behind the data seam's fence).

Importing this package registers every task; `register_all()` does it again after a
`seqio.TaskRegistry.reset()` (which tests use), since a module body runs only once.

For now there is one task, `spot_demo_copy_v1`, the foundation's smoke test; SPoT's task
catalog (GLUE, SuperGLUE, ...) comes in later modules, one file per family.
"""

from __future__ import annotations

from spot_jax.data.tasks import demo


def register_all() -> None:
    """Registers all of spot_jax's tasks and mixtures; safe to call repeatedly."""
    demo.register()


register_all()
