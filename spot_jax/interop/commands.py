"""The `spot-jax convert | export | import-prompt` commands.

  spot-jax convert --from t5x|hf --input CKPT --output DIR [--config NAME] [--vocab-rows N]
  spot-jax export --to hf --input DIR --output HF_DIR [--prompt FILE]
  spot-jax import-prompt --from peft ADAPTER_DIR --output FILE.npy

Each takes argv and returns an exit status; bad input raises an exception whose message is
the one line the CLI prints.
"""

import argparse

import numpy as np
from etils import epath

from spot_jax.train.checkpoints import CheckpointError


def _log(message: str) -> None:
    print(message, flush=True)


def _refuse_existing(output: epath.Path) -> None:
    # Never write over what a user already has; a half-overwritten model is worse than none.
    if output.exists() and any(output.iterdir()):
        raise CheckpointError(f"output {output} exists and is not empty; choose a new directory")


def convert_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spot-jax convert", description="T5X or HF weights -> spot_jax frozen checkpoint"
    )
    parser.add_argument("--from", dest="source", choices=("t5x", "hf"), required=True)
    parser.add_argument("--input", required=True, help="T5X checkpoint dir/file or HF model dir")
    parser.add_argument("--output", required=True, help="new spot_jax frozen checkpoint dir")
    parser.add_argument(
        "--config",
        help="named T5 config (tiny, small, ..., xxl, t5x_test_tiny, pt_test_tiny); shapes "
        "must match it; it supplies what shapes cannot tell (relpos_max_distance)",
    )
    parser.add_argument(
        "--relpos-max-distance", type=int, help="override the relative-position max distance"
    )
    parser.add_argument(
        "--vocab-rows", type=int, help="pad (zeros) or slice embedding/logits rows to N"
    )
    args = parser.parse_args(argv)
    output = epath.Path(args.output)
    _refuse_existing(output)
    overrides = {}
    if args.relpos_max_distance:
        overrides["relpos_max_distance"] = args.relpos_max_distance
    if args.source == "t5x":
        from spot_jax.interop import t5x

        config = t5x.convert(
            args.input, output, args.config, vocab_rows=args.vocab_rows, log=_log, **overrides
        )
    else:
        import dataclasses

        from spot_jax.interop import hf, t5x
        from spot_jax.models.config import named_config

        config, read = hf.read_hf(args.input, args.vocab_rows, log=_log)
        if args.config:
            want = named_config(args.config, vocab_size=config.vocab_size, **overrides)
            t5x.check_shapes(t5x.param_shapes(config), want, f"HF model {args.input}")
        config = dataclasses.replace(config, **overrides)
        t5x.write_frozen_streaming(output, t5x.param_shapes(config), read, config)
    _log(f"wrote {output} ({_describe(config)})")
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spot-jax export", description="spot_jax frozen checkpoint -> HF (+ PEFT prompt)"
    )
    parser.add_argument("--to", dest="target", choices=("hf",), required=True)
    parser.add_argument("--input", required=True, help="spot_jax frozen checkpoint dir")
    parser.add_argument("--output", required=True, help="new HF model directory")
    parser.add_argument(
        "--prompt",
        help="a [P, H] prompt (np.save file, e.g. numpy_checkpoints/checkpoint_N/"
        "encoder.prompt.prompt.prompt); also writes a PEFT adapter to OUTPUT/prompt_adapter",
    )
    parser.add_argument("--vocab-rows", type=int, help="pad or slice embedding rows to N")
    args = parser.parse_args(argv)
    from spot_jax.interop import hf, t5x

    output = epath.Path(args.output)
    _refuse_existing(output)
    config, read = hf.iter_frozen(args.input)
    prompt = None
    if args.prompt:
        # Check the prompt before writing anything.
        prompt = _load_prompt(args.prompt)
        if prompt.ndim != 2 or prompt.shape[1] != config.emb_dim:
            raise CheckpointError(
                f"prompt {args.prompt} has shape {list(prompt.shape)}; the model needs "
                f"[P, {config.emb_dim}]"
            )
    if args.vocab_rows and args.vocab_rows != config.vocab_size:
        import dataclasses

        _log(f"resizing vocab rows {config.vocab_size} -> {args.vocab_rows}")
        rows = args.vocab_rows
        base_read = read
        config = dataclasses.replace(config, vocab_size=rows)

        def read(name):
            return t5x.resize_vocab(name, base_read(name), rows)

    hf.export(read, config, output)
    _log(f"wrote HF model {output} ({_describe(config)})")
    if prompt is not None:
        hf.export_prompt(prompt, config, output / "prompt_adapter", base_model=str(output))
        _log(f"wrote PEFT prompt adapter {output / 'prompt_adapter'} (P={prompt.shape[0]})")
    return 0


def import_prompt_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spot-jax import-prompt", description="PEFT prompt-tuning adapter -> [P, H] .npy"
    )
    parser.add_argument("--from", dest="source", choices=("peft",), required=True)
    parser.add_argument("adapter_dir")
    parser.add_argument("--output", required=True, help="np.save file for PROMPT_FILE")
    args = parser.parse_args(argv)
    from spot_jax.interop import hf

    prompt = hf.import_prompt(args.adapter_dir, log=_log)
    output = epath.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as f:
        np.save(f, prompt)
    _log(f"wrote prompt {output} {list(prompt.shape)}")
    return 0


def _load_prompt(path: str) -> np.ndarray:
    if not epath.Path(path).exists():
        raise CheckpointError(f"prompt file {path} does not exist")
    with epath.Path(path).open("rb") as f:
        return np.asarray(np.load(f), np.float32)


def _describe(config) -> str:
    return (
        f"emb {config.emb_dim}, {config.num_heads} heads x {config.head_dim}, mlp "
        f"{config.mlp_dim}, {config.num_encoder_layers}+{config.num_decoder_layers} layers, "
        f"vocab {config.vocab_size}, relpos {config.relpos_buckets}/{config.relpos_max_distance}"
    )
