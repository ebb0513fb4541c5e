"""Train-step speed and memory of spot_jax prompt tuning, optionally beside HF PEFT.

    python tools/benchmark.py --size small --batch 8 --inputs 128 --targets 16 --prompt-length 20
    python tools/benchmark.py --size base --batch 32 --inputs 512 --targets 32 \
        --prompt-length 100 --compare-peft

Synthetic batches (no TF). Reports step time, tokens/s (batch x (inputs + targets), the
convention of the issue's PEFT figures), model FLOP/s utilisation against `--peak-tflops`, and
peak device memory. FLOPs count 4 x non-embedding params x tokens per stack (encoder tokens
include the prompt): forward 2 + activation gradients 2; frozen weights get no weight gradient.
`--compare-peft` times transformers + PEFT prompt tuning (encoder-only prompt,
`num_transformer_submodules=1`) on the same shapes in the same process and prints the ratio.
"""

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spot_jax import runtime_flags  # noqa: E402

# The same XLA flags the spot-jax CLI sets, so the benchmark measures what users run.
runtime_flags.set_default_xla_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from spot_jax import axes  # noqa: E402
from spot_jax.data import synthetic  # noqa: E402
from spot_jax.models import config as config_lib  # noqa: E402
from spot_jax.models import prompted  # noqa: E402
from spot_jax.train import optim, sharding, steps, trainer  # noqa: E402
from spot_jax.train import state as state_lib  # noqa: E402


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


def bench_spot(args) -> dict:
    overrides = dict(
        remat_policy=args.remat,
        scan_layers=args.scan,
        dtype=args.dtype,
        attention_impl=args.attention,
    )
    if args.frozen_dtype:
        overrides["frozen_dtype"] = args.frozen_dtype
    cfg = config_lib.named_config(args.size, **overrides)
    model = prompted.PromptedT5(cfg, prompt_length=args.prompt_length, z_loss=1e-4)
    mesh = sharding.make_mesh(args.model_parallel)
    rules = axes.standard_rules()
    lengths = {"inputs": args.inputs, "targets": args.targets}
    params, shardings = trainer.build_params(
        model,
        mesh,
        rules,
        batch_size=args.batch,
        feature_lengths=lengths,
        initial_checkpoint_path=None,
        seed=0,
    )
    trainable, frozen = optim.split_trainable(params, args.trainable)
    optimizer = optim.adafactor()
    state = state_lib.create(trainable, optimizer)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    frozen_sh = {k: shardings[k] for k in frozen}
    step_fn = jax.jit(
        functools.partial(steps.train_step, model, optimizer),
        in_shardings=(
            state_sh,
            frozen_sh,
            sharding.batch_sharding(mesh),
            sharding.replicated(mesh),
        ),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    local = synthetic.make_batch(args.batch, lengths, cfg.vocab_size, seed=0)
    rng = jax.random.PRNGKey(0)
    import flax.linen as nn

    with mesh, nn.logical_axis_rules(list(rules)):
        batch = sharding.global_batch(local, mesh)
        compiled = step_fn.lower(state, frozen, batch, rng).compile()
        step_memory = _step_memory_gb(compiled)
        t0 = time.perf_counter()
        state, metrics = step_fn(state, frozen, batch, rng)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            state, metrics = step_fn(state, frozen, batch, rng)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step_fn(state, frozen, batch, rng)
        jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - t0) / args.steps
    loss = float(metrics["loss"]) / max(float(metrics["weight_sum"]), 1)
    return {
        "impl": "spot_jax",
        "step_s": step_s,
        "compile_s": compile_s,
        "loss_per_token": loss,
        "peak_memory_gb": peak_memory_gb(),
        "step_memory_gb": step_memory,
    }


def _step_memory_gb(compiled) -> float | None:
    """Device memory the compiled step needs: arguments + outputs + temporaries - donated."""
    try:
        m = compiled.memory_analysis()
        total = (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
        return total / 1e9
    except Exception:
        return None


def bench_peft(args) -> dict:
    import torch
    import transformers
    from peft import PromptTuningConfig, TaskType, get_peft_model

    cfg = config_lib.named_config(args.size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    hf_cfg = transformers.T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.emb_dim,
        d_kv=cfg.head_dim,
        d_ff=cfg.mlp_dim,
        num_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relpos_buckets,
        relative_attention_max_distance=cfg.relpos_max_distance,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(hf_cfg).to(device=device, dtype=dtype)
    peft_cfg = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        num_virtual_tokens=args.prompt_length,
        num_transformer_submodules=1,
    )
    model = get_peft_model(model, peft_cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = transformers.optimization.Adafactor(
        params,
        lr=0.3,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
        weight_decay=1e-5,
        clip_threshold=1.0,
        decay_rate=-0.8,
    )
    lengths = {"inputs": args.inputs, "targets": args.targets}
    local = synthetic.make_batch(args.batch, lengths, cfg.vocab_size, seed=0)
    ids = torch.tensor(local["encoder_input_tokens"], device=device, dtype=torch.long)
    labels = torch.tensor(local["decoder_target_tokens"], device=device, dtype=torch.long)
    labels[labels == 0] = -100
    attn = (ids != 0).long()

    def step():
        out = model(input_ids=ids, attention_mask=attn, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup + 1):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    step_s = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    return {
        "impl": "hf_peft",
        "step_s": step_s,
        "loss_per_token": float(loss),
        "peak_memory_gb": peak,
    }


def _free_torch_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak bf16 TFLOP/s for MFU (e.g. 851 measured on an H200)",
    )
    p.add_argument("--compare-peft", action="store_true")
    p.add_argument("--json", default=None, help="append results as a JSON line to this file")
    args = p.parse_args(argv)

    cfg = config_lib.named_config(args.size)
    tokens = args.batch * (args.inputs + args.targets)
    flops = model_flops(cfg, args.batch, args.inputs, args.targets, args.prompt_length)
    results = []
    if args.compare_peft:
        # PEFT first, then free its memory: both frameworks cache device memory.
        peft_result = bench_peft(args)
        _free_torch_memory()
    results.append(bench_spot(args))
    if args.compare_peft:
        results.append(peft_result)
    header = {
        "size": args.size,
        "batch": args.batch,
        "inputs": args.inputs,
        "targets": args.targets,
        "prompt_length": args.prompt_length,
        "dtype": args.dtype,
        "frozen_dtype": args.frozen_dtype,
        "remat": args.remat,
        "scan": args.scan,
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for r in results:
        r.update(header)
        r["tokens_per_s"] = tokens / r["step_s"]
        r["model_tflops_per_s"] = flops / r["step_s"] / 1e12
        if args.peak_tflops:
            r["mfu"] = r["model_tflops_per_s"] / args.peak_tflops
        mem = r.get("peak_memory_gb")
        print(
            f"{r['impl']:9s} {args.size} b{args.batch} {args.inputs}+{args.prompt_length}/"
            f"{args.targets}: {r['step_s'] * 1e3:8.1f} ms/step  {r['tokens_per_s']:10.0f} tok/s  "
            f"{r['model_tflops_per_s']:7.2f} TFLOP/s"
            + (f"  MFU {r['mfu']:.1%}" if "mfu" in r else "")
            + (f"  peak {mem:.1f} GB" if mem else "")
            + (f"  step {r['step_memory_gb']:.1f} GB" if r.get("step_memory_gb") else ""),
            flush=True,
        )
    if args.compare_peft:
        print(f"speedup spot_jax / peft: {results[1]['step_s'] / results[0]['step_s']:.2f}x")
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
