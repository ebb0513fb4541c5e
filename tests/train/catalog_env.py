"""The environment of `spot-jax` subprocesses that run catalog tasks on mock TFDS data
(tests/train is on sys.path under pytest)."""

import os
import re
import subprocess
import sys
from pathlib import Path

SPM = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"


def mock_catalog_env(mock_examples: int = 4) -> dict[str, str]:
    """This process's environment on one CPU device (conftest's 8 virtual ones dropped), with
    `mock_examples` mock TFDS examples a split and T5's SentencePiece model."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return {
        **os.environ,
        "XLA_FLAGS": flags.strip(),
        "JAX_PLATFORMS": "cpu",
        "SPOT_JAX_TFDS_MOCK": str(mock_examples),
        "SPOT_JAX_VOCAB": str(SPM),
    }


def run_script(script: str, *args: str, timeout: int = 540) -> subprocess.CompletedProcess:
    """Runs a Python script (several CLI jobs in one process: the tiny model compiles once) in
    that environment from the repository root; a non-zero exit fails the test with its output."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=mock_catalog_env(),
        cwd=Path(__file__).resolve().parents[2],
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result
