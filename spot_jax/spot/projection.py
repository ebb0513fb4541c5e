"""Cross-model prompt projection (Su et al. §A5): a prompt library of model A -> one of model B.

The projector is Su et al.'s flattened two-layer MLP with a per-token layer norm:

    vec(P_a) [P·H_a] -> Dense(hidden) -> tanh -> Dense(P_b·H_b) -> reshape [P_b, H_b]
                     -> LayerNorm over H_b (each token separately, learned scale and bias)

trained either with the task loss ("TT", Su et al.'s better objective): the frozen target model
B reads the projected prompt on a task whose source prompt of model A is known, and only the
projector learns; or by distance ("DM", their ablation): mean squared error between projected A
prompts and B prompts of the same tasks (paired library entries). TT needs the target model
and data; DM only the two libraries.

A projector is saved as a directory: `projector.npz` (flat params) and `projector.json` (the
two models' records as in `library.json`, hidden size, activation, objective, loss history).
`spot_jax.spot.projected_library` trains projectors between libraries and turns a library of A
into a library of B (`spot-jax library train-projector | project`).
"""

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from spot_jax.spot import library as library_lib
from spot_jax.spot import runs as runs_lib

PARAMS_FILE = "projector.npz"
META_FILE = "projector.json"
ACTIVATIONS = {"tanh": jnp.tanh, "leaky_relu": nn.leaky_relu}


class ProjectionError(ValueError):
    """Bad projection input: mismatched models, missing projector, unpaired libraries."""


class Projector(nn.Module):
    """[N, P_a, H_a] source prompts -> [N, P_b, H_b] target prompts."""

    target_length: int
    target_dim: int
    hidden: int = 768
    activation: str = "tanh"

    @nn.compact
    def __call__(self, prompts: jax.Array) -> jax.Array:
        x = prompts.reshape(prompts.shape[0], -1)
        x = ACTIVATIONS[self.activation](nn.Dense(self.hidden, name="down")(x))
        x = nn.Dense(self.target_length * self.target_dim, name="up")(x)
        x = x.reshape(prompts.shape[0], self.target_length, self.target_dim)
        return nn.LayerNorm(name="norm")(x)


@dataclasses.dataclass(frozen=True)
class ProjectorSpec:
    """Which two models a projector connects, and its size.

    Attributes:
      source: model A's record (`library.json` keys: fingerprint, frozen, model,
        prompt_length, emb_dim).
      target: model B's record.
      hidden: width of the hidden layer (Su et al.: 768).
      activation: 'tanh' (their base->large projector) or 'leaky_relu'.
    """

    source: dict[str, Any]
    target: dict[str, Any]
    hidden: int = 768
    activation: str = "tanh"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ProjectionError(f"activation must be one of {sorted(ACTIVATIONS)}")
        for side in ("source", "target"):
            missing = {"fingerprint", "prompt_length", "emb_dim"} - set(getattr(self, side))
            if missing:
                raise ProjectionError(f"{side} model record lacks {sorted(missing)}")

    @property
    def source_shape(self) -> tuple[int, int]:
        return int(self.source["prompt_length"]), int(self.source["emb_dim"])

    @property
    def target_shape(self) -> tuple[int, int]:
        return int(self.target["prompt_length"]), int(self.target["emb_dim"])

    def module(self) -> Projector:
        return Projector(*self.target_shape, hidden=self.hidden, activation=self.activation)


def model_record(t5_config, prompt_length: int, initial_checkpoint: str | None, seed) -> dict:
    """A model's record as `library.json` writes it (for a model known by its config)."""
    shape = t5_config.shape_dict()
    return {
        "fingerprint": runs_lib.fingerprint(shape, initial_checkpoint, seed),
        "frozen": initial_checkpoint or f"seeded-init:{seed}",
        "model": shape,
        "prompt_length": int(prompt_length),
        "emb_dim": int(t5_config.emb_dim),
    }


def init_params(spec: ProjectorSpec, seed: int = 0):
    dummy = jnp.zeros((1, *spec.source_shape), jnp.float32)
    return spec.module().init(jax.random.PRNGKey(seed), dummy)["params"]


def project(spec: ProjectorSpec, params, prompts: np.ndarray) -> np.ndarray:
    """Projects [P_a, H_a] or [N, P_a, H_a] prompts to float32 [(N,) P_b, H_b]."""
    prompts = np.asarray(prompts, np.float32)
    single = prompts.ndim == 2
    batch = prompts[None] if single else prompts
    if tuple(batch.shape[1:]) != spec.source_shape:
        raise ProjectionError(
            f"prompt shape {list(batch.shape[1:])} is not the projector's source shape "
            f"{list(spec.source_shape)}"
        )
    out = np.asarray(jax.jit(spec.module().apply)({"params": params}, batch), np.float32)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# Training.


def paired_prompts(
    source: library_lib.Library, target: library_lib.Library, use: str = "prompt"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Entries of the two libraries trained on the same task: (tasks, [N, P_a, H_a], [N, P_b, H_b]).

    Raises:
      ProjectionError: no task appears in both libraries.
    """
    by_task = {e.meta.get("task"): e for e in target.entries() if e.meta.get("task")}
    tasks, xs, ys = [], [], []
    for entry in source.entries():
        task = entry.meta.get("task")
        if task in by_task and task not in tasks:
            tasks.append(task)
            pick = (lambda e: e.prompt()) if use == "prompt" else (lambda e: e.embedding())
            xs.append(pick(entry))
            ys.append(pick(by_task[task]))
    if not tasks:
        raise ProjectionError(
            f"libraries {source.root} and {target.root} share no task; distance training needs "
            "prompts of the same tasks on both models"
        )
    return tasks, np.stack(xs), np.stack(ys)


def train_distance(
    spec: ProjectorSpec,
    sources: np.ndarray,
    targets: np.ndarray,
    steps: int = 1000,
    learning_rate: float = 5e-3,
    seed: int = 0,
):
    """DM: minimises mean ||Proj(P_a) - P_b||² over paired prompts [N, P_a, H_a] / [N, P_b, H_b].

    Returns:
      (params, per-step losses).
    """
    module = spec.module()
    params = init_params(spec, seed)
    opt = optax.adamw(learning_rate, eps=1e-6, weight_decay=0.0)
    x, y = jnp.asarray(sources, jnp.float32), jnp.asarray(targets, jnp.float32)
    if tuple(y.shape[1:]) != spec.target_shape:
        raise ProjectionError(
            f"target prompts have shape {list(y.shape[1:])}, not {list(spec.target_shape)}"
        )

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean((module.apply({"params": p}, x) - y) ** 2)
        )(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = opt.init(params), []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return params, losses


def train_task(
    spec: ProjectorSpec,
    sources: Sequence[np.ndarray],
    targets: Sequence[Any],
    steps: int = 1000,
    learning_rate: float = 5e-3,
    seed: int = 0,
    log_period: int = 0,
    model_parallel: int = 1,
):
    """TT: trains the projector with the task loss of the frozen target model.

    Step t uses task t mod len(targets): model B reads Proj(sources[i]) as its prompt on a
    training batch of targets[i]; only the projector's params change.

    Args:
      spec: the projector; `spec.target` must be the targets' frozen model.
      sources: model A's prompt [P_a, H_a] for each target task.
      targets: `spot_jax.spot.transfer_target.Target`s (model B on each task, e.g. from
        `transfer_target.load_target(name, run_dir_or_gin)`); their train splits are read.
      steps: optimizer steps.
      learning_rate: AdamW's rate (Su et al.: 0.005).
      seed: projector init and data shuffle seed.
      log_period: print the mean loss every this many steps (0: never).
      model_parallel: the mesh's model axis for the frozen model (as MODEL_PARALLEL).

    Returns:
      (params, per-step token-mean losses).
    """
    from spot_jax import axes, data
    from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
    from spot_jax.train import initial_params, sharding, state

    if len(sources) != len(targets) or not targets:
        raise ProjectionError("train_task needs one source prompt per target task")
    first = targets[0]
    records = [model_record(t.t5_config, t.prompt_length, t.initial_checkpoint_path, t.seed)
               for t in targets]  # fmt: skip
    for t, record in zip(targets, records, strict=True):
        if record["fingerprint"] != spec.target["fingerprint"]:
            raise ProjectionError(
                f"target {t.name} runs on model {record['fingerprint']}, but the projector "
                f"projects to {spec.target['fingerprint']}; use targets of one frozen model"
            )
    positions = sorted({t.prompt_position for t in targets})
    if len(positions) > 1:
        raise ProjectionError(
            f"the targets put their prompts at different positions ({positions}); train a "
            "projector on targets of one prompt position"
        )
    model = PromptedT5(first.t5_config, first.prompt_length, prompt_position=positions[0])
    mesh, rules = sharding.make_mesh(model_parallel), axes.standard_rules()
    params, _ = initial_params.build_params(
        model,
        mesh,
        rules,
        batch_size=first.eval_data.batch_size,
        feature_lengths=dict(first.eval_data.task_feature_lengths),
        initial_checkpoint_path=first.initial_checkpoint_path,
        seed=first.seed,
    )
    frozen = {k: v for k, v in params.items() if k != PROMPT_PATH}
    module = spec.module()
    proj = init_params(spec, seed)
    opt = optax.adamw(learning_rate, eps=1e-6, weight_decay=0.0)
    xs = [jnp.asarray(np.asarray(s, np.float32)[None]) for s in sources]
    streams = [
        data.make_train_iterator(
            dataclasses.replace(t.eval_data, split="train", shuffle=True, seed=seed)
        )
        for t in targets
    ]

    def loss_fn(proj, source, batch):
        prompt = module.apply({"params": proj}, source)[0]
        loss, metrics = model.loss(state.merge_params({PROMPT_PATH: prompt}, frozen), batch)
        return loss / jnp.maximum(metrics["weight_sum"], 1.0)

    @jax.jit
    def step(proj, opt_state, source, batch):
        loss, grads = jax.value_and_grad(loss_fn)(proj, source, batch)
        updates, opt_state = opt.update(grads, opt_state, proj)
        return optax.apply_updates(proj, updates), opt_state, loss

    opt_state, losses = opt.init(proj), []
    with sharding.active(mesh), nn.logical_axis_rules(list(rules)):
        for i in range(steps):
            k = i % len(targets)
            batch = sharding.global_batch(next(streams[k]), mesh)
            proj, opt_state, loss = step(proj, opt_state, xs[k], batch)
            losses.append(float(loss))
            if log_period and (i + 1) % log_period == 0:
                print(f"projector step {i + 1}: loss {np.mean(losses[-log_period:]):.4f}")
    return jax.device_get(proj), losses


# ---------------------------------------------------------------------------------------------
# Saving and loading.


def save(path: epath.PathLike, spec: ProjectorSpec, params, **info) -> epath.Path:
    """Writes `projector.npz` + `projector.json` (spec and `info`, e.g. objective, losses)."""
    path = epath.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    with (path / PARAMS_FILE).open("wb") as f:
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
    meta = {**dataclasses.asdict(spec), **info, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def load(path: epath.PathLike) -> tuple[ProjectorSpec, Any]:
    """(spec, params) of a saved projector; shapes checked against the spec."""
    path = epath.Path(path)
    for name in (PARAMS_FILE, META_FILE):
        if not (path / name).exists():
            raise ProjectionError(f"{path} is not a saved projector ({name} is missing)")
    meta = json.loads((path / META_FILE).read_text())
    fields = {f.name for f in dataclasses.fields(ProjectorSpec)}
    spec = ProjectorSpec(**{k: v for k, v in meta.items() if k in fields})
    with (path / PARAMS_FILE).open("rb") as f:
        arrays = dict(np.load(f))
    params = flax.traverse_util.unflatten_dict(arrays, sep="/")
    want = jax.tree.map(np.shape, jax.eval_shape(lambda: init_params(spec)))
    have = jax.tree.map(np.shape, params)
    if want != have:
        raise ProjectionError(f"{path}: parameter shapes {have} do not fit its spec ({want})")
    return spec, params
