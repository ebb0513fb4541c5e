"""Test setup: 8 virtual CPU devices, set before JAX is first imported."""

import atexit
import os
import shutil
import tempfile

# Optimisation level 0: the tiny test programs compile ~40% faster and run fast enough anyway.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow quiet and off any GPU in tests that load it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One compilation cache for the session, inherited by the CLI subprocesses: the tiny model's
# programs compile in seconds on a small CPU, and many tests (and every `spot-jax` run) compile
# the same ones. A fresh directory per session keeps results independent of earlier runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="spot_jax_test_jit_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
