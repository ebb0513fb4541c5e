"""tools/benchmark.py runs every mode end to end on the tiny model (no timing assertions)."""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
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


def test_a_failing_baseline_is_reported_and_the_rest_timed(benchmark, tmp_path, capsys):
    results = _run(
        benchmark, tmp_path, "--mode=score", "--baseline=attention_padding=nope",
        "--baseline=attention_padding=key_mask",
    )  # fmt: skip
    assert [r["impl"] for r in results] == ["spot_jax", "spot_jax[attention_padding=key_mask]"]
    out = capsys.readouterr().out
    assert "baseline attention_padding=nope failed: ValueError" in out
    # Every round's time reaches the log as it is taken (a run killed later keeps them).
    for r in results:
        for i, seconds in enumerate(r["repeat_s"]):
            assert f"round {i + 1}/2 {r['impl']}: {seconds:.4f} s" in out


def test_baseline_values_take_the_config_fields_type():
    from spot_jax.models.config import field_value

    assert field_value("scan_unroll", "2") == 2
    assert field_value("scan_layers", "true") is True
    assert field_value("recompute_elementwise", "False") is False
    assert field_value("dropout_rate", "0.1") == 0.1
    assert field_value("attention_padding", "bias") == "bias"
    assert field_value("attention_dropout_rate", "0.0") == 0.0
    assert field_value("frozen_dtype", "bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="'no_such' is not a T5Config field"):
        field_value("no_such", "1")


def test_packing_mode_packs_fewer_rows_than_examples(benchmark, tmp_path):
    args = ("--mode=packing", "--examples=16", "--max-segments=4", "--inputs=128")
    results = _run(benchmark, tmp_path, *args)
    assert [r["impl"] for r in results] == ["spot_jax_padded", "spot_jax_packed"]
    r = results[1]
    assert r["packed_rows"] < r["padded_rows"] == 16
    assert r["packed_batches"] <= r["padded_batches"] == 2
    assert r["effective_tokens_per_s"] > 0


def test_decode_compares_with_hf_peft_generate(benchmark, tmp_path, capsys):
    pytest.importorskip("peft")
    # --peft-apart (a GPU's default): PEFT's rounds first, its memory released, then spot_jax.
    results = _run(benchmark, tmp_path, "--mode=decode", "--compare-peft", "--peft-apart=on")
    assert {r["impl"] for r in results} == {"spot_jax", "hf_peft"}
    assert all(len(r["repeat_s"]) == 2 and min(r["repeat_s"]) > 0 for r in results)
    out = capsys.readouterr().out
    released = out.index("hf_peft timed (2 rounds) and released")
    assert released < out.index("spot_jax compiled and warmed up")


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


def test_set_overrides_the_config_of_every_spot_jax_run(benchmark, tmp_path, monkeypatch):
    import bench_spot

    built = []
    real = bench_spot.Setup.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        built.append(self.cfg)

    monkeypatch.setattr(bench_spot.Setup, "__init__", spy)
    results = _run(
        benchmark, tmp_path, "--mode=score", "--set=fold_norm_scale=True",
        "--baseline=recompute_elementwise=False",
    )  # fmt: skip
    assert [r["set"] for r in results] == [["fold_norm_scale=True"]] * 2
    assert [c.fold_norm_scale for c in built] == [True, True]
    assert [c.recompute_elementwise for c in built] == [True, False]


def _op_profile():
    spec = importlib.util.spec_from_file_location("op_profile", TOOL.parent / "op_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_sums_the_steps_xla_op_time(tmp_path):
    # A subprocess: XLA:CPU's per-op trace events need a flag read when the backend starts.
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    args = [arg for arg in COMMON if arg != "--batch=8"]
    cmd = [sys.executable, str(TOOL), *args, "--batch=2", f"--profile={tmp_path}"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "op profile (/host:CPU)" in result.stdout
    summary = json.loads((tmp_path / "op_profile.json").read_text())
    assert summary["per"] == "step" and summary["wall_ms"] > 0
    ops = summary["ops"]
    assert ops and [r["ms"] for r in ops] == sorted((r["ms"] for r in ops), reverse=True)
    assert sum(r["ms"] for r in ops) == pytest.approx(summary["total_ms"])
    assert sum(summary["categories"].values()) == pytest.approx(summary["total_ms"])
    assert summary["categories"]["matmul"] > 0  # the tiny T5's projections
    assert list(tmp_path.glob("plugins/profile/*/perfetto_trace.json.gz"))
    # The step's optimised HLO names the profile's ops, to read which ops each one holds.
    with gzip.open(tmp_path / "train_step.hlo.txt.gz", "rt") as f:
        hlo = f.read()
    assert "ENTRY" in hlo
    assert all(f"{r['op'].split()[0]} = " in hlo for r in ops[:5]), [r["op"] for r in ops[:5]]
    explained = summary["explained"]
    assert [r["op"] for r in explained] == [r["op"] for r in ops[: len(explained)]]
    assert any("encoder/layers_0" in r.get("op_name", "") for r in explained)
    assert "from jit(train_step)" in result.stdout


def test_summary_reads_device_kernels_and_counts_nested_events_once(tmp_path):
    op_profile = _op_profile()

    def x(pid, tid, ts, dur, name, op):
        return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name,
                "args": {"hlo_op": op, "hlo_module": "jit_step"}}  # fmt: skip

    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}},
    ]
    gpu = [  # two calls of one program on a GPU stream
        x(1, 7, 0, 100, "nvjet_tst_192x192_64x4_bf16", "dot.1"),
        x(1, 7, 100, 30, "cudnn_generated_fort_native_sdpa_sm90", "custom-call.3"),
        x(1, 7, 130, 50, "loop_add_fusion", "fusion.2"),
        x(1, 7, 200, 100, "nvjet_tst_192x192_64x4_bf16", "dot.1"),
        x(1, 7, 300, 30, "cudnn_generated_fort_native_sdpa_sm90", "custom-call.3"),
        x(1, 7, 330, 50, "loop_add_fusion", "fusion.2"),
    ]
    host = [x(2, 9, 0, 500, "dot.1", "dot.1")]  # a launch on the host: not device time
    trace = tmp_path / "gpu.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": meta + gpu + host}, f)
    summary = op_profile.summarize(trace, calls=2)
    assert summary["device"] == "/device:GPU:0" and summary["total_ms"] == pytest.approx(0.18)
    assert summary["categories"] == pytest.approx(
        {"matmul": 0.1, "fusion": 0.05, "attention": 0.03}
    )
    assert [(r["op"], r["count"]) for r in summary["ops"]] == [
        ("dot.1", 1), ("fusion.2", 1), ("custom-call.3", 1)
    ]  # fmt: skip

    # Kernels run inside a CUDA graph carry the command buffer's name: named by kernel.
    graph = [
        x(1, 7, 0, 40, "gemm_fusion_dot_35", "command_buffer_15"),
        x(1, 7, 40, 20, "cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "command_buffer_15"),
        x(1, 7, 60, 10, "loop_add_fusion_3", "command_buffer_15"),
    ]
    trace = tmp_path / "graph.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": meta + graph}, f)
    summary = op_profile.summarize(trace)
    assert [r["op"] for r in summary["ops"]][0] == "gemm_fusion_dot_35"
    assert summary["categories"] == pytest.approx(
        {"matmul": 0.04, "attention": 0.02, "fusion": 0.01}
    )

    # XLA:CPU: a while thunk's event spans its body's events; only the body counts.
    cpu = [x(2, 9, 0, 100, "while.1", "while.1"), x(2, 9, 10, 40, "dot.5", "dot.5")]
    cpu += [x(2, 9, 60, 30, "reduce.6", "reduce.6"), x(2, 9, 120, 5, "copy.7", "copy.7")]
    trace = tmp_path / "cpu.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": meta[1:] + cpu}, f)
    summary = op_profile.summarize(trace)
    assert [r["op"] for r in summary["ops"]] == ["dot.5", "reduce.6", "copy.7"]
    assert summary["total_ms"] == pytest.approx(0.075)
    assert "matmul" in op_profile.format_summary(summary)


def test_explain_maps_kernel_names_to_hlo_fusions():
    op_profile = _op_profile()
    hlo = """HloModule jit_train_step

%fused_computation.7 (param_0: bf16[4,8]) -> bf16[4,8] {
  %param_0 = bf16[4,8]{1,0} parameter(0)
  %constant.1 = bf16[] constant(0.5)
  %broadcast.2 = bf16[4,8]{1,0} broadcast(%constant.1), dimensions={}
  ROOT %multiply.3 = bf16[4,8]{1,0} multiply(%param_0, %broadcast.2)
}

ENTRY %main.9 (p: bf16[4,8]) -> (bf16[4,8], s32[]) {
  %p = bf16[4,8]{1,0} parameter(0)
  %loop_multiply_fusion.3 = bf16[4,8]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.7, \
metadata={op_name="jit(train_step)/encoder/layers_0/mlp/mul"}
  %tuple_fusion = (bf16[4,8]{1,0}, s32[]) fusion(%p), kind=kLoop, calls=%fused_computation.7
  ROOT %t = (bf16[4,8]{1,0}, s32[]) tuple(%loop_multiply_fusion.3, %tuple_fusion)
}
"""
    summary = {
        "ops": [
            # Inside a CUDA graph the trace names the kernel: `_3` where the HLO has `.3`.
            {"op": "loop_multiply_fusion_3", "ms": 2.0, "category": "fusion"},
            {"op": "tuple_fusion", "ms": 1.0, "category": "fusion"},
            {"op": "not_in_the_hlo", "ms": 0.5, "category": "other"},
        ]
    }
    first, second, third = op_profile.explain(summary, hlo)
    assert first["shape"] == "bf16[4,8]{1,0}" and first["opcode"] == "fusion"
    assert first["op_name"] == "jit(train_step)/encoder/layers_0/mlp/mul"
    assert first["fused"] == {"constant": 1, "broadcast": 1, "multiply": 1}
    assert second["shape"] == "(bf16[4,8]{1,0}, s32[])"
    assert "shape" not in third and third["ms"] == 0.5
    text = op_profile.format_explained([first])
    assert "from jit(train_step)/encoder/layers_0/mlp/mul" in text and "multiply x1" in text


def test_explain_counts_the_bytes_a_kernel_moves():
    # The scan's stacking: a slice of a [24, 4, 8] stack is read as the slice, and the stack a
    # dynamic-update-slice writes in place counts as the update.
    op_profile = _op_profile()
    hlo = """HloModule jit_train_step

%fused_slice (param_0: bf16[24,4,8], param_1: s32[]) -> bf16[4,8] {
  %param_0 = bf16[24,4,8]{2,1,0} parameter(0)
  %param_1 = s32[] parameter(1)
  %constant.0 = s32[] constant(0)
  %dynamic-slice.1 = bf16[1,4,8]{2,1,0} dynamic-slice(%param_0, %param_1, %constant.0, \
%constant.0), dynamic_slice_sizes={1,4,8}
  ROOT %bitcast.2 = bf16[4,8]{1,0} bitcast(%dynamic-slice.1)
}

%fused_dus (param_0.1: bf16[24,4,8], param_1.1: f32[4,8], param_2: s32[]) -> bf16[24,4,8] {
  %param_0.1 = bf16[24,4,8]{2,1,0} parameter(0)
  %param_1.1 = f32[4,8]{1,0} parameter(1)
  %convert.3 = bf16[4,8]{1,0} convert(%param_1.1)
  %bitcast.3 = bf16[1,4,8]{2,1,0} bitcast(%convert.3)
  %param_2 = s32[] parameter(2)
  %constant.4 = s32[] constant(0)
  ROOT %dynamic-update-slice.5 = bf16[24,4,8]{2,1,0} dynamic-update-slice(%param_0.1, \
%bitcast.3, %param_2, %constant.4, %constant.4)
}

ENTRY %main (stack: bf16[24,4,8], x: f32[4,8], i: s32[]) -> bf16[24,4,8] {
  %stack = bf16[24,4,8]{2,1,0} parameter(0)
  %x = f32[4,8]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %slice_fusion = bf16[4,8]{1,0} fusion(%stack, %i), kind=kLoop, calls=%fused_slice
  %copy.6 = bf16[4,8]{0,1} copy(%slice_fusion)
  ROOT %dus_fusion = bf16[24,4,8]{2,1,0} fusion(%stack, %x, %i), kind=kLoop, calls=%fused_dus
}
"""
    instructions = op_profile.hlo_instructions(hlo)
    assert op_profile.shape_bytes("(bf16[24,4,8]{2,1,0}, s32[])") == 24 * 4 * 8 * 2 + 4
    assert op_profile.bytes_moved("slice_fusion", instructions) == 64 + 4 + 64
    assert op_profile.bytes_moved("dus_fusion", instructions) == 128 + 4 + 64  # f32 in, bf16 out
    assert op_profile.bytes_moved("copy.6", instructions) == 64 + 64
    summary = {"ops": [{"op": "dus_fusion", "ms": 0.001, "count": 24, "category": "fusion"}]}
    (row,) = op_profile.explain(summary, hlo)
    assert row["bytes"] == 196 and row["gb_per_s"] == pytest.approx(196 * 24 / 1e-6 / 1e9)
    assert "moves 0.0 MB a run, 5 GB/s" in op_profile.format_explained([row])
    # By category, over every op the HLO names (the unknown one is left out).
    summary["ops"] += [
        {"op": "copy_6", "ms": 0.002, "count": 2, "category": "copy"},
        {"op": "not_in_the_hlo", "ms": 1.0, "count": 1, "category": "copy"},
    ]
    traffic = op_profile.traffic_by_category(summary, hlo)
    assert traffic["fusion"]["gb"] == pytest.approx(196 * 24 / 1e9)
    assert traffic["copy"] == pytest.approx({"ms": 0.002, "gb": 256e-9, "gb_per_s": 0.128})
    assert "copy" in op_profile.format_traffic(traffic)


def test_step_memory_reads_xla_memory_analysis_from_shapes(capsys):
    spec = importlib.util.spec_from_file_location("step_memory", TOOL.parent / "step_memory.py")
    step_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_memory)
    args = ["--size=tiny", "--batch=2", "--inputs=16", "--targets=4", "--prompt-length=3"]
    (_, lean), (_, autodiff) = step_memory.measure(
        [*args, "--scan", "--set", "recompute_elementwise=False"]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tiny batch 2, inputs 16 + prompt 3") and len(out) == 3
    assert "recompute_elementwise=False" in out[2]
    # A scanned stack keeps 2 of the gated GELU's 7 arrays a layer, and no float32 norm copies.
    assert 0 < lean["temporaries_gb"] < autodiff["temporaries_gb"]
    assert lean["arguments_gb"] == autodiff["arguments_gb"] > 0
    with pytest.raises(SystemExit, match="not a T5Config field"):
        step_memory.measure([*args, "--set", "no_such_field=1"])
