"""Test setup: 8 virtual CPU devices, set before JAX is first imported; shared fixtures."""

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# The shared fixtures (real T5X checkpoints, T5's SentencePiece model): beside the checkout on
# dev machines (../shared), or at this machine's /work/shared when the checkout is a fresh
# clone elsewhere (CI). Tests that need them skip where neither exists.
_SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault(
    "SPOT_JAX_TEST_SHARED", str(_SHARED if _SHARED.exists() else Path("/work/shared"))
)

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


def _sigkill_at_marker(proc: subprocess.Popen, marker: Path, timeout: float) -> None:
    """Waits for `marker` to appear while `proc` runs, then kills `proc` with SIGKILL.

    Resume tests interrupt a run at a known point (e.g. right after a periodic checkpoint)
    the hard way, so the rerun sees what a crashed job leaves behind. Fails if the process
    ends first (with its stderr's tail when piped), if no marker appears within `timeout`
    seconds, or if the process does not die of the SIGKILL. The process is dead and its pipes
    drained on return, pass or fail.
    """
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, (
                f"the run ended (exit {proc.returncode}) before {marker} appeared\n"
                + (proc.communicate()[1] or "")[-3000:]
            )
            assert time.monotonic() < deadline, f"no {marker} in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def sigkill_at_marker():
    """`sigkill_at_marker(proc, marker, timeout)`: kill -9 a subprocess once `marker` exists."""
    return _sigkill_at_marker


def _read_tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file of a TensorBoard run, in file-name
    order, read by TensorFlow's own reader (which checks each record's CRCs)."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture
def read_tensorboard():
    """`read_tensorboard(run_dir)`: the scalars TensorBoard would show for that run."""
    return _read_tensorboard
