"""The training loop: mesh -> data -> model and optimizer -> shard and init -> restore -> loop.

Every argument is keyword-only and bound by gin from the run files (`gin/runs/*.gin`); this
module itself is gin-free.
"""

import functools
import json
import time
from typing import Any

import flax.linen as nn
import jax
import optax
from absl import logging
from etils import epath

from spot_jax import axes, data
from spot_jax.data.config import DatasetConfig
from spot_jax.models import multi_task_prompt
from spot_jax.models.prompted import PromptedT5
from spot_jax.train import (
    checkpoints,
    evaluation,
    frozen_checkpoint,
    initial_params,
    optimizer_states,
    sharding,
    steps,
    summaries,
)
from spot_jax.train import optim as optim_lib
from spot_jax.train import state as state_lib


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); what was saved is intact."""


def train(
    *,
    model: PromptedT5,
    train_data: DatasetConfig,
    model_dir: str,
    train_steps: int,
    optimizer: optax.GradientTransformation | None = None,
    eval_data: DatasetConfig | None = None,
    trainable: str = optim_lib.PROMPT_REGEX,
    initial_checkpoint_path: str | None = None,
    model_parallel: int = 1,
    checkpoint_period: int = 1000,
    keep_checkpoints: int = 1,
    best_metric: str | None = None,
    best_mode: str = "max",
    eval_period: int = 1000,
    eval_steps: int | None = None,
    rank_classification: bool = False,
    log_period: int = 100,
    pretrained_step: int | None = None,
    restore_optimizer_state: bool | str = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the params matching `trainable` and returns the last eval (or train) metrics.

    Args:
      model: the prompted T5.
      train_data: training split config (global batch size).
      model_dir: MODEL_DIR; resumed from when it holds a checkpoint.
      train_steps: TRAIN_STEPS, counted from 0 (unlike T5X, pretraining steps not included).
      optimizer: default T5X Adafactor with prompt-tuning's settings.
      eval_data: validation config; None skips evaluation.
      trainable: TRAINABLE regex over 'a/b/c' param paths (fullmatch); '.*' is model tuning.
      initial_checkpoint_path: frozen weights (spot_jax frozen checkpoint or a T5X checkpoint);
        None = seeded init.
      model_parallel: size of the mesh's 'model' axis; data parallelism fills the rest.
      checkpoint_period: save every this many steps (and at the end; 0 or None: at the end).
      keep_checkpoints: Orbax checkpoints kept (numpy prompts are all kept).
      best_metric: eval metric whose best checkpoint is also kept, e.g. 'eval/loss'.
      best_mode: 'max' or 'min' for best_metric.
      eval_period: evaluate every this many steps (and at the end; 0 or None: at the end).
      eval_steps: max eval batches; None = the whole split.
      rank_classification: also score classification tasks by their likeliest label.
      log_period: log a line every this many steps (0 or None: at saves and evals only).
      pretrained_step: the frozen weights' global step, where Adafactor's decay count starts
        (T5X); None: the checkpoint's recorded step (`frozen_checkpoint.pretrained_step`).
      restore_optimizer_state: a fresh run also restores the trainable params' Adafactor
        states from a T5X INITIAL_CHECKPOINT_PATH (`state/param_states`), as T5X fine-tuning
        does; True or 't5x' reads them as T5X does, 'mesh_tf' as Mesh TF wrote them (see
        `optimizer_states`). Where the checkpoint has none, a note says so. Model tuning.
      seed: SEED for init, prompt init and dropout.
      progress: show a progress bar.
    """
    optimizer = optimizer or optim_lib.adafactor()
    state_layout = optimizer_states.layout_of(restore_optimizer_state)
    eval_data = data.with_lengths(eval_data) if eval_data is not None else None
    model_dir = epath.Path(model_dir)
    lengths = dict(train_data.task_feature_lengths)

    # -- Mesh ---------------------------------------------------------------------------------
    mesh = sharding.make_mesh(model_parallel)
    rules = axes.standard_rules()
    sharding.check_batch_size(train_data.batch_size, mesh)
    _check_packing(model, train_data)
    shard_index, num_shards = sharding.data_shard_info(mesh)
    checkpoints.check_model_dir(
        model_dir, model.config, model.prompt_length, **checkpoints.placement(model)
    )

    # -- Model and optimizer: frozen weights into their shardings, prompt initialised ---------
    params, param_shardings = initial_params.build_params(
        model,
        mesh,
        rules,
        batch_size=train_data.batch_size,
        feature_lengths=lengths,
        initial_checkpoint_path=initial_checkpoint_path,
        seed=seed,
    )
    trainable_params, frozen = optim_lib.split_trainable(params, trainable)
    frozen_shardings = {k: param_shardings[k] for k in frozen}
    global_step = (
        frozen_checkpoint.pretrained_step(initial_checkpoint_path)
        if pretrained_step is None
        else int(pretrained_step)
    )
    if global_step:
        logging.info("Adafactor decay counts on from the checkpoint's step %d (T5X)", global_step)
    if global_step and train_steps > global_step:
        # A T5X / prompt-tuning command line counts TRAIN_STEPS from the checkpoint's step.
        print(
            f"Note: TRAIN_STEPS={train_steps} counts from 0 here, not from the checkpoint's "
            f"step {global_step} as in T5X: this run trains {train_steps} steps (for T5X's "
            f"meaning pass TRAIN_STEPS={train_steps - global_step}).",
            flush=True,
        )
    create = functools.partial(state_lib.create, optimizer=optimizer, global_step=global_step)
    with sharding.active(mesh):
        state = jax.jit(create)(trainable_params)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    logging.info(
        "training %d params in %d arrays; %d frozen arrays",
        sum(v.size for v in trainable_params.values()),
        len(trainable_params),
        len(frozen),
    )

    # -- Restore ------------------------------------------------------------------------------
    ckpt = checkpoints.TrainCheckpointer(model_dir, keep_checkpoints, best_metric, best_mode)
    data_position = 0
    latest = ckpt.latest_step()
    if latest is not None:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        state, meta = ckpt.restore(latest, abstract)
        data_position = int(meta["data_position"])
        logging.info("resumed %s at step %d", model_dir, latest)
        print(f"Resuming from {ckpt.directory / str(latest)} (step {latest}).", flush=True)
    elif state_layout:
        # As T5X fine-tuning: the pretraining optimizer state goes on with the weights.
        state = optimizer_states.restore_for_run(
            initial_checkpoint_path, state, model, lengths, state_layout
        )
    start_step = int(jax.device_get(state.step))

    # -- Steps --------------------------------------------------------------------------------
    batch_shard = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    # Donating the state lets XLA update the prompt and optimizer state in place.
    train_step = jax.jit(
        functools.partial(steps.train_step, model, optimizer),
        in_shardings=(state_shardings, frozen_shardings, batch_shard, repl),
        out_shardings=(state_shardings, repl),
        donate_argnums=(0,),
    )
    dropout_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)

    # Built once: its jitted steps compile at the first eval, its scorers read their
    # examples once, and both are reused by every later eval.
    evaluator = (
        evaluation.Evaluator(
            model,
            eval_data,
            mesh,
            rules,
            max_batches=eval_steps,
            rank_classification=rank_classification,
            progress=progress,
        )
        if eval_data is not None
        else None
    )

    def run_eval(step: int) -> dict[str, float]:
        if evaluator is None:
            return {}
        metrics = evaluator(state.trainable, frozen)
        if best_metric and best_metric not in metrics:
            # Checked before the save that would rank by it; earlier checkpoints stay.
            raise ValueError(
                f"best_metric {best_metric!r} is not among this eval's metrics; set "
                f"trainer.train.best_metric to one of: {', '.join(sorted(metrics))}"
            )
        return metrics

    def save(step: int, metrics: dict[str, float] | None = None):
        ckpt.save(step, state, {"step": step, "data_position": data_position}, metrics)
        prompts = checkpoints.numpy_prompts(state.trainable)
        checkpoints.save_numpy_params(model_dir, step, prompts, names=tuple(prompts))

    # -- Loop ---------------------------------------------------------------------------------
    batches = data.make_train_iterator(
        train_data, shard_index=shard_index, num_shards=num_shards, start_step=data_position
    )
    metrics_file = model_dir / "metrics.jsonl"
    tensorboard = summaries.Summaries(model_dir)
    pending: list[dict[str, jax.Array]] = []
    last: dict[str, Any] = {}
    tokens_per_step = train_data.batch_size * (
        lengths["inputs"] + model.prompt_length + lengths["targets"]
    )
    bar = _progress(progress, start_step, train_steps)
    t0, steps_since = time.perf_counter(), 0
    # Several processes on CPU devices: one step in flight at a time. With steps queued
    # asynchronously, a 2-process CPU run on a busy 2-core machine deadlocked in its gloo
    # collectives (2 of 3 resumed runs with two busy loops beside it, both processes waiting on
    # the metrics of in-flight steps); waiting for each step, 0 of 16 runs did. Our guess at the
    # mechanism: XLA:CPU runs queued programs' per-device parts on a shared thread pool, so two
    # steps' collectives can interleave differently in the two processes. GPUs and TPUs order
    # programs per device stream, and multi-host CPU runs are for tests: no cost that matters.
    one_in_flight = jax.process_count() > 1 and jax.default_backend() == "cpu"
    # Close the bar (its line ends) and the checkpointer on every exit, so an error is
    # reported on a line of its own.
    try:
        with sharding.active(mesh), nn.logical_axis_rules(list(rules)):
            if start_step == 0 and latest is None:
                save(0)
            for step in range(start_step + 1, train_steps + 1):
                local = next(batches)
                multi_task_prompt.check_task_tokens(local["encoder_input_tokens"], model.multi_task)
                batch = sharding.global_batch(local, mesh)
                state, metrics = train_step(state, frozen, batch, dropout_rng)
                if one_in_flight:
                    jax.block_until_ready(metrics)
                data_position += 1
                pending.append(metrics)
                steps_since += 1
                is_save = _every(step, checkpoint_period) or step == train_steps
                is_eval = eval_data is not None and (
                    _every(step, eval_period) or step == train_steps
                )
                if _every(step, log_period) or is_save or is_eval:
                    summed = jax.device_get(jax.tree.map(lambda *x: sum(x), *pending))
                    pending = []
                    if summed["nonfinite"]:
                        raise TrainingError(
                            f"non-finite loss, gradient or update before step {step}; stopped "
                            f"without saving. The last good checkpoint ({ckpt.latest_step()}) is "
                            f"kept in {model_dir}. Lower LEARNING_RATE or check the data"
                        )
                    elapsed = time.perf_counter() - t0
                    last = _train_log(summed, steps_since, elapsed, tokens_per_step)
                    last["step"] = step
                    # The rate of this step's update (optax counts updates from 0).
                    lr = optim_lib.learning_rate_at(optimizer, step - 1)
                    if lr is not None:
                        last["train/learning_rate"] = lr
                    eval_metrics = run_eval(step) if is_eval else {}
                    last.update(eval_metrics)
                    _append_jsonl(metrics_file, last)
                    tensorboard.write(step, last)
                    bar.set_postfix(loss=f"{last['train/loss']:.4f}", refresh=False)
                    logging.info("step %d %s", step, last)
                    if not progress:
                        print(_format_log(last), flush=True)
                    if is_save:
                        save(step, eval_metrics or None)
                    # Eval and save time stays out of the next window's steps/s.
                    t0, steps_since = time.perf_counter(), 0
                bar.update(1)
    finally:
        bar.close()
        ckpt.close()
        # Freed here rather than by the garbage collector: an error leaves this frame in a
        # reference cycle with its traceback, and a tf.data iterator (SeqIO's prefetching
        # batches) destroyed inside a GC pass deadlocked the exiting process.
        del batches
    return last


def _every(step: int, period: int | None) -> bool:
    """Whether `step` ends a period; a period of 0 or None never does (end of run only)."""
    return bool(period) and step % period == 0


def _check_packing(model: PromptedT5, train_data: DatasetConfig) -> None:
    """A packed prompt-tuning stream needs a cap on examples per row that the model's prompt
    slots cover; otherwise examples past the slots would silently train without a prompt."""
    if not (train_data.pack and model.prompt_length):
        return
    if not train_data.max_segments or model.max_segments < train_data.max_segments:
        raise ValueError(
            f"packed prompt tuning needs DatasetConfig.max_segments (now "
            f"{train_data.max_segments}) >= 1 and PromptedT5.max_segments (now "
            f"{model.max_segments}) at least as large; in gin set MAX_SEGMENTS (runs/"
            "prompt_tune.gin sets both)"
        )


def _train_log(summed, num_steps: int, elapsed: float, tokens_per_step: int) -> dict[str, Any]:
    weights = max(float(summed["weight_sum"]), 1.0)
    return {
        "train/loss": float(summed["loss"]) / weights,
        "train/z_loss": float(summed["z_loss"]) / weights,
        "train/token_accuracy": float(summed["correct_tokens"]) / weights,
        "train/grad_norm": float(summed["grad_norm"]) / num_steps,
        "train/param_rms": float(summed["param_rms"]) / num_steps,
        "train/steps_per_s": num_steps / max(elapsed, 1e-9),
        "train/tokens_per_s": num_steps * tokens_per_step / max(elapsed, 1e-9),
    }


def _format_log(m: dict[str, Any]) -> str:
    parts = [f"step {m['step']}"] + [
        f"{k.split('/', 1)[-1] if k.startswith('train/') else k} {v:.4g}"
        for k, v in m.items()
        if k != "step"
    ]
    return " | ".join(parts)


def _append_jsonl(path: epath.Path, record: dict[str, Any]) -> None:
    if jax.process_index() != 0:
        return
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _progress(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=start,
        disable=not enabled,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
