"""Where a compiled step's device time goes: a JAX profiler trace summed by XLA op.

    python tools/benchmark.py --size xl --scan --attention cudnn --profile /tmp/xl_profile

`capture` runs a callable under `jax.profiler.trace` with a Perfetto trace; `summarize` sums the
trace's XLA op events (those with an `hlo_op` argument: GPU kernels, or XLA:CPU thunks when
`--xla_cpu_enable_xprof_traceme=true`) by op and by category (matmul, attention, fusion, copy,
...). The trace stays in the folder for Perfetto or TensorBoard's profile plugin.

`explain` reads the top ops back against the step's optimised HLO (`train_step.hlo.txt.gz`,
written beside the profile): each op's result shape, the ops a fusion holds and the JAX op that
made it (its `op_name` metadata, which names the Flax module), with the bytes each kernel
moves and the bandwidth that makes; `traffic_by_category` sums those by category (fusions far
below the card's bandwidth are where a memory-bound step loses time). Offline, e.g. on a GPU
run's files brought back to a CPU machine:

    python tools/op_profile.py /tmp/xl_profile/op_profile.json /tmp/xl_profile/train_step.hlo.txt.gz
"""

import collections
import gzip
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
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


def profile(run: Callable[[], object], out_dir: str | Path, calls: int, meta: dict) -> dict:
    """Traces `run()` (`calls` steps or calls) into `out_dir`, sums its device time by op, reads
    the top ops against `out_dir/train_step.hlo.txt.gz` where the run wrote it (`explain`),
    writes `out_dir/op_profile.json` and prints the tables; returns the summary."""
    trace, seconds = capture(run, out_dir)
    summary = {**meta, "wall_ms": float(seconds) * 1e3 / calls}
    summary.update(summarize(trace, calls=calls))
    hlo = Path(out_dir, "train_step.hlo.txt.gz")
    if hlo.exists():
        with gzip.open(hlo, "rt") as f:
            text = f.read()
        summary["explained"] = explain(summary, text, top=40)
        summary["traffic"] = traffic_by_category(summary, text)
    Path(out_dir, "op_profile.json").write_text(json.dumps(summary, indent=1))
    print(f"{meta.get('impl', '')} ({meta.get('per', 'call')}), trace {trace}", flush=True)
    print(format_summary(summary), flush=True)
    if summary.get("explained"):
        print(format_traffic(summary["traffic"]), flush=True)
        print(format_explained(summary["explained"][:15]), flush=True)
    return summary


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


_INSTRUCTION = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = (\([^)]*\)|\S+) ([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_DTYPE_BYTES.update({"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8})
# Ops whose operand is read only in part (the slice), or written in place (the update).
_SLICES = ("dynamic-slice", "slice")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape's arrays (`bf16[32,612,2048]{2,1,0}`, tuples summed; fp8 as 1)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
    """{instruction name: {'shape', 'opcode', 'operands', 'calls', 'op_name', 'computation',
    'root'}} of an HLO module's text (`compiled.as_text()`), for every computation in it."""
    out, computation = {}, None
    for line in hlo_text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        calls, op_name = _CALLS.search(line), _OP_NAME.search(line)
        args = line[m.end() : line.find(")", m.end())]
        out[m.group(2)] = {
            "shape": m.group(3),
            "opcode": m.group(4),
            "operands": re.findall(r"%([\w.\-]+)", args),
            "calls": calls.group(1) if calls else None,
            "op_name": op_name.group(1) if op_name else "",
            "computation": computation,
            "root": bool(m.group(1)),
            "name": m.group(2),
        }
    return out


def bytes_moved(name: str, instructions: Mapping[str, dict]) -> int:
    """Bytes an instruction reads and writes in one execution, as its HLO shapes say: its
    operands and result, except that an operand only sliced is read as the slices, and the
    buffer a dynamic-update-slice writes in place counts as the update (what the scan's
    stacking of layers does). A lower bound of a kernel's traffic where it re-reads data."""
    info = instructions[name]
    if info["opcode"] != "fusion" or not info["calls"]:
        ops = [instructions[o] for o in info["operands"] if o in instructions]
        if info["opcode"] == "dynamic-update-slice" and len(ops) > 1:
            return 2 * shape_bytes(ops[1]["shape"])
        if info["opcode"] in _SLICES:
            return 2 * shape_bytes(info["shape"])
        return shape_bytes(info["shape"]) + sum(shape_bytes(o["shape"]) for o in ops)
    body = {k: v for k, v in instructions.items() if v["computation"] == info["calls"]}
    users = collections.defaultdict(list)
    for inst in body.values():
        for position, operand in enumerate(inst["operands"]):
            users[operand].append((inst, position))
    read = 0
    for param, p in body.items():
        if p["opcode"] != "parameter":
            continue
        uses = users.get(param, [])
        if uses and all(u["opcode"] in _SLICES and pos == 0 for u, pos in uses):
            read += sum(shape_bytes(u["shape"]) for u, _ in uses)
        elif not any(u["opcode"] == "dynamic-update-slice" and pos == 0 for u, pos in uses):
            read += shape_bytes(p["shape"])
    root = next((v for v in body.values() if v["root"]), None)
    written = shape_bytes(info["shape"])
    if root and root["opcode"] == "dynamic-update-slice" and len(root["operands"]) > 1:
        written = shape_bytes(body.get(root["operands"][1], {"shape": ""})["shape"])
    return read + written


def explain(summary: dict, hlo_text: str, top: int = 15) -> list[dict]:
    """The top ops of `summary` with what the HLO says of them: shape, opcode, the JAX op that
    made each, and for a fusion the opcodes of its fused computation (counted)."""
    instructions = hlo_instructions(hlo_text)
    body = collections.defaultdict(collections.Counter)
    for info in instructions.values():
        if info["opcode"] != "parameter":
            body[info["computation"]][info["opcode"]] += 1
    rows = []
    for r in summary["ops"][:top]:
        info = _instruction_of(r["op"], instructions)
        row = {"op": r["op"], "ms": r["ms"], "category": r["category"]}
        if info:
            fused = body.get(info["calls"], collections.Counter())
            moved = bytes_moved(info["name"], instructions)
            row.update(
                shape=info["shape"],
                opcode=info["opcode"],
                op_name=info["op_name"],
                fused=dict(fused.most_common()),
                bytes=moved,
            )
            if r["ms"] > 0:  # achieved bandwidth, against the card's (4.8 TB/s on an H200)
                row["gb_per_s"] = moved * r.get("count", 1) / (r["ms"] * 1e-3) / 1e9
        rows.append(row)
    return rows


def _instruction_of(op: str, instructions: Mapping[str, dict]) -> dict | None:
    # A kernel named after its fusion inside a CUDA graph: `loop_add_fusion_3` for `.3`.
    name = op.split()[0]
    return instructions.get(name) or instructions.get(re.sub(r"_(\d+)$", r".\1", name))


def traffic_by_category(summary: dict, hlo_text: str) -> dict[str, dict]:
    """Per category, over every op the HLO names: its time, the bytes its kernels move in a
    call (`bytes_moved` x runs) and the bandwidth that makes. Memory-bound work (fusions,
    copies) far below the card's bandwidth is where a step loses time."""
    instructions = hlo_instructions(hlo_text)
    out: dict[str, dict] = {}
    for r in summary["ops"]:
        info = _instruction_of(r["op"], instructions)
        if info is None:
            continue
        row = out.setdefault(r["category"], {"ms": 0.0, "gb": 0.0})
        row["ms"] += r["ms"]
        row["gb"] += bytes_moved(info["name"], instructions) * r.get("count", 1) / 1e9
    for row in out.values():
        row["gb_per_s"] = row["gb"] / (row["ms"] * 1e-3) if row["ms"] > 0 else 0.0
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def format_traffic(traffic: dict[str, dict]) -> str:
    lines = ["bytes moved by category (ops the HLO names):"]
    for cat, r in traffic.items():
        lines.append(f"  {cat:11s} {r['ms']:9.2f} ms {r['gb']:9.2f} GB  {r['gb_per_s']:8.0f} GB/s")
    return "\n".join(lines)


def format_explained(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['ms']:9.2f} ms {r['category']:9s} {r['op']}  {r.get('shape', '?')}")
        if r.get("bytes"):
            rate = f", {r['gb_per_s']:.0f} GB/s" if "gb_per_s" in r else ""
            lines.append(f"{'':13s}moves {r['bytes'] / 1e6:.1f} MB a run{rate}")
        if r.get("op_name"):
            lines.append(f"{'':13s}from {r['op_name']}")
        if r.get("fused"):
            ops = ", ".join(f"{k} x{v}" for k, v in r["fused"].items())
            lines.append(f"{'':13s}holds {ops}")
    return "\n".join(lines)


if __name__ == "__main__":
    summary = json.loads(Path(sys.argv[1]).read_text())
    with gzip.open(sys.argv[2], "rt") as f:
        hlo_text = f.read()
    print(format_traffic(traffic_by_category(summary, hlo_text)))
    print(format_explained(explain(summary, hlo_text, top=int((sys.argv[3:] or [25])[0]))))
