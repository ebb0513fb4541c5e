"""XLA flags spot_jax sets by default, before JAX starts its backend.

On CPU, routing matmuls through oneDNN custom calls and elementwise fusions through XNNPACK
makes the small-model train step ~20% faster than XLA's default Eigen path on this project's
2-core machines (docs/benchmarks.md), which puts it ahead of PyTorch + PEFT there. The flags
only affect the CPU backend. A user's own XLA_FLAGS setting of the same flag wins, and
SPOT_JAX_DEFAULT_XLA_FLAGS=0 turns the defaults off.
"""

import os

CPU_FLAGS = (
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
)


def set_default_xla_flags() -> None:
    """Appends our defaults to XLA_FLAGS unless the user set them (call before using JAX)."""
    if os.environ.get("SPOT_JAX_DEFAULT_XLA_FLAGS", "1") == "0":
        return
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in CPU_FLAGS if f.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
