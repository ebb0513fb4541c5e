"""The Hugging Face side of `tools/benchmark.py`: transformers + PEFT prompt tuning.

A randomly initialised T5ForConditionalGeneration of the same size, wrapped by PEFT prompt
tuning with an encoder-only prompt (`num_transformer_submodules=1`, as SPoT), fed the same
synthetic batches. Each `*_runner` returns a function that runs the measured work once and
returns its seconds, so the caller can interleave it with spot_jax's runs.
"""

import time
from collections.abc import Callable, Mapping

import numpy as np

from spot_jax.interop import hf_export
from spot_jax.models import config as config_lib


def _prompted_model(args):
    import torch
    import transformers
    from peft import PromptTuningConfig, TaskType, get_peft_model

    cfg = config_lib.named_config(args.size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Frozen weights in the compute dtype (`model.to(bfloat16)`), as PEFT users run bf16.
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    # The config.json `spot-jax export --to hf` writes for this model, without dropout.
    hf_cfg = transformers.T5Config(**{**hf_export.hf_config(cfg), "dropout_rate": 0.0})
    torch.manual_seed(0)
    # Initialised on the device: a 3B model's random init on the host takes most of a minute
    # of the lent GPU's time; the timed steps do not depend on where the weights were drawn.
    with torch.device(device):
        model = transformers.T5ForConditionalGeneration(hf_cfg).to(dtype=dtype)
    peft_cfg = PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        num_virtual_tokens=args.prompt_length,
        num_transformer_submodules=1,
    )
    return get_peft_model(model, peft_cfg), device


def _tensors(batch: Mapping[str, np.ndarray], device: str):
    import torch

    ids = torch.tensor(batch["encoder_input_tokens"], device=device, dtype=torch.long)
    labels = torch.tensor(batch["decoder_target_tokens"], device=device, dtype=torch.long)
    return ids, (ids != 0).long(), labels


def _timer(device: str, work: Callable[[], object]) -> Callable[[], float]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        # The warm-up's cached activations (about 100 GB at xl) go back before spot_jax
        # compiles and runs in this process; each timed call hands its own back below.
        sync()
        torch.cuda.empty_cache()

    def timed() -> float:
        sync()
        t0 = time.perf_counter()
        work()
        sync()
        seconds = time.perf_counter() - t0
        if device == "cuda":
            # Hand cached activation memory back, untimed: spot_jax runs next in this process.
            torch.cuda.empty_cache()
        return seconds

    return timed


def train_runner(args, batch: Mapping[str, np.ndarray]) -> Callable[[], float]:
    """`args.steps` prompt-tuning steps (Adafactor on the prompt) per call."""
    import transformers

    model, device = _prompted_model(args)
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
    ids, attn, labels = _tensors(batch, device)
    labels[labels == 0] = -100

    def step():
        out = model(input_ids=ids, attention_mask=attn, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for _ in range(args.warmup + 1):
        step()
    return _timer(device, lambda: [step() for _ in range(args.steps)])


def decode_runner(args, batch: Mapping[str, np.ndarray]) -> Callable[[], float]:
    """Greedy `generate` of exactly `args.targets` tokens per row, once per call."""
    import torch

    model, device = _prompted_model(args)
    model.eval()
    ids, attn, _ = _tensors(batch, device)

    def generate():
        with torch.inference_mode():
            return model.generate(
                input_ids=ids,
                attention_mask=attn,
                max_new_tokens=args.targets,
                min_new_tokens=args.targets,  # EOS suppressed: every row decodes the full length
                do_sample=False,
                num_beams=1,
            )

    out = generate()
    if out.shape[1] < args.targets:
        raise RuntimeError(f"HF generate returned {out.shape[1]} tokens, not {args.targets}")
    for _ in range(args.warmup):
        generate()
    return _timer(device, generate)


def score_runner(args, batch: Mapping[str, np.ndarray]) -> Callable[[], float]:
    """Per-row target log-likelihood (rank classification) by one teacher-forced forward."""
    import torch

    model, device = _prompted_model(args)
    model.eval()
    ids, attn, labels = _tensors(batch, device)
    weights = (labels != 0).float()
    labels = labels.masked_fill(labels == 0, -100)

    def score():
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=attn, labels=labels).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            token = torch.gather(log_probs, -1, labels.clamp(min=0)[..., None])[..., 0]
            return (token * weights).sum(-1)

    for _ in range(args.warmup + 1):
        score()
    return _timer(device, score)


def rounds_apart(make: Callable[[], Callable[[], float]], repeats: int, say) -> list[float]:
    """All `repeats` rounds of the runner `make()` builds, then its memory handed back (the
    model, optimizer and cached activations), so that XLA can have the GPU's memory."""
    run = make()
    say("hf_peft built and warmed up")
    times = [run() for _ in range(repeats)]
    del run  # the last reference to the model, its optimizer and activations
    free_memory()
    say(f"hf_peft timed ({repeats} rounds) and released")
    return times


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
