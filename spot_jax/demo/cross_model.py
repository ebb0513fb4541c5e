"""Cross-model projection in the task world (Su et al., §A5): prompts of the demo's backbone
projected to a larger world backbone, against prompts trained there.

large model  the demo backbone's config scaled in width (`scale`; 64 -> 96 by default), same
             vocabulary, same pretraining recipe, cached by its own key; its source prompts
             (and mixture) go to its own library, trained exactly as the small model's
small model  a prompt for each held-out target (full data, the sources' schedule) into a
             small-model library of targets
projector    Su et al.'s flattened MLP, trained by distance (DM, `projection.train_distance`)
             on the prompts of the tasks both libraries know (the sources and the mixture;
             never a target), or by the large model's task loss on the sources (TT,
             `train_task_projector`), saved as a projector; `project_library` turns the small target
             library into a large-model library (entries' meta: `projected_from`, `projector`)
compare      on the large model, per target: (a) the projected prompt zero-shot, few-shot
             (`few_shot`, seeds 0-4) from (b) the projected prompt vs (c) a sampled-vocab
             init, and (d) a prompt trained there on the full train split (the demo's seeds)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath
from tqdm import tqdm

from spot_jax.demo import backbone as backbone_lib
from spot_jax.demo import few_shot, runs
from spot_jax.demo.experiment import Protocol, write_run
from spot_jax.spot import library as library_lib
from spot_jax.spot import projected_library, projection

METHODS = ("projected zero-shot", "projected init", "sampled-vocab init", "trained there (full)")


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
    """Sizes of the projection experiment.

    Attributes:
        scale: the large model's emb, head and MLP widths over the demo backbone's.
        objective: 'distance' (DM: MSE to the large model's prompts of the same tasks) or
            'task' (TT: the large model's loss on the source tasks, reading the projection).
        hidden, projector_steps, learning_rate: the projector (Su et al.: 768, AdamW 5e-3).
        task_batch_size: TT's examples per source task and step.
        seeds: few-shot seeds on the large model.
    """

    scale: float = 1.5
    objective: str = "distance"
    hidden: int = 256
    projector_steps: int = 2000
    learning_rate: float = 5e-3
    task_batch_size: int = 8
    seeds: tuple[int, ...] = few_shot.SEEDS

    def __post_init__(self):
        if self.objective not in ("distance", "task"):
            raise ValueError(f"objective is 'distance' or 'task', not {self.objective!r}")

    @classmethod
    def quick(cls, objective: str = "distance") -> ProjectionConfig:
        return cls(objective=objective, projector_steps=1000 if objective == "distance" else 150)

    @classmethod
    def full(cls, objective: str = "distance") -> ProjectionConfig:
        return cls(objective=objective, projector_steps=2000 if objective == "distance" else 400)


def large_backbone_config(small: backbone_lib.BackboneConfig, scale: float):
    """The small backbone's config with emb, head and MLP widths times `scale`."""
    widths = {k: int(round(getattr(small, k) * scale)) for k in ("emb_dim", "head_dim", "mlp_dim")}
    return dataclasses.replace(small, **widths)


def train_task_projector(spec, sources: np.ndarray, tasks, large: Protocol, cfg):
    """TT (Su et al.'s better objective): each step the frozen large model reads the projection
    of every source prompt on a batch of its task; only the projector learns.

    Args:
        spec: the projector's spec (small model -> large model).
        sources: the small model's prompts [K, P, H_small] of `tasks`.
        tasks: K source task names (the large protocol has their arrays).
        large: the large model's protocol (model, frozen params, task arrays).
        cfg: steps, learning rate, batch size per task.

    Returns:
        (params, per-step mean token losses).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from spot_jax.models.prompted import PROMPT_PATH
    from spot_jax.train import state as state_lib

    module, model, frozen = spec.module(), large.prompted, large.prompt_tuner.frozen
    steps, size = cfg.projector_steps, cfg.task_batch_size
    batches = runs.stack([large.arrays[t].batches(steps, size, 0) for t in tasks])  # [K, S, B, L]
    x = jnp.asarray(sources, jnp.float32)

    def loss_fn(params, batch):
        def one(prompt, b):
            loss, m = model.loss(state_lib.merge_params({PROMPT_PATH: prompt}, frozen), b)
            return loss / jnp.maximum(m["weight_sum"], 1.0)

        return jnp.mean(jax.vmap(one)(module.apply({"params": params}, x), batch))

    opt = optax.adamw(cfg.learning_rate, eps=1e-6, weight_decay=0.0)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = projection.init_params(spec)
    opt_state, losses = opt.init(params), []
    for i in range(steps):
        batch = {k: v[:, i] for k, v in batches.items()}
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    return params, losses


def results_key(cfg: ProjectionConfig) -> str:
    """Where a run of `cfg` goes: its output folder and its key in the demo's results."""
    return "projection" if cfg.objective == "distance" else "projection_task"


def run_projection(protocol: Protocol, cfg: ProjectionConfig, progress: bool = True) -> dict:
    """Everything above; JSON-able results (paths, losses, accuracies per seed)."""
    dcfg, world = protocol.cfg, protocol.world
    targets, sources = world.names("target"), world.names("source")
    root = protocol.out / results_key(cfg)
    # The demo backbone sits at <cache>/world/backbone-<key>/checkpoint; the large one beside.
    cache_dir = protocol.backbone.path.parent.parent.parent
    large_cfg = large_backbone_config(dcfg.backbone, cfg.scale)
    big = backbone_lib.load_or_pretrain_backbone(large_cfg, cache_dir, progress)
    large = Protocol(big, world, dataclasses.replace(dcfg, backbone=large_cfg), root / "large")
    n_few = 2 * len(targets) * len(cfg.seeds) * dcfg.target_steps
    n_prompts = (len(sources) + len(targets)) * dcfg.source_steps + dcfg.mixture_steps
    total = n_prompts + n_few + len(targets) * len(dcfg.seeds) * dcfg.target_steps
    with tqdm(total=total, desc="projection runs", unit="step", disable=not progress) as bar:
        large_acc, _ = large.train_sources(bar)
        # Small-model target prompts, trained like its sources (same init, steps, selection).
        shared = protocol.init_prompts([0])[0]
        data = [protocol.arrays[t] for t in targets]
        small = protocol._prompt_runs(
            [shared] * len(targets), data, dcfg.source_steps, [0] * len(targets), bar
        )
        small_lib = library_lib.Library(root / "small_targets_library")
        projected_lib = library_lib.Library(root / "projected_library")
        for lib in (small_lib, projected_lib):
            if lib.root.exists():  # this demo's own output from an earlier run
                lib.root.rmtree()
        for r, t in enumerate(targets):
            run_dir = root / "small_runs" / t
            write_run(run_dir, t, protocol.backbone, dcfg, small, r)
            small_lib.add(run_dir, t, "best", dcfg.embedding_steps, "eval/accuracy")
        spec = projection.ProjectorSpec(
            protocol.library.model(), large.library.model(), cfg.hidden, "tanh"
        )
        tasks, xs, ys = projection.paired_prompts(protocol.library, large.library)
        if cfg.objective == "distance":
            params, losses = projection.train_distance(
                spec, xs, ys, cfg.projector_steps, cfg.learning_rate
            )
        else:  # the task loss needs task data: the sources (the mixture is their union)
            keep = [i for i, t in enumerate(tasks) if t in sources]
            tasks, xs = [tasks[i] for i in keep], xs[keep]
            params, losses = train_task_projector(spec, xs, tasks, large, cfg)
        every = max(1, len(losses) // 50)
        projector = projection.save(
            root / "projector", spec, params, objective=cfg.objective, tasks=tasks,
            losses=losses[::every],
        )  # fmt: skip
        projected_library.project_library(
            small_lib, projected_lib, projector, to_model=str(large.out / "runs" / sources[0])
        )
        projected = [projected_lib.get(t).prompt() for t in targets]
        seeds, n = list(cfg.seeds), len(cfg.seeds)
        inits = [p for t in range(len(targets)) for p in [projected[t]] * n]
        inits += list(large.init_prompts([100 + s for s in seeds])) * len(targets)
        few = few_shot.run(
            large.prompt_tuner,
            np.stack(inits),
            [large.arrays[t] for t in targets for _ in seeds] * 2,
            seeds * len(targets) * 2,
            dcfg.target_steps,
            dcfg.batch_size,
            dcfg.eval_every,
            progress=bar,
        )
        full_seeds = list(dcfg.seeds)
        full = large._prompt_runs(
            large.init_prompts([100 + s for s in full_seeds]).tolist() * len(targets),
            [large.arrays[t] for t in targets for _ in full_seeds],
            dcfg.target_steps,
            full_seeds * len(targets),
            bar,
        )
    half, m = len(targets) * n, len(full_seeds)
    per_target = {}
    for i, t in enumerate(targets):
        rows, full_rows = slice(i * n, (i + 1) * n), slice(i * m, (i + 1) * m)
        per_target[t] = {
            METHODS[0]: [float(few.zero_shot[rows][0])],
            METHODS[1]: few.selected[rows].tolist(),
            METHODS[2]: few.selected[half:][rows].tolist(),
            METHODS[3]: full.accuracy[full_rows, -1].tolist(),
            "small model's own prompt": [float(small.accuracy[i].max())],
        }
    return {
        "seeds": seeds,
        "full_seeds": full_seeds,
        "large_backbone": {
            "path": str(big.path),
            "t5": big.config.shape_dict(),
            "pretrained_now": big.pretrained_now,
        },  # fmt: skip
        "large_source_accuracy": large_acc,
        "projector": str(projector),
        "projector_tasks": tasks,
        "projector_loss": [losses[0], losses[-1]],
        "projected_library": str(projected_lib.root),
        "per_target": per_target,
    }


def sections(res: dict, cfg: ProjectionConfig, dcfg) -> list[tuple[str, str]]:
    """The report's projection section."""
    seeds = ", ".join(map(str, res["seeds"]))
    methods = ("small model's own prompt", *METHODS)
    table = few_shot.seed_table(res["per_target"], methods)
    gain = np.mean(
        [np.subtract(r[METHODS[1]], r[METHODS[2]]) for r in res["per_target"].values()], axis=0
    )
    src = np.mean(list(res["large_source_accuracy"].values()))
    objective = {
        "distance": "by distance (DM: MSE to the large model's prompts; sources and mixture)",
        "task": f"by task loss (TT: the large model reads the projections; batch "
        f"{cfg.task_batch_size} of each source task a step)",
    }[cfg.objective]
    note = {
        "distance": "Su et al. found distance-trained projectors reach small distances but "
        "near-chance task performance.",
        "task": "Su et al. found task-loss projectors transfer zero-shot to tasks of the "
        "same type, not across types.",
    }[cfg.objective]
    big = res["large_backbone"]
    body = f"""
Large model: T5 1.1 shape {big["t5"]} (the demo backbone's widths x {cfg.scale}, same
vocabulary and pretraining; `{big["path"]}`). Its source prompts (mean validation exact match
{src:.1f}%) and mixture prompt: `{epath.Path(res["projected_library"]).parent / "large"}`.
Projector: Su et al.'s flattened MLP (hidden {cfg.hidden}, tanh, per-token LayerNorm) trained
{objective} on {len(res["projector_tasks"])} tasks both libraries hold (no target),
{cfg.projector_steps} steps, loss {res["projector_loss"][0]:.3f} ->
{res["projector_loss"][1]:.4f}. The small model's target prompts (full data,
{dcfg.source_steps} steps; their best validation accuracy in the first column) were projected
into the large model's library `{res["projected_library"]}` by `project_library`.

On the large model: (a) the projected prompt zero-shot; few-shot ({few_shot.SHOTS} train +
{few_shot.SHOTS} dev per seed, {dcfg.target_steps} steps, accuracy at the best dev step, seeds
{seeds}) from (b) the projected prompt and (c) a sampled-vocab init; (d) a prompt trained there
on the full train split, last step, seeds {", ".join(map(str, res["full_seeds"]))}. Validation
exact match (%), mean ± std (each seed's value in brackets).

{table}

Projected init vs sampled-vocab init (few-shot), averaged over targets: {gain.mean():+.1f}
points (per seed: {", ".join(f"{g:+.1f}" for g in gain)}). {note}
"""
    kind = {"distance": "distance", "task": "task-loss"}[cfg.objective]
    return [(f"Projection: small -> large world model, {kind} projector (seeds {seeds})", body)]


def experiment(
    quick: bool = False,
    cfg: ProjectionConfig | None = None,
    progress: bool = True,
    objective: str = "distance",
):
    """The demo hook (`command.EXPERIMENTS`): `fn(protocol, results) -> sections`."""
    sizes = ProjectionConfig.quick if quick else ProjectionConfig.full
    cfg = cfg or sizes(objective)

    def projection_experiment(protocol: Protocol, results: dict) -> list[tuple[str, str]]:
        res = run_projection(protocol, cfg, progress)
        results[results_key(cfg)] = res
        return sections(res, cfg, protocol.cfg)

    return projection_experiment
