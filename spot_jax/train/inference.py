"""Eval and infer jobs: a saved prompt (or MODEL_DIR's latest) on a split, no training.

The prompt comes from PROMPT_FILE when given, else from MODEL_DIR's newest numpy checkpoint;
the frozen weights from INITIAL_CHECKPOINT_PATH, as in training. When MODEL_DIR holds a train
checkpoint, its other trained params (model tuning, TRAINABLE beyond the prompt) replace their
frozen values, so eval scores the model the run trained, not its starting point.
"""

import functools
import json
import re

import jax
import numpy as np
from etils import epath

from spot_jax import axes, data
from spot_jax.data.config import DatasetConfig
from spot_jax.models import multi_task_prompt, prompts
from spot_jax.models.prompted import (
    PROMPT_PATH,
    PromptedT5,
    is_prompt_path,
    is_stacked,
    layer_name,
)
from spot_jax.train import (
    checkpoints,
    evaluation,
    initial_params,
    sharding,
    steps,
    summaries,
)
from spot_jax.train import optim as optim_lib


def _numpy_step(folder: str) -> int | None:
    """N for a numpy checkpoint folder `checkpoint_N`; None for its temp/backup folders."""
    number = folder.removeprefix("checkpoint_")
    return int(number) if folder.startswith("checkpoint_") and number.isdigit() else None


def latest_numpy_prompt(model_dir: epath.PathLike, name: str = PROMPT_PATH) -> epath.Path:
    """The prompt `name` (a multi-task run's: its shared prompt) of the run's last save."""
    root = epath.Path(model_dir) / "numpy_checkpoints"
    found = sorted(
        (step, p)
        for p in (root.glob("checkpoint_*") if root.exists() else [])
        if (step := _numpy_step(p.name)) is not None
    )
    if not found:
        raise FileNotFoundError(
            f"no numpy prompt checkpoints in {root}; set PROMPT_FILE (or PROMPT_LENGTH=0 for "
            "a run trained without a prompt, e.g. runs/model_tune.gin)"
        )
    return found[-1][1] / name.replace("/", ".")


def _checkpoint_step(prompt_path) -> int:
    """N for a prompt read from `numpy_checkpoints/checkpoint_N/`, else 0."""
    step = _numpy_step(epath.Path(prompt_path).parent.name) if prompt_path else None
    return step or 0


def _check_placement(model: PromptedT5, model_dir) -> None:
    """Refuses to evaluate a run's prompt placed otherwise than the run trained it (its
    position, its per-layer prompts)."""
    trained = checkpoints.trained_placement(model_dir) or {}
    for key, value in checkpoints.placement(model).items():
        if key in trained and trained[key] != value:
            raise checkpoints.CheckpointError(
                f"{model_dir} trained its prompt with {key} {trained[key]!r}, but this job "
                f"uses {value!r}; pass --gin.{checkpoints.PLACEMENT_MACROS[key]}="
                f'"{trained[key]!r}"'
            )


def _prompts_beside(prompt_file, abstract, main: str) -> dict[str, np.ndarray]:
    """The model's other prompts saved beside its input prompt's file (a numpy checkpoint
    folder, as prompt-tuning writes them: `encoder.layers_<i>.prompt.prompt.prompt` per layer,
    stacked for a scanned model; a multi-task run's `encoder.prompt.prompt.task_prompts.
    embedding`); {} where any is missing."""
    folder = epath.Path(prompt_file).parent
    found = {}
    for name, shape in abstract.items():
        if name == main or not is_prompt_path(name):
            continue
        layers = [layer_name(name, i) for i in range(shape.shape[0])] if is_stacked(name) else []
        files = [folder / n.replace("/", ".") for n in layers or [name]]
        if not all(f.exists() for f in files):
            return {}
        values = []
        for f in files:
            with f.open("rb") as fh:
                values.append(np.load(fh))
        found[name] = np.stack(values) if layers else values[0]
        if found[name].shape != shape.shape:
            raise checkpoints.CheckpointError(
                f"prompt {name} beside {prompt_file} has shape {list(found[name].shape)}; the "
                f"model needs {list(shape.shape)} (PROMPT_LENGTH? NUM_TASKS?)"
            )
    return found


def _load(
    model: PromptedT5,
    eval_data,
    model_dir,
    prompt_file,
    initial_checkpoint_path,
    model_parallel,
    seed,
):
    path, main = None, model.input_prompt_path
    if model.prompt_length:
        _check_placement(model, model_dir)
        path = prompt_file or latest_numpy_prompt(model_dir, main)
        model = model.replace(prompt_init=prompts.from_file(str(path)), max_segments=0)
    mesh = sharding.make_mesh(model_parallel)
    rules = axes.standard_rules()
    params, _ = initial_params.build_params(
        model,
        mesh,
        rules,
        batch_size=eval_data.batch_size,
        feature_lengths=dict(eval_data.task_feature_lengths),
        initial_checkpoint_path=initial_checkpoint_path,
        seed=seed,
    )
    # The prompt stays as chosen above (PROMPT_FILE or the numpy prompt of the same save).
    abstract = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in params.items()
    }
    # The other prompts (per-layer, task prompts): beside the prompt file where saved there
    # (the same save), else from the run's train checkpoint with its other trained params.
    others = [k for k in params if is_prompt_path(k) and k != main]
    beside = _prompts_beside(path, abstract, main) if others else {}
    params.update({k: jax.device_put(v, params[k].sharding) for k, v in beside.items()})
    trained = checkpoints.restore_trained(model_dir, abstract, skip=(main, *beside))
    trained_step = None
    if beside:
        trained_step = _checkpoint_step(path) or None
        print(f"Using the prompts beside {path}: {', '.join(sorted(beside))}.", flush=True)
    if trained is not None and trained[1]:
        trained_step, values = trained
        params.update(values)
        print(
            f"Using the {len(values)} trained params of {model_dir}/checkpoints/{trained_step} "
            "over the frozen weights.",
            flush=True,
        )
    restored = set(beside) | set(trained[1] if trained else ())
    missing = [k for k in others if k not in restored]
    if missing:
        raise checkpoints.CheckpointError(
            f"the model's other prompts {missing[:2]}... (per-layer prompts, task prompts): "
            f"neither beside {path} nor in a train checkpoint "
            f"of {model_dir}; evaluate the run's MODEL_DIR (or keep its numpy checkpoint folder "
            "whole)"
        )
    trainable, frozen = optim_lib.split_trainable(params, ".*")
    return model, mesh, rules, trainable, frozen, trained_step


def evaluate_job(
    *,
    model: PromptedT5,
    eval_data: DatasetConfig,
    model_dir: str,
    prompt_file: str | None = None,
    initial_checkpoint_path: str | None = None,
    model_parallel: int = 1,
    eval_steps: int | None = None,
    seed: int = 0,
    rank_classification: bool = False,
):
    """Evaluates; writes MODEL_DIR/eval_metrics.json and appends to metrics.jsonl.

    The metrics are the loss, token accuracy and exact match of every eval, plus the task's
    own metric fns (accuracy, F1, MCC, SQuAD EM/F1, ROUGE, ...) on the decoded predictions,
    and with `rank_classification` (classification tasks) the same metrics over the
    likeliest label ('eval/rank_accuracy', ...). The metrics.jsonl record also names the job,
    split and prompt it evaluated.
    """
    eval_data = data.with_lengths(eval_data)
    model, mesh, rules, trainable, frozen, trained_step = _load(
        model, eval_data, model_dir, prompt_file, initial_checkpoint_path, model_parallel, seed
    )
    evaluator = evaluation.Evaluator(
        model,
        eval_data,
        mesh,
        rules,
        max_batches=eval_steps,
        rank_classification=rank_classification,
        progress=True,
    )
    metrics = evaluator(trainable, frozen)
    out = epath.Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=2))
        prompt = prompt_file or (
            latest_numpy_prompt(model_dir, model.input_prompt_path) if model.prompt_length else None
        )
        record = {
            "job": "eval",
            "task": eval_data.mixture_or_task_name,
            "split": eval_data.split,
            "prompt": str(prompt) if prompt else None,
            **({"trained_step": trained_step} if trained_step is not None else {}),
            **metrics,
        }
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        # TensorBoard run `<split>_eval`, at the step of the prompt checkpoint evaluated (or
        # of the trained params, for a run without a prompt).
        run = re.sub(r"[^\w.-]", "_", eval_data.split) + "_eval"  # 'validation[:50]'
        summaries.Summaries(out).write(
            _checkpoint_step(prompt) if prompt else (trained_step or 0),
            {f"{run}/{k.split('/', 1)[-1]}": v for k, v in metrics.items()},
        )
    print(json.dumps(metrics), flush=True)
    return metrics


def infer_job(
    *,
    model: PromptedT5,
    eval_data: DatasetConfig,
    model_dir: str,
    prompt_file: str | None = None,
    initial_checkpoint_path: str | None = None,
    model_parallel: int = 1,
    eval_steps: int | None = None,
    seed: int = 0,
):
    """Decodes the split and writes MODEL_DIR/inference.jsonl (input, target, prediction ids).

    Each row names its `task`; a mixture is decoded task by task (each task with the split,
    as its eval is). For a SeqIO task each row also has the three as text (`inputs_text`,
    `targets_text`, `prediction_text`), detokenized with the task's vocabulary.
    """
    eval_data = data.with_lengths(eval_data)
    model, mesh, rules, trainable, frozen, _ = _load(
        model, eval_data, model_dir, prompt_file, initial_checkpoint_path, model_parallel, seed
    )
    length = eval_data.task_feature_lengths["targets"]
    predict = jax.jit(functools.partial(steps.predict_step, model, max_decode_length=length))
    rows = []
    for cfg in data.eval_task_configs(eval_data).values():
        rows += _decode(cfg, predict, trainable, frozen, mesh, eval_steps, seed, model.multi_task)
    out = epath.Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        with (out / "inference.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} predictions to {out / 'inference.jsonl'}", flush=True)
    return {"num_predictions": len(rows)}


def _decode(
    cfg: DatasetConfig, predict, trainable, frozen, mesh, eval_steps, seed, multi_task=None
) -> list[dict]:
    """The rows of inference.jsonl for one task's split (every host's examples)."""
    shard_index, num_shards = sharding.data_shard_info(mesh)
    detokenize = data.make_detokenizer(cfg)
    rows = []
    with sharding.active(mesh):
        it = data.make_eval_iterator(cfg, shard_index=shard_index, num_shards=num_shards)
        try:
            for i, local in enumerate(it):
                if eval_steps is not None and i >= eval_steps:
                    break
                multi_task_prompt.check_task_tokens(local["encoder_input_tokens"], multi_task)
                batch = sharding.global_batch(local, mesh)
                tokens, scores = predict(trainable, frozen, batch, jax.random.PRNGKey(seed))
                # Whole global rows on every process (each host read only its shard), so the
                # file process 0 writes holds every host's examples.
                tokens = sharding.to_host(tokens, mesh)[:, -1]
                scores = sharding.to_host(scores, mesh)[:, -1]
                inputs = sharding.to_host(batch["encoder_input_tokens"], mesh)
                targets = sharding.to_host(batch["decoder_target_tokens"], mesh)
                for j in np.flatnonzero(data.real_rows({"decoder_target_tokens": targets})):
                    row = {
                        "task": cfg.mixture_or_task_name,
                        "inputs": _strip(inputs[j]),
                        "targets": _strip(targets[j]),
                        "prediction": _strip(tokens[j]),
                        "score": float(scores[j]),
                    }
                    if detokenize is not None:
                        for key in ("inputs", "targets", "prediction"):
                            row[f"{key}_text"] = detokenize(row[key])
                    rows.append(row)
        finally:
            del it  # not by the GC: see trainer.train's loop
    return rows


def _strip(ids) -> list[int]:
    ids = [int(t) for t in ids]
    while ids and ids[-1] == 0:
        ids.pop()
    return ids
