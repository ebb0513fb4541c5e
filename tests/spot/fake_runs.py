"""Hand-made training runs for the library tests: a MODEL_DIR as the trainer leaves it, no
training (numpy prompt checkpoints, model.json, config.gin, metrics.jsonl)."""

import json
from pathlib import Path

import numpy as np

from spot_jax.spot import library

MODEL = {
    "vocab_size": 512,
    "emb_dim": 8,
    "num_heads": 4,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "head_dim": 2,
    "mlp_dim": 16,
    "relpos_buckets": 8,
    "prompt_length": 5,
}


def snapshot(root) -> dict[str, bytes]:
    """Every file under `root` with its bytes: equal snapshots mean nothing changed."""
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def fake_run(
    root: Path, name: str, task: str, seed: int, losses=(3.0, 2.0), steps=(0, 10, 20), evals=None
) -> Path:
    """A MODEL_DIR as the trainer leaves it: numpy checkpoints at `steps`, metrics, config.

    metrics.jsonl holds eval/loss `losses` at steps 10 and 20, or, given `evals` ({step:
    {key: value}}), those records in that order (keys in the order the trainer would write).
    """
    run = root / name
    rng = np.random.default_rng(seed)
    for step in steps:
        d = run / "numpy_checkpoints" / f"checkpoint_{step}"
        d.mkdir(parents=True)
        with open(d / library.PROMPT_FILE, "wb") as f:  # np.save(path) would append .npy
            np.save(f, rng.normal(size=(5, 8)).astype(np.float32) + seed)
    (run / "model.json").write_text(json.dumps(MODEL))
    (run / "config.gin").write_text(
        f"INITIAL_CHECKPOINT_PATH = None\nMIXTURE_OR_TASK_NAME = {task!r}\nSEED = 0\n"
        "TRAIN_STEPS = 20\n"
    )
    if evals is None:
        evals = {s: {"eval/loss": v} for s, v in zip((10, 20), losses, strict=True)}
    lines = [json.dumps({"step": s, "train/loss": 1.0, **m}) for s, m in evals.items()]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run
