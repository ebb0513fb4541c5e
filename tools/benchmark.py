"""Speed and memory of spot_jax prompt tuning, optionally beside HF PEFT, in five modes.

    python tools/benchmark.py --size small --batch 8 --inputs 128 --targets 16 --prompt-length 20
    python tools/benchmark.py --size base --batch 32 --inputs 512 --targets 32 \
        --prompt-length 100 --compare-peft
    python tools/benchmark.py --mode decode --size small --batch 8 --targets 16 --compare-peft
    python tools/benchmark.py --mode packing --size small --batch 4 --inputs 512 --targets 8

Synthetic batches (no TF). Modes:

* train (default): step time, tokens/s (batch x (inputs + targets), the convention of the
  issue's PEFT figures), model FLOP/s utilisation against `--peak-tflops`, memory. FLOPs count
  4 x non-embedding params x tokens per stack (encoder tokens include the prompt): forward 2 +
  activation gradients 2; frozen weights get no weight gradient.
* decode: greedy decoding with the KV cache of exactly `--targets` tokens per row (EOS never
  stops a row, on either side); examples/s and generated tokens/s.
* score: rank-classification scoring (per-row target log-likelihood, T5X's score_batch) of a
  batch; examples (rows) /s and tokens/s.
* rank: rank classification of `--batch` examples over `--candidates` random labels of
  `--targets` tokens: spot_jax scores with one encoder pass per example; `spot_jax_pairs` is
  the same model on T5X's layout (every input repeated once per label, b x C rows), and PEFT
  runs that pair layout too; examples/s.
* packing: the same `--examples` GLUE-like examples (lognormal input lengths, median 40,
  capped at `--inputs`; 2-4 target tokens) trained padded (one per row of `--inputs`) and
  packed (first-fit into rows of `--packed-inputs`, `--max-segments` per row, each with its
  own prompt copy); effective (non-padding input + target) tokens/s of a full pass. With
  `--packed-work score`, per-example scoring instead of training (packed rows score each
  example with `score_segments`; the largest difference from the padded scores is reported).

`--compare-peft` times transformers + PEFT prompt tuning (encoder-only prompt,
`num_transformer_submodules=1`) on the same shapes in the same process (HF `generate` for
decode, a teacher-forced forward for score) and prints the ratio. `--repeats N` interleaves N
rounds of the implementations and reports medians (use it on a shared machine). On a GPU
PEFT runs all its rounds first and hands its memory back before spot_jax compiles
(`--peft-apart`): the two frameworks each keep a memory pool, and PEFT's (~100 GB at xl)
would leave XLA too little, or XLA's PEFT. Progress lines (`[12.3 s] ...`) say where a run
that was stopped by a time limit had got to.
`--profile DIR` traces one more spot_jax run and prints its device time by XLA op and
category (matmul, attention, fusion, copy, ...): `tools/op_profile.py`.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

# The repository (for spot_jax) and this folder (for the bench_* modules beside this file).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from spot_jax import runtime_flags  # noqa: E402

# The same XLA flags the spot-jax CLI sets, so the benchmark measures what users run.
runtime_flags.set_default_xla_flags()

import bench_spot  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import op_profile  # noqa: E402

from spot_jax.data import synthetic  # noqa: E402
from spot_jax.models import config as config_lib  # noqa: E402
from spot_jax.train import optim  # noqa: E402


def count_params(cfg: config_lib.T5Config) -> tuple[int, int]:
    """Non-embedding params of the encoder and of the decoder (logits excluded)."""
    d, f, j = cfg.emb_dim, cfg.mlp_dim, cfg.joined_kv
    enc_layer = 4 * d * j + 3 * d * f
    dec_layer = 8 * d * j + 3 * d * f
    return cfg.num_encoder_layers * enc_layer, cfg.num_decoder_layers * dec_layer


def model_flops(cfg, batch, inputs, targets, prompt_length) -> float:
    enc, dec = count_params(cfg)
    return 4.0 * (enc * batch * (inputs + prompt_length) + dec * batch * targets)


def peak_memory_gb() -> float | None:
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return stats.get("peak_bytes_in_use", 0) / 1e9


_START = time.perf_counter()


def say(message: str) -> None:
    """A progress line with the seconds since start (a killed run's log shows its last stage)."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", flush=True)


def _peft_apart(args) -> bool:
    if not args.compare_peft or args.peft_apart == "off":
        return False
    return args.peft_apart == "on" or jax.default_backend() == "gpu"


def _interleaved(runners: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each runner's work, `repeats` rounds, runners alternating within a round."""
    times = {name: [] for name in runners}
    for round_index in range(repeats):
        for name, run in runners.items():
            times[name].append(run())
            # Each round's time is in the log at once: a run killed later still leaves it.
            say(f"round {round_index + 1}/{repeats} {name}: {times[name][-1]:.4f} s")
    return times


def _runners(args, cfg):
    """(runners {impl: timed fn}, finishers {impl: () -> info}, mode info) for args.mode."""
    lengths = {"inputs": args.inputs, "targets": args.targets}
    if args.mode == "packing":
        runners, info = bench_spot.packing_runners(args)
        return {f"spot_jax_{k}": v for k, v in runners.items()}, {}, info
    local = synthetic.make_batch(args.batch, lengths, cfg.vocab_size, seed=0)
    if args.mode == "rank":
        return _rank_runners(args, cfg, local)
    spot = {"train": bench_spot.train_runner, "decode": bench_spot.decode_runner}
    spot["score"] = bench_spot.score_runner
    runners, finishers = {}, {}
    if args.compare_peft:
        import bench_peft

        peft = {"train": bench_peft.train_runner, "decode": bench_peft.decode_runner}
        peft["score"] = bench_peft.score_runner
        runners["hf_peft"] = _peft(args, lambda: peft[args.mode](args, local))
    runners["spot_jax"], finishers["spot_jax"] = spot[args.mode](args, local)
    say("spot_jax compiled and warmed up")
    _add_baselines(args, runners, finishers, lambda o: spot[args.mode](args, local, o))
    return runners, finishers, {}


def _peft(args, make):
    """PEFT's runner; with `--peft-apart`, its rounds are run now and replayed in order."""
    if not _peft_apart(args):
        return make()
    import bench_peft

    return iter(bench_peft.rounds_apart(make, args.repeats, say)).__next__


def _add_baselines(args, runners, finishers, make) -> None:
    """The `--baseline` variants; one that fails to build (a kernel a device lacks, say) is
    reported and left out, so it costs none of the other timings."""
    for override in args.baseline:
        key, _, value = override.partition("=")
        name = f"spot_jax[{override}]"
        try:
            runners[name], finishers[name] = make({key: config_lib.field_value(key, value)})
            say(f"{name} compiled and warmed up")
        except Exception as e:  # noqa: BLE001 - report it, time the rest
            print(f"baseline {override} failed: {type(e).__name__}: {e}", flush=True)


def _rank_runners(args, cfg, local):
    """Rank classification over `--candidates` labels of `--targets` tokens: spot_jax's one
    encoder pass per example, the (example, label) pair rows T5X scores, and PEFT on the pairs."""
    rng = np.random.default_rng(1)
    candidates = rng.integers(3, cfg.vocab_size, (args.candidates, args.targets)).astype(np.int32)
    candidates[:, -1] = 1  # EOS
    runners, finishers = {}, {}
    if args.compare_peft:
        import bench_peft

        pairs = bench_spot.ranking.candidate_batch(local, candidates)
        runners["hf_peft"] = _peft(args, lambda: bench_peft.score_runner(args, pairs))
    runners["spot_jax"], finishers["spot_jax"] = bench_spot.rank_runner(args, local, candidates)
    name = "spot_jax_pairs"
    runners[name], finishers[name] = bench_spot.pairs_runner(args, local, candidates)
    _add_baselines(
        args, runners, finishers, lambda o: bench_spot.rank_runner(args, local, candidates, o)
    )
    return runners, finishers, {"candidates": args.candidates}


def _rates(args, cfg, impl: str, seconds: float, info: dict) -> dict:
    """Throughput figures of one run of `seconds`."""
    if args.mode == "train":
        step_s = seconds / args.steps
        flops = model_flops(cfg, args.batch, args.inputs, args.targets, args.prompt_length)
        out = {
            "step_s": step_s,
            "tokens_per_s": args.batch * (args.inputs + args.targets) / step_s,
            "model_tflops_per_s": flops / step_s / 1e12,
        }
        if args.peak_tflops:
            out["mfu"] = out["model_tflops_per_s"] / args.peak_tflops
        return out
    if args.mode == "packing":
        return {
            "pass_s": seconds,
            "examples_per_s": info["examples"] / seconds,
            "effective_tokens_per_s": info["real_tokens"] / seconds,
        }
    if args.mode == "rank":
        return {"call_s": seconds, "examples_per_s": args.batch / seconds}
    generated = args.targets if args.mode == "decode" else args.inputs + args.targets
    return {
        "call_s": seconds,
        "examples_per_s": args.batch / seconds,
        "tokens_per_s": args.batch * generated / seconds,
    }


def _line(args, r: dict) -> str:
    head = f"{r['impl']:16s} {args.mode:7s} {args.size} b{args.batch} {args.inputs}+"
    head += f"{args.prompt_length}/{args.targets}:"
    if args.mode == "train":
        text = f"{r['step_s'] * 1e3:8.1f} ms/step {r['tokens_per_s']:10.0f} tok/s "
        text += f"{r['model_tflops_per_s']:7.3f} TFLOP/s"
        text += f"  MFU {r['mfu']:.1%}" if "mfu" in r else ""
        mem = r.get("peak_memory_gb")
        text += f"  peak {mem:.1f} GB" if mem else ""
        text += f"  step {r['step_memory_gb']:.1f} GB" if r.get("step_memory_gb") else ""
    elif args.mode == "packing":
        text = f"{r['pass_s']:8.2f} s/pass {r['examples_per_s']:8.2f} ex/s "
        text += f"{r['effective_tokens_per_s']:9.0f} effective tok/s"
    elif args.mode == "rank":
        text = f"{r['call_s'] * 1e3:8.1f} ms/batch {r['examples_per_s']:8.2f} ex/s "
        text += f"({args.candidates} candidates each)"
    else:
        what = "generated" if args.mode == "decode" else "scored"
        text = f"{r['call_s'] * 1e3:8.1f} ms/batch {r['examples_per_s']:8.2f} ex/s "
        text += f"{r['tokens_per_s']:9.0f} {what} tok/s"
    return f"{head} {text}  (median of {len(r['repeat_s'])})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=config_lib.SIZES)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=128)
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--prompt-length", type=int, default=100)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--trainable", default=optim.PROMPT_REGEX)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--frozen-dtype", default=None, choices=[None, "bfloat16"])
    p.add_argument("--remat", default="none", choices=["none", "full", "dots"])
    p.add_argument("--scan", action="store_true")
    p.add_argument("--attention", default="xla", choices=["xla", "cudnn"])
    p.add_argument("--model-parallel", type=int, default=1)
    p.add_argument(
        "--loss-chunk",
        type=int,
        default=0,
        help="train/score loss over this many target positions at a time (PromptedT5.loss_chunk)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak bf16 TFLOP/s for MFU (e.g. 851 measured on an H200)",
    )
    p.add_argument("--compare-peft", action="store_true")
    p.add_argument(
        "--peft-apart",
        default="auto",
        choices=["auto", "on", "off"],
        help="run all of PEFT's rounds before spot_jax compiles and release its memory (auto: "
        "on a GPU; off interleaves PEFT's rounds with spot_jax's, for a busy CPU)",
    )
    p.add_argument(
        "--mode",
        default="train",
        choices=["train", "decode", "score", "rank", "packing"],
        help="train step; greedy decode of --targets tokens; per-row target scoring; rank "
        "classification over --candidates labels; or padded vs packed train steps over "
        "GLUE-like examples",
    )
    p.add_argument("--candidates", type=int, default=3, help="rank mode: labels per example")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds; medians shown")
    p.add_argument("--examples", type=int, default=64, help="packing mode: examples per pass")
    p.add_argument(
        "--packed-work",
        default="train",
        choices=["train", "score"],
        help="packing mode: train steps, or per-example scoring (packed: score_segments)",
    )
    p.add_argument("--max-segments", type=int, default=8, help="packing mode: examples per row")
    p.add_argument(
        "--packed-inputs",
        type=int,
        default=None,
        help="packing mode: input tokens of a packed row (default --inputs)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="also time spot_jax with this T5Config override (string fields, e.g. "
        "cross_projection=projected), interleaved with the default; repeatable",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a T5Config override for every spot_jax run (the default and its baselines), e.g. "
        "fold_norm_scale=True; repeatable",
    )
    p.add_argument("--json", default=None, help="append results as a JSON line to this file")
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="after timing, trace one more run of spot_jax into DIR and print its device time "
        "by XLA op and category (DIR/op_profile.json; the trace stays for Perfetto)",
    )
    args = p.parse_args(argv)
    if args.profile and importlib.util.find_spec("jax_plugins") is None:
        # XLA:CPU emits per-thunk trace events only with this flag (read when the backend
        # starts, which is later). GPU kernels are traced without it, so where a GPU/TPU
        # plugin is installed the flags are left alone.
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_enable_xprof_traceme=true".strip()

    cfg = config_lib.named_config(args.size)
    runners, finishers, mode_info = _runners(args, cfg)
    times = _interleaved(runners, args.repeats)
    header = {
        "mode": args.mode,
        "size": args.size,
        "batch": args.batch,
        "inputs": args.inputs,
        "targets": args.targets,
        "prompt_length": args.prompt_length,
        "dtype": args.dtype,
        "frozen_dtype": args.frozen_dtype,
        "remat": args.remat,
        "scan": args.scan,
        "loss_chunk": args.loss_chunk,
        **({"set": args.set} if args.set else {}),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%d"),
        **mode_info,
    }
    if args.mode == "packing":
        header["max_segments"] = args.max_segments
        header["packed_work"] = args.packed_work
    results = []
    for impl, seconds in times.items():
        r = {"impl": impl, **header, "repeat_s": seconds}
        r.update(finishers[impl]() if impl in finishers else {})
        r.update(_rates(args, cfg, impl, float(np.median(seconds)), mode_info))
        if impl == "spot_jax" and args.mode == "train":
            r["peak_memory_gb"] = peak_memory_gb()
        results.append(r)
        print(_line(args, r), flush=True)
    by_impl = {r["impl"]: r for r in results}
    if args.mode == "packing":
        speedup = np.median(times["spot_jax_padded"]) / np.median(times["spot_jax_packed"])
        print(
            f"packing: {mode_info['examples']} examples in {mode_info['packed_rows']} packed rows "
            f"vs {mode_info['padded_rows']} padded; speedup packed / padded ({args.packed_work}): "
            f"{speedup:.2f}x"
        )
        if "score_max_abs_diff" in mode_info:
            print(
                "per-example scores, packed vs padded: max |diff| "
                f"{mode_info['score_max_abs_diff']:.3g}"
            )
    for other in by_impl:
        if other != "spot_jax" and "spot_jax" in by_impl:
            speedup = np.median(times[other]) / np.median(times["spot_jax"])
            print(f"speedup spot_jax / {other} ({args.mode}): {speedup:.2f}x")
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    if args.profile:
        _profile(args, runners)
    return 0


def _profile(args, runners) -> None:
    """One more run of spot_jax under the profiler; a failure here loses no timing above."""
    name = "spot_jax" if "spot_jax" in runners else next(k for k in runners if "spot" in k)
    calls = args.steps if args.mode == "train" else 1
    meta = {"impl": name, "mode": args.mode, "size": args.size}
    meta["per"] = "step" if args.mode == "train" else "call"
    try:
        op_profile.profile(runners[name], args.profile, calls, meta)
    except Exception as e:  # noqa: BLE001 - report and keep the benchmark's results
        print(f"profile failed: {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
