"""tools/benchmark.py runs every mode end to end on the tiny model (no timing assertions)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"

COMMON = [
    "--size=tiny",
    "--dtype=float32",
    "--batch=8",  # the test session has 8 virtual devices
    "--inputs=24",
    "--targets=4",
    "--prompt-length=3",
    "--steps=1",
    "--warmup=0",
    "--repeats=2",
]


@pytest.fixture(scope="module")
def benchmark():
    # Importing the tool sets spot_jax's default XLA flags in os.environ; keep them out of the
    # environment later tests' subprocesses inherit.
    saved = os.environ.get("XLA_FLAGS")
    spec = importlib.util.spec_from_file_location("tools_benchmark", TOOL)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)

    if saved is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = saved
    return benchmark


def _run(benchmark, tmp_path, *extra):
    out = tmp_path / "bench.jsonl"
    assert benchmark.main([*COMMON, f"--json={out}", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


# The train mode's step is the one the packing test compiles; it is left out to save time.
@pytest.mark.parametrize("mode", ["decode", "score"])
def test_modes_write_one_result_line_with_rates(benchmark, tmp_path, mode):
    (r,) = _run(benchmark, tmp_path, f"--mode={mode}")
    assert r["impl"] == "spot_jax" and r["mode"] == mode and len(r["repeat_s"]) == 2
    rate = r["tokens_per_s"]
    assert rate > 0 and all(t > 0 for t in r["repeat_s"])
    assert r["examples_per_s"] > 0


def test_packing_mode_packs_fewer_rows_than_examples(benchmark, tmp_path):
    args = ("--mode=packing", "--examples=16", "--max-segments=4", "--inputs=128")
    results = _run(benchmark, tmp_path, *args)
    assert [r["impl"] for r in results] == ["spot_jax_padded", "spot_jax_packed"]
    r = results[1]
    assert r["packed_rows"] < r["padded_rows"] == 16
    assert r["packed_batches"] <= r["padded_batches"] == 2
    assert r["effective_tokens_per_s"] > 0


def test_decode_compares_with_hf_peft_generate(benchmark, tmp_path):
    pytest.importorskip("peft")
    results = _run(benchmark, tmp_path, "--mode=decode", "--compare-peft")
    assert {r["impl"] for r in results} == {"spot_jax", "hf_peft"}


def test_rank_mode_scores_candidates_beside_the_pair_layout_and_peft(benchmark, tmp_path):
    pytest.importorskip("peft")
    results = _run(benchmark, tmp_path, "--mode=rank", "--candidates=3", "--compare-peft")
    assert [r["impl"] for r in results] == ["hf_peft", "spot_jax", "spot_jax_pairs"]
    assert all(r["candidates"] == 3 and r["examples_per_s"] > 0 for r in results)


def test_packing_mode_scores_every_example_as_the_padded_rows_do(benchmark, tmp_path):
    args = ("--mode=packing", "--packed-work=score", "--examples=16", "--max-segments=4")
    results = _run(benchmark, tmp_path, *args, "--inputs=128")
    r = results[1]
    assert r["work"] == "score" and r["packed_rows"] < r["padded_rows"]
    assert r["score_max_abs_diff"] < 1e-4


def test_train_mode_with_a_chunked_loss_reports_step_memory(benchmark, tmp_path):
    (r,) = _run(benchmark, tmp_path, "--mode=train", "--loss-chunk=3")
    assert r["impl"] == "spot_jax" and r["loss_chunk"] == 3
    assert r["step_s"] > 0 and r["step_memory_gb"] > 0
