"""Test setup: 8 virtual CPU devices, set before JAX is first imported."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow quiet and off any GPU in tests that load it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
