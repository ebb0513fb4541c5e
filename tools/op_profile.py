"""Where a compiled step's device time goes: a JAX profiler trace summed by XLA op.

    python tools/benchmark.py --size xl --scan --attention cudnn --profile /tmp/xl_profile

`capture` runs a callable under `jax.profiler.trace` with a Perfetto trace; `summarize` sums the
trace's XLA op events (those with an `hlo_op` argument: GPU kernels, or XLA:CPU thunks when
`--xla_cpu_enable_xprof_traceme=true`) by op and by category (matmul, attention, fusion, copy,
...). The trace stays in the folder for Perfetto or TensorBoard's profile plugin.
"""

import collections
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import jax

# First match wins; checked against "<hlo op> <kernel name>", lower-cased.
CATEGORIES = (
    ("attention", ("fmha", "sdpa", "flash", "attention")),
    ("matmul", ("gemm", "dot", "nvjet", "xmma", "cutlass", "cublas", "ynn", "onednn")),
    ("copy", ("copy", "transpose", "memcpy", "memset", "dynamic-update-slice", "concatenate")),
    ("collective", ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "nccl")),
    ("reduce", ("reduce",)),
    ("fusion", ("fusion", "loop_", "input_", "triton")),
)


def category(op: str, kernel: str) -> str:
    text = f"{op} {kernel}".lower()
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    return "other"


def capture(run: Callable[[], object], log_dir: str | Path) -> tuple[Path, object]:
    """Runs `run()` under the profiler; returns the Perfetto trace it wrote and run's result."""
    log_dir = Path(log_dir)
    with jax.profiler.trace(str(log_dir), create_perfetto_trace=True):
        result = run()
    traces = sorted(log_dir.glob("**/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"the profiler wrote no perfetto_trace.json.gz under {log_dir}")
    return traces[-1], result


def summarize(trace: str | Path, calls: int = 1) -> dict:
    """{'device': str, 'ops': [...], 'categories': {...}, 'total_ms'} per call of the traced work.

    Device events (a '/device:' process, e.g. a GPU's streams) are used when the trace has any;
    otherwise host events (XLA:CPU thunks). Each op row: name, category, ms per call, count per
    call, share of the total, and its longest kernel's name.
    """
    with gzip.open(trace, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    ops = [
        e
        for e in events
        if e.get("ph") == "X"
        and "hlo_op" in e.get("args", {})
        and not e.get("name", "").startswith("end:")
    ]
    on_device = [e for e in ops if processes.get(e["pid"], "").startswith("/device:")]
    chosen = _leaves(on_device or ops)
    where = sorted({processes.get(e["pid"], "?") for e in chosen}) or ["(none)"]
    time_us: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    longest: dict[str, tuple[float, str]] = {}
    for e in chosen:
        op = _op_name(e)
        time_us[op] += e["dur"]
        counts[op] += 1
        if e["dur"] > longest.get(op, (-1.0, ""))[0]:
            longest[op] = (e["dur"], e["name"])
    total = sum(time_us.values())
    rows, by_category = [], collections.Counter()
    for op, us in time_us.most_common():
        cat = category(op, longest[op][1])
        by_category[cat] += us
        rows.append(
            {
                "op": op,
                "category": cat,
                "ms": us / 1e3 / calls,
                "count": counts[op] / calls,
                "share": us / total if total else 0.0,
                "kernel": longest[op][1],
            }
        )
    return {
        "device": ", ".join(where),
        "total_ms": total / 1e3 / calls,
        "categories": {k: v / 1e3 / calls for k, v in by_category.most_common()},
        "ops": rows,
    }


def _op_name(event: dict) -> str:
    """The event's XLA op. Kernels that XLA:GPU runs inside a CUDA graph (a command buffer)
    carry the buffer's name as their op, so one buffer would hold a whole layer's matmuls,
    attention and fusions: those are named by their kernel instead (XLA names a fusion's
    kernel after the fusion: `loop_add_fusion_3`, `gemm_fusion_dot_35`)."""
    op = event["args"]["hlo_op"]
    return event["name"] if op.startswith("command_buffer") else op


def _leaves(events: list[dict]) -> list[dict]:
    """The events that contain no other event of their thread: an XLA:CPU `while` or `call`
    thunk's event spans its body's, which would otherwise count twice (GPU kernels never nest)."""
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["pid"], e.get("tid")].append(e)
    leaves = []
    for thread in by_thread.values():
        thread.sort(key=lambda e: (e["ts"], -e["dur"]))
        for e, after in zip(thread, thread[1:] + [None], strict=True):
            if after is None or after["ts"] >= e["ts"] + e["dur"]:
                leaves.append(e)
    return leaves


def format_summary(summary: dict, top: int = 15) -> str:
    total = summary["total_ms"]
    lines = [f"op profile ({summary['device']}): {total:.2f} ms of XLA ops per call"]
    if summary.get("wall_ms"):
        # On a GPU stream the gap is launch and host time; XLA:CPU runs thunks side by side,
        # so there the op time can exceed the wall time.
        lines[0] += f", {summary['wall_ms']:.2f} ms wall ({total / summary['wall_ms']:.0%})"
    if not summary["ops"]:
        lines.append(
            "  no XLA op events in the trace (on a CPU, set --xla_cpu_enable_xprof_traceme)"
        )
        return "\n".join(lines)
    for cat, ms in summary["categories"].items():
        lines.append(f"  {cat:11s} {ms:9.2f} ms  {ms / total:6.1%}")
    lines.append(f"  top {top} ops:")
    for r in summary["ops"][:top]:
        lines.append(
            f"  {r['ms']:9.2f} ms {r['share']:6.1%} x{r['count']:<6g} {r['category']:10s} "
            f"{r['op'][:48]:48s} {r['kernel'][:60]}"
        )
    return "\n".join(lines)
