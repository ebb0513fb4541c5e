"""`spot-jax demo --quick` end to end (a subprocess, fresh cache): report, plots, library."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spot_jax.demo import report as report_lib

CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[2]


def _cli(*args, cache, timeout=600):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    # The demo's own XLA settings: one device, full optimisation (conftest's test flags make
    # its hundreds of steps slower).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(SPOT_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    out = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, f"{args}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = root / "demo_out"
    _cli("demo", "--quick", "--out", str(out), "--no-progress", cache=root / "cache")
    return out, root / "cache"


@pytest.mark.slow
def test_quick_demo_writes_report_plots_and_a_real_library(quick_demo):
    out, cache = quick_demo
    for name in (report_lib.REPORT_FILE, report_lib.HEATMAP_FILE, report_lib.CURVES_FILE):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "similarity.png").read_bytes()[:4] == b"\x89PNG"
    listing = _cli("library", "list", "--library", str(out / "library"), cache=cache).stdout
    results = json.loads((out / "results.json").read_text())
    for source in results["sources"]:
        assert source in listing
    sim = _cli("library", "similarity", "--library", str(out / "library"),
               "--metric", "avg_tokens", cache=cache).stdout  # fmt: skip
    assert all(s in sim for s in results["sources"])
    assert list(cache.glob("world/backbone-*/pretraining.json"))


@pytest.mark.slow
def test_quick_report_names_seeds_methods_gains_and_correlation(quick_demo):
    out, _ = quick_demo
    text = (out / report_lib.REPORT_FILE).read_text()
    results = json.loads((out / "results.json").read_text())
    seeds = ", ".join(map(str, results["config"]["seeds"]))
    for regime in ("full", "few-shot"):
        assert f"## Results: {regime} (mean ± std over seeds {seeds})" in text
    header = (
        "| target | PromptTuning | SPoT | SPoT, norm-matched | Retrieval top-1 | Retrieval top-k "
        "| ModelTuning |"
    )
    assert text.count(header) == 2
    for target in results["targets"]:
        assert text.count(f"| {target} | ") == 2
    # Every cell is mean ± std, and the SPoT gain line agrees with the per-seed results.
    assert len(re.findall(r"\d+\.\d ± \d+\.\d", text)) >= 2 * 6 * (len(results["targets"]) + 1)
    full = results["regimes"]["full"]
    gain, _ = report_lib.gains(full, "SPoT")
    assert f"SPoT vs PromptTuning: {gain.mean():+.1f} points" in text
    assert "nearest neighbour in the same family" in text and "Spearman rho" in text
    rms = results["prompt_rms"]
    assert "## The mixture prompt" in text and f"RMS {rms['mixture']:.2f}, against" in text
    assert len(results["per_source"]) == len(results["targets"]) * len(results["sources"])
    assert "![similarity](similarity.png)" in text and "![curves](curves.png)" in text


@pytest.mark.slow
def test_later_experiments_append_their_sections(quick_demo, tmp_path):
    out, _ = quick_demo
    results = json.loads((out / "results.json").read_text())
    assert results["extra_sections"] == []
    results["extra_sections"] = [["PPT: pre-trained prompts", "a later table"]]
    text = report_lib.build(results, tmp_path).markdown()
    assert text.endswith("## PPT: pre-trained prompts\n\na later table\n")
    assert text.index("## Convergence") < text.index("## PPT")


@pytest.mark.parametrize(
    "seeds, message", [("0,x", "comma-separated integers"), ("3", "at least two seeds")]
)
def test_bad_seeds_are_one_clear_error(seeds, message):
    from spot_jax.demo import command

    with pytest.raises(SystemExit, match=message):
        command.demo_main(["--seeds", seeds, "--out", "/nonexistent/never/written"])
