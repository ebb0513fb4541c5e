"""What a train step needs in memory, from shapes alone: nothing is allocated or run.

    python tools/step_memory.py --size xl --batch 32 --inputs 512 --targets 32 \
        --prompt-length 100 --scan --remat none --set recompute_elementwise=False

Compiles `steps.train_step` for abstract params (`PromptedT5.abstract_params`, frozen weights
in `--frozen-dtype`) on this machine's backend and prints XLA's memory analysis: arguments,
outputs, temporaries, and the step's total (arguments + outputs + temporaries - donated), the
"step memory" of `tools/benchmark.py`. Each `--set KEY=VALUE` (a T5Config field) adds one more
line with that change, so variants compare in one run. On a CPU the attention is XLA's (it
keeps [B, heads, L, L] probabilities that cuDNN's fused kernel does not), so for GPU planning
read the differences between lines, not the totals.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

# The repository, for spot_jax (no other tool is imported).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from spot_jax.models import config as config_lib  # noqa: E402
from spot_jax.models import prompted  # noqa: E402
from spot_jax.train import optim, steps  # noqa: E402
from spot_jax.train import state as state_lib  # noqa: E402


def step_memory(cfg: config_lib.T5Config, args) -> dict[str, float]:
    """XLA's memory analysis of the compiled train step (GB), and its compile seconds."""
    model = prompted.PromptedT5(cfg, prompt_length=args.prompt_length, z_loss=1e-4)
    flat = state_lib.flatten_params(
        nn.unbox(model.abstract_params(args.batch, args.inputs, args.targets))
    )
    trainable, frozen = optim.split_trainable(flat, args.trainable)
    frozen_dtype = jnp.dtype(args.frozen_dtype)
    frozen = {k: jax.ShapeDtypeStruct(v.shape, frozen_dtype) for k, v in frozen.items()}
    optimizer = optim.adafactor()
    state = jax.eval_shape(lambda t: state_lib.create(t, optimizer), trainable)
    ids = lambda n: jax.ShapeDtypeStruct((args.batch, n), jnp.int32)  # noqa: E731
    batch = {
        "encoder_input_tokens": ids(args.inputs),
        "decoder_input_tokens": ids(args.targets),
        "decoder_target_tokens": ids(args.targets),
        "decoder_loss_weights": jax.ShapeDtypeStruct((args.batch, args.targets), jnp.float32),
    }
    step = jax.jit(lambda *a: steps.train_step(model, optimizer, *a), donate_argnums=(0,))
    start = time.perf_counter()
    compiled = step.lower(state, frozen, batch, jax.random.PRNGKey(0)).compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    gb = 1e9
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return {
        "arguments_gb": m.argument_size_in_bytes / gb,
        "outputs_gb": m.output_size_in_bytes / gb,
        "temporaries_gb": m.temp_size_in_bytes / gb,
        "step_memory_gb": total / gb,
        "compile_s": seconds,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=128)
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--prompt-length", type=int, default=100)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--frozen-dtype", default="bfloat16")
    p.add_argument("--remat", default="none", choices=("none", "full", "dots"))
    p.add_argument("--scan", action="store_true")
    p.add_argument("--trainable", default=r".*/prompt/.*")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE: one more line")
    return p


def measure(argv=None) -> list[tuple[str, dict[str, float]]]:
    """[(variant, memory analysis)]: the configuration as given, then each `--set`."""
    args = _parser().parse_args(argv)
    base = config_lib.named_config(
        args.size, dtype=args.dtype, remat_policy=args.remat, scan_layers=args.scan
    )
    variants = [("as configured", base)]
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            value = config_lib.field_value(key, text)
        except ValueError as e:
            raise SystemExit(f"--set {item}: {e}") from None
        variants.append((item, dataclasses.replace(base, **{key: value})))
    print(
        f"{args.size} batch {args.batch}, inputs {args.inputs} + prompt {args.prompt_length}, "
        f"targets {args.targets}, {args.dtype}, frozen {args.frozen_dtype}, remat {args.remat}"
        f"{', scan' if args.scan else ''}; {jax.devices()[0].platform}",
        flush=True,
    )
    results = []
    for name, cfg in variants:
        m = step_memory(cfg, args)
        print(
            f"  {name:32s} step {m['step_memory_gb']:8.3f} GB = args "
            f"{m['arguments_gb']:.3f} + out {m['outputs_gb']:.3f} + temp "
            f"{m['temporaries_gb']:.3f} - donated  ({m['compile_s']:.0f} s compile)",
            flush=True,
        )
        results.append((name, m))
    return results


if __name__ == "__main__":
    measure()
