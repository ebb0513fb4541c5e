"""PEFT prompt-tuning adapters: a [P, H] soft prompt out to PEFT and back.

T5X prompt tuning prompts the encoder only, so adapters are written with one transformer
submodule; importing an adapter that also prompts the decoder keeps the encoder's prompt.
"""

import json

import numpy as np
from etils import epath

from spot_jax.models.config import T5Config
from spot_jax.train.checkpoints import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PROMPT_KEY = "prompt_embeddings"  # PEFT's key for a prompt-learning adapter's table


def export_prompt(
    prompt: np.ndarray, config: T5Config, output: epath.PathLike, base_model: str = ""
) -> None:
    """Writes a PEFT prompt-tuning adapter (encoder prompt only) for a [P, H] prompt."""
    from safetensors.numpy import save_file

    prompt = np.asarray(prompt, np.float32)
    if prompt.ndim != 2 or prompt.shape[1] != config.emb_dim:
        raise CheckpointError(
            f"prompt has shape {list(prompt.shape)}; this model needs [P, {config.emb_dim}]"
        )
    output = epath.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    adapter = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM",
        "num_virtual_tokens": int(prompt.shape[0]),
        "token_dim": config.emb_dim,
        # T5X prompt tuning prompts the encoder only; PEFT's seq2seq default (2) would also
        # prefix the decoder.
        "num_transformer_submodules": 1,
        "num_attention_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": base_model,
        "inference_mode": True,
    }
    (output / ADAPTER_CONFIG).write_text(json.dumps(adapter, indent=2))
    save_file({PEFT_PROMPT_KEY: prompt}, str(output / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def import_prompt(adapter_dir: epath.PathLike, log=print) -> np.ndarray:
    """The encoder prompt [P, H] (float32) of a PEFT prompt-tuning adapter directory."""
    adapter_dir = epath.Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).exists():
        raise CheckpointError(f"{adapter_dir} is not a PEFT adapter (no {ADAPTER_CONFIG})")
    cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if cfg.get("peft_type") != "PROMPT_TUNING":
        raise CheckpointError(
            f"{adapter_dir} holds a {cfg.get('peft_type')} adapter; only PROMPT_TUNING has a "
            "soft prompt to import"
        )
    if (adapter_dir / ADAPTER_WEIGHTS).exists():
        from safetensors.numpy import load_file

        tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    elif (adapter_dir / "adapter_model.bin").exists():
        import torch

        tensors = {
            k: torch_to_numpy(v)
            for k, v in torch.load(
                adapter_dir / "adapter_model.bin", map_location="cpu", weights_only=True
            ).items()
        }
    else:
        raise CheckpointError(f"{adapter_dir} has no {ADAPTER_WEIGHTS} or adapter_model.bin")
    keys = [k for k in tensors if k.endswith(PEFT_PROMPT_KEY)]
    if not keys:
        raise CheckpointError(
            f"{adapter_dir} has no {PEFT_PROMPT_KEY} tensor (has {list(tensors)})"
        )
    table = np.asarray(tensors[keys[0]], np.float32)
    p = int(cfg["num_virtual_tokens"])
    if cfg.get("num_transformer_submodules", 1) == 2:
        log("note: the adapter also prompts the decoder; importing the encoder prompt only")
    return table[:p]


def torch_to_numpy(tensor) -> np.ndarray:
    import ml_dtypes
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
