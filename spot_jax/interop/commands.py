"""The `spot-jax convert | export | import-prompt` commands.

  spot-jax convert --from t5x|hf --input CKPT --output DIR [--config NAME] [--vocab-rows N]
  spot-jax export --to hf --input DIR|MODEL_DIR --output HF_DIR [--prompt FILE]
      [--frozen DIR] [--vocabulary SPM]
  spot-jax export --to t5x --input DIR|MODEL_DIR --output T5X_MODEL_DIR [--prompt FILE]
      [--frozen DIR] [--step N] [--dtype float32|bfloat16]
  spot-jax import-prompt --from peft ADAPTER_DIR --output FILE.npy

Each takes argv and returns an exit status; bad input raises an exception whose message is
the one line the CLI prints, and leaves no partial output behind (a rerun is not refused).
"""

import argparse
import contextlib
import shutil

import numpy as np
from etils import epath

from spot_jax.models import prompt_params
from spot_jax.train import checkpoints, frozen_checkpoint
from spot_jax.train.checkpoints import CheckpointError, absolute_path


def _log(message: str) -> None:
    print(message, flush=True)


def _refuse_existing(output: epath.Path) -> None:
    # Never write over what a user already has; a half-overwritten model is worse than none.
    if output.exists() and any(output.iterdir()):
        raise CheckpointError(f"output {output} exists and is not empty; choose a new directory")


@contextlib.contextmanager
def _new_output(output: epath.Path):
    """Refuses a non-empty `output`; removes what the block wrote there if it fails.

    A failed or interrupted write (e.g. Orbax's `params.orbax-checkpoint-tmp`) would otherwise
    leave a folder that the rerun refuses as not empty.
    """
    _refuse_existing(output)
    existed = output.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(output, ignore_errors=True)
        elif output.is_dir():  # it was empty: everything in it is ours
            for child in output.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


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
    output = absolute_path(args.output)
    _refuse_existing(output)
    overrides = {}
    if args.relpos_max_distance:
        overrides["relpos_max_distance"] = args.relpos_max_distance
    if args.source == "t5x":
        from spot_jax.interop import t5x

        with _new_output(output):
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
        with _new_output(output):
            t5x.write_frozen_streaming(output, t5x.param_shapes(config), read, config)
    _log(f"wrote {output} ({_describe(config)})")
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spot-jax export",
        description="spot_jax model -> HF (+ PEFT prompt adapter), or a T5X checkpoint",
    )
    parser.add_argument(
        "--to",
        dest="target",
        choices=("hf", "t5x"),
        required=True,
        help="hf: a transformers model dir; t5x: OUTPUT/checkpoint_<step> in T5X's legacy "
        "format, the prompt (if any) at prompt-tuning's encoder/prompt/prompt/prompt",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="a spot_jax frozen checkpoint dir, or a training MODEL_DIR: its latest trained "
        "params over the frozen weights it started from (model tuning exports the tuned model)",
    )
    parser.add_argument("--output", required=True, help="new HF model or T5X model directory")
    parser.add_argument(
        "--prompt",
        help="a [P, H] prompt (np.save file, e.g. numpy_checkpoints/checkpoint_N/"
        "encoder.prompt.prompt.prompt); also writes a PEFT adapter to OUTPUT/prompt_adapter. "
        "Default for a MODEL_DIR input: its trained prompt, if it has one",
    )
    parser.add_argument(
        "--frozen",
        help="for a MODEL_DIR input: the frozen checkpoint it started from (default: its "
        "INITIAL_CHECKPOINT_PATH in config.gin)",
    )
    parser.add_argument(
        "--vocabulary",
        help="SentencePiece model of the vocabulary, copied as spiece.model so AutoTokenizer "
        "loads from OUTPUT (default: none written)",
    )
    parser.add_argument("--vocab-rows", type=int, help="pad or slice embedding rows to N")
    parser.add_argument(
        "--step",
        type=int,
        help="t5x: the checkpoint's global step (default: the frozen weights' pretrained step "
        "plus a MODEL_DIR's trained steps, as T5X counts)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="t5x: the params' saved dtype (T5X saves float32)",
    )
    args = parser.parse_args(argv)
    if args.target == "t5x" and args.vocabulary:
        raise CheckpointError("--vocabulary is for --to hf (T5X's gin names the vocabulary)")
    if args.step is not None and args.step < 0:
        raise CheckpointError(f"--step {args.step}: a checkpoint's step is >= 0")
    from spot_jax.interop import hf, hf_export, run_weights, t5x

    output = absolute_path(args.output)
    _refuse_existing(output)
    source = absolute_path(args.input)
    if not source.exists():
        raise CheckpointError(f"export --input {args.input} does not exist")
    if args.vocabulary and not epath.Path(args.vocabulary).is_file():
        raise CheckpointError(f"--vocabulary {args.vocabulary} is not a file")
    prompt = param_states = None
    placed = dict(checkpoints.PLACEMENT_DEFAULTS)
    kind = t5x.detect_format(source)
    if kind in ("spot_jax_run", "spot_jax_train"):
        if kind == "spot_jax_train":
            source = source.parent.parent  # MODEL_DIR/checkpoints/<step> -> MODEL_DIR
        config, read, prompt = run_weights.read_run(source, args.frozen, log=_log)
        placed = checkpoints.trained_placement(source) or placed
        frozen = args.frozen or run_weights.initial_checkpoint_of(source)
        step = frozen_checkpoint.pretrained_step(frozen) + checkpoints.latest_train_step(source)
        if args.target == "t5x":
            param_states = run_weights.read_adafactor_states(source, log=_log)
    else:
        config, read = hf.iter_frozen(source)
        step = frozen_checkpoint.pretrained_step(source)
    if args.prompt:
        # Check the prompt before writing anything.
        prompt = _load_prompt(args.prompt)
        if param_states is not None:
            _log("--prompt replaces the run's prompt: its Adafactor states are not exported")
            param_states = None
    if prompt is not None and (prompt.ndim != 2 or prompt.shape[1] != config.emb_dim):
        raise CheckpointError(
            f"prompt {args.prompt or 'of ' + str(source)} has shape {list(prompt.shape)}; "
            f"the model needs [P, {config.emb_dim}]"
        )
    if args.vocab_rows and args.vocab_rows != config.vocab_size:
        import dataclasses

        _log(f"resizing vocab rows {config.vocab_size} -> {args.vocab_rows}")
        rows = args.vocab_rows
        base_read = read
        config = dataclasses.replace(config, vocab_size=rows)

        def read(name):
            return t5x.resize_vocab(name, base_read(name), rows)

    position, per_layer = placed["prompt_position"], placed["per_layer_prompt"]
    if prompt is not None and position != "prefix" and not args.prompt:
        note = f"Note: {source} trained its prompt at prompt_position {position!r}: "
        if args.target == "t5x":
            _log(note + f"a T5X run needs prompt_tuning.train.prompts.{_T5X_COMBINE[position]}")
        else:
            _log(note + "PEFT prepends prompts, so no PEFT adapter is written")
            prompt = None
    layer_prompts = []
    if per_layer != "none":
        note = f"Note: {source} trained per-layer prompts ({per_layer!r}): "
        if args.target == "t5x":
            layer_prompts = [_LAYER_PROMPT.format(i) for i in range(config.num_encoder_layers)]
            _log(
                note + "written at encoder/layers_<i>/prompt/prompt/prompt; a T5X run needs "
                "prompt-tuning's per_layer_prompt_encoder_t5_1_1_flaxformer.gin with "
                f"per_layer.{per_layer}_prompt"
            )
        elif prompt is not None:
            _log(note + "PEFT has no such prompts, so no PEFT adapter is written")
            prompt = None
    combine = placed["multi_task_prompt"]
    if combine != "none":
        note = (
            f"Note: {source} trained multi-task prompts ({combine!r}, {placed['num_tasks']} "
            "tasks): "
        )
        if args.target == "t5x":
            layer_prompts += [prompt_params.SHARED_PROMPT_PATH, prompt_params.TASK_PROMPTS_PATH]
            kind_ = {
                "add": "AddMultiTaskPrompt",
                "concat": "ConcatMultiTaskPrompt",
                "concat_features": "ConcatFeaturesMultiTaskPrompt",
                "project": "ProjectMultiTaskPrompt",
            }[combine]
            _log(
                note + "written at encoder/prompt/prompt/{shared_prompt,task_prompts/embedding}; "
                "a T5X run needs prompt-tuning's multi_task_t5_1_1_prompt.gin with "
                f"multitask_prompts.{kind_}"
            )
        else:
            _log(note + "PEFT has no such prompts, so no PEFT adapter is written")
    attention = placed["prompt_attention"]
    if attention is not None:
        note = f"Note: {source} trained its prompt with prompt_attention {attention}: "
        if args.target == "t5x":
            _log(
                note + "a T5X run needs prompt-tuning's extended masks."
                f"prompt_encoder_attention_mask with allowable_attention {set(attention)}"
            )
        elif prompt is not None:
            _log(note + "PEFT's prompts see everything, so no PEFT adapter is written")
            prompt = None
    if args.target == "t5x":
        with _new_output(output):
            _export_t5x(
                read,
                config,
                prompt,
                output,
                args.step if args.step is not None else step,
                args.dtype,
                param_states,
                layer_prompts,
            )
        return 0
    with _new_output(output):
        hf_export.export(read, config, output, vocabulary=args.vocabulary)
        _log(f"wrote HF model {output} ({_describe(config)})")
        if prompt is not None:
            # An absolute path: PEFT reads a relative one as a Hub model id.
            hf.export_prompt(prompt, config, output / "prompt_adapter", base_model=str(output))
            _log(f"wrote PEFT prompt adapter {output / 'prompt_adapter'} (P={prompt.shape[0]})")
    return 0


# prompt-tuning's combination function for each prompt position (prompts.PROMPT_POSITIONS).
_T5X_COMBINE = {
    "prefix": "prefix_prompt",
    "prefix_after_bos": "prefix_prompt_after_bos",
    "suffix": "suffix_prompt",
    "suffix_after_eos": "suffix_prompt with before_eos=False",
}


_LAYER_PROMPT = "encoder/layers_{}/prompt/prompt/prompt"  # prompt-tuning's per-layer prompts


def _export_t5x(
    read, config, prompt, output: epath.Path, step: int, dtype: str, states, layer_prompts=()
) -> None:
    from spot_jax.interop import t5x, t5x_export
    from spot_jax.models.prompted import PROMPT_PATH

    shapes = dict(t5x.param_shapes(config))
    # The run's per-layer (and multi-task) prompts, read with its other trained params.
    shapes.update({name: tuple(read(name).shape) for name in layer_prompts})
    if prompt is not None:
        shapes[PROMPT_PATH] = tuple(prompt.shape)
        base_read = read

        def read(name):
            return prompt if name == PROMPT_PATH else base_read(name)

    t5x_export.write(read, shapes, output, step, dtype=dtype, log=_log, param_states=states)


def import_prompt_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="spot-jax import-prompt", description="PEFT prompt-tuning adapter -> [P, H] .npy"
    )
    parser.add_argument("--from", dest="source", choices=("peft",), required=True)
    parser.add_argument("adapter_dir")
    parser.add_argument("--output", required=True, help="np.save file for PROMPT_FILE")
    args = parser.parse_args(argv)
    from spot_jax.interop import hf

    output = epath.Path(args.output)
    if output.exists():
        raise CheckpointError(f"output {output} exists; choose a new file name")
    prompt = hf.import_prompt(args.adapter_dir, log=_log)
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
        + (" in every layer" if config.relpos_per_layer else "")
    )
