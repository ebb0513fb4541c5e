"""XLA flags spot_jax sets by default, before JAX starts its backend.

On CPU, routing matmuls through oneDNN custom calls and elementwise fusions through XNNPACK
makes the small-model train step ~20% faster than XLA's default Eigen path on this project's
2-core machines (docs/benchmarks.md), which puts it ahead of PyTorch + PEFT there.

On GPUs, XLA's Triton GEMM fusions (a matmul fused with its neighbours' elementwise work) lose
to plain cuBLAS on the frozen T5's matmuls: with them off the XL train step on an H200 runs
0.224 instead of 0.239 s (50.9% instead of 47.8% MFU) and XXL 0.809 instead of 0.831 s
(docs/benchmarks.md). Each flag only affects its own backend. A user's own XLA_FLAGS setting of
the same flag wins, and SPOT_JAX_DEFAULT_XLA_FLAGS=0 turns the defaults off.
"""

import os

CPU_FLAGS = (
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
)
GPU_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def set_default_xla_flags() -> None:
    """Appends our defaults to XLA_FLAGS unless the user set them (call before using JAX)."""
    if os.environ.get("SPOT_JAX_DEFAULT_XLA_FLAGS", "1") == "0":
        return
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in (*CPU_FLAGS, *GPU_FLAGS) if f.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
