"""The default XLA flags: appended once, the user's own setting wins, and an opt-out."""

import subprocess
import sys

from spot_jax import runtime_flags


def test_defaults_are_appended_after_the_users_flags(monkeypatch):
    monkeypatch.delenv("SPOT_JAX_DEFAULT_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    runtime_flags.set_default_xla_flags()
    flags = runtime_flags.os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_dump_to=/tmp/x", *runtime_flags.CPU_FLAGS, *runtime_flags.GPU_FLAGS]
    runtime_flags.set_default_xla_flags()  # a second call adds nothing
    assert runtime_flags.os.environ["XLA_FLAGS"].split() == flags


def test_the_users_setting_of_a_flag_wins(monkeypatch):
    monkeypatch.delenv("SPOT_JAX_DEFAULT_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=true")
    runtime_flags.set_default_xla_flags()
    flags = runtime_flags.os.environ["XLA_FLAGS"].split()
    assert "--xla_gpu_enable_triton_gemm=true" in flags
    assert "--xla_gpu_enable_triton_gemm=false" not in flags
    assert set(runtime_flags.CPU_FLAGS) <= set(flags)


def test_opt_out_leaves_xla_flags_alone(monkeypatch):
    monkeypatch.setenv("SPOT_JAX_DEFAULT_XLA_FLAGS", "0")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    runtime_flags.set_default_xla_flags()
    assert runtime_flags.os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"


def test_every_default_flag_is_one_this_xla_knows():
    # XLA aborts at backend start on a flag it does not know, whatever the backend: a renamed
    # GPU flag would break CPU runs too.
    code = (
        "from spot_jax import runtime_flags; runtime_flags.set_default_xla_flags(); "
        "import jax, jax.numpy as jnp; print(float(jnp.ones(3).sum()))"
    )
    env = {**runtime_flags.os.environ, "SPOT_JAX_DEFAULT_XLA_FLAGS": "1", "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3.0"
