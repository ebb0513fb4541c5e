"""The spot_jax side of `tools/benchmark.py`: train step, greedy decode, scoring, packing.

Each `*_runner` compiles its program, warms up, and returns a function that runs the measured
work once and returns its seconds, so the caller can interleave runs (A/B on a busy machine).
"""

import functools
import gzip
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import axes
from spot_jax.data import packing
from spot_jax.models import config as config_lib
from spot_jax.models import prompted
from spot_jax.train import initial_params, optim, ranking, sharding, steps
from spot_jax.train import state as state_lib


class Setup:
    """Model, mesh and sharded params for the benchmark's shapes."""

    def __init__(self, args, max_segments: int = 0, decoding=None, config_overrides=None):
        overrides = dict(
            remat_policy=args.remat,
            scan_layers=args.scan,
            dtype=args.dtype,
            attention_impl=args.attention,
        )
        if args.frozen_dtype:
            overrides["frozen_dtype"] = args.frozen_dtype
        for item in getattr(args, "set", ()):  # --set FIELD=VALUE, then a baseline's own
            key, _, value = item.partition("=")
            overrides[key] = config_lib.field_value(key, value)
        overrides.update(config_overrides or {})
        self.cfg = config_lib.named_config(args.size, **overrides)
        self.args, self.config_overrides = args, config_overrides
        self.model = prompted.PromptedT5(
            self.cfg,
            prompt_length=args.prompt_length,
            z_loss=1e-4,
            max_segments=max_segments,
            loss_chunk=getattr(args, "loss_chunk", 0),
            **({"decoding": decoding} if decoding else {}),
        )
        self.mesh = sharding.make_mesh(args.model_parallel)
        self.rules = list(axes.standard_rules())
        self.lengths = {"inputs": args.inputs, "targets": args.targets}
        params, self.shardings = initial_params.build_params(
            self.model,
            self.mesh,
            self.rules,
            batch_size=args.batch,
            feature_lengths=self.lengths,
            initial_checkpoint_path=None,
            seed=0,
            init_as_scanned=True,  # random weights either way; an unscanned draw compiles slowly
        )
        self.trainable, self.frozen = optim.split_trainable(params, args.trainable)

    def context(self):
        return _Context(self.mesh, self.rules)

    def global_batch(self, local: Mapping[str, np.ndarray]):
        with self.context():
            return sharding.global_batch(local, self.mesh)


class _Context:
    def __init__(self, mesh, rules):
        self.mesh, self.rules = mesh, rules
        self._rules_cm = None

    def __enter__(self):
        self.mesh.__enter__()
        self._rules_cm = nn.logical_axis_rules(self.rules)
        self._rules_cm.__enter__()

    def __exit__(self, *exc):
        self._rules_cm.__exit__(*exc)
        return self.mesh.__exit__(*exc)


def _timed(setup: Setup, work: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        with setup.context():
            t0 = time.perf_counter()
            jax.block_until_ready(work())
            return time.perf_counter() - t0

    return timed


def _compiled_train_step(setup: Setup, batch):
    """The jitted train step (donated state), compiled for `batch`; returns (fn, state, info)."""
    optimizer = optim.adafactor()
    # A copy: the step donates its state, and the setup's prompt may serve another program.
    state = state_lib.create(jax.tree.map(jnp.copy, setup.trainable), optimizer)
    mesh = setup.mesh
    # Params keep their named shardings; fresh scalars (the step counter) are replicated.
    state_sh = jax.tree.map(
        lambda x: (
            x.sharding
            if isinstance(x.sharding, jax.sharding.NamedSharding)
            else sharding.replicated(mesh)
        ),
        state,
    )
    state = jax.device_put(state, state_sh)
    frozen_sh = {k: setup.shardings[k] for k in setup.frozen}
    step_fn = jax.jit(
        functools.partial(steps.train_step, setup.model, optimizer),
        in_shardings=(
            state_sh,
            frozen_sh,
            sharding.batch_sharding(mesh),
            sharding.replicated(mesh),
        ),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    rng = jax.random.PRNGKey(0)
    with setup.context():
        compiled = step_fn.lower(state, setup.frozen, batch, rng).compile()
        info = {"step_memory_gb": step_memory_gb(compiled)}
        _write_hlo(setup, compiled)
        t0 = time.perf_counter()
        state, metrics = step_fn(state, setup.frozen, batch, rng)
        jax.block_until_ready(metrics)
        info["compile_s"] = time.perf_counter() - t0
    box = {"state": state, "metrics": metrics}

    def run(batch=batch):
        box["state"], box["metrics"] = step_fn(box["state"], setup.frozen, batch, rng)
        return box["metrics"]

    return run, box, info


def _write_hlo(setup: "Setup", compiled) -> None:
    """With `--profile DIR`, the main run's optimised step HLO to DIR/train_step.hlo.txt.gz: the
    trace names kernels by fused computation (`loop_multiply_fusion.12`), and this text says
    which ops each one holds, so a GPU profile can be read offline, on a CPU."""
    if not getattr(setup.args, "profile", None) or setup.config_overrides:
        return
    path = Path(setup.args.profile, "train_step.hlo.txt.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(compiled.as_text())


def train_runner(
    args, local: Mapping[str, np.ndarray], config_overrides=None
) -> tuple[Callable[[], float], dict]:
    """`args.steps` train steps per call on one synthetic batch."""
    setup = Setup(args, config_overrides=config_overrides)
    batch = setup.global_batch(local)
    run, box, info = _compiled_train_step(setup, batch)
    with setup.context():
        for _ in range(args.warmup):
            run()
        jax.block_until_ready(box["metrics"])

    def finish(info=info):
        m = box["metrics"]
        info["loss_per_token"] = float(m["loss"]) / max(float(m["weight_sum"]), 1)
        return info

    return _timed(setup, lambda: [run() for _ in range(args.steps)][-1]), finish


def decode_runner(
    args, local: Mapping[str, np.ndarray], config_overrides=None
) -> tuple[Callable[[], float], dict]:
    """Greedy decoding of exactly `args.targets` tokens per row (KV cache), once per call."""
    # No id is ever argmax -1, so no row stops early: the same work as HF's min_new_tokens.
    decoding = prompted.DecodingConfig(method="greedy", eos_id=-1)
    setup = Setup(args, decoding=decoding, config_overrides=config_overrides)
    batch = setup.global_batch(local)
    fn = jax.jit(
        lambda t, f, b: steps.predict_step(
            setup.model, t, f, b, jax.random.PRNGKey(0), args.targets
        )
    )
    with setup.context():
        t0 = time.perf_counter()
        tokens, _ = jax.block_until_ready(fn(setup.trainable, setup.frozen, batch))
        info = {"compile_s": time.perf_counter() - t0}
        if tokens.shape[-1] != args.targets:
            raise RuntimeError(f"decoded {tokens.shape[-1]} tokens, not {args.targets}")
        for _ in range(args.warmup):
            jax.block_until_ready(fn(setup.trainable, setup.frozen, batch))
    return _timed(setup, lambda: fn(setup.trainable, setup.frozen, batch)), lambda: info


def score_runner(
    args, local: Mapping[str, np.ndarray], config_overrides=None
) -> tuple[Callable[[], float], dict]:
    """Per-row log-likelihood of the targets (rank classification), once per call."""
    setup = Setup(args, config_overrides=config_overrides)
    batch = setup.global_batch(local)
    fn = jax.jit(lambda t, f, b: steps.score_step(setup.model, t, f, b))
    return _compiled_call(setup, fn, batch, args.warmup)


def rank_runner(
    args, local: Mapping[str, np.ndarray], candidates: np.ndarray, config_overrides=None
) -> tuple[Callable[[], float], dict]:
    """Rank classification of `args.batch` examples over the `[C, L]` candidates, once per call:
    one encoder pass per example (`PromptedT5.score_candidates`)."""
    setup = Setup(args, config_overrides=config_overrides)
    batch = setup.global_batch(local)
    fn = jax.jit(functools.partial(steps.candidate_score_step, setup.model, candidates=candidates))
    return _compiled_call(setup, fn, batch, args.warmup)


def pairs_runner(
    args, local: Mapping[str, np.ndarray], candidates: np.ndarray, config_overrides=None
) -> tuple[Callable[[], float], dict]:
    """The same ranking as T5X lays it out: `score` on b*C (example, candidate) rows."""
    setup = Setup(args, config_overrides=config_overrides)
    batch = setup.global_batch(ranking.candidate_batch(local, candidates))
    fn = jax.jit(lambda t, f, b: steps.score_step(setup.model, t, f, b))
    return _compiled_call(setup, fn, batch, args.warmup)


def _compiled_call(setup: Setup, fn, batch, warmup: int) -> tuple[Callable[[], float], dict]:
    """Compiles `fn(trainable, frozen, batch)` (timed), runs `warmup` more calls, and returns the
    timed call and its info."""
    with setup.context():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(setup.trainable, setup.frozen, batch))
        info = {"compile_s": time.perf_counter() - t0}
        for _ in range(warmup):
            jax.block_until_ready(fn(setup.trainable, setup.frozen, batch))
    return _timed(setup, lambda: fn(setup.trainable, setup.frozen, batch)), lambda: info


def glue_like_examples(n: int, feature_lengths, vocab_size: int, seed: int = 0):
    """`n` examples with GLUE-like lengths: inputs lognormal, median 40, sigma 0.7 (mean ~51),
    clipped to [4, feature_lengths['inputs']]; targets 2-4 tokens (a label word + EOS)."""
    rng = np.random.default_rng(seed)
    cap = int(feature_lengths["inputs"])
    in_lens = np.clip(np.round(rng.lognormal(np.log(40.0), 0.7, n)), 4, cap).astype(int)
    out_lens = rng.integers(2, 5, n)
    out_lens = np.minimum(out_lens, int(feature_lengths["targets"]))
    return [
        (
            np.append(rng.integers(3, vocab_size, a - 1), 1).astype(np.int32),
            np.append(rng.integers(3, vocab_size, b - 1), 1).astype(np.int32),
        )
        for a, b in zip(in_lens, out_lens, strict=True)
    ]


def packing_runners(args) -> tuple[dict[str, Callable[[], float]], dict]:
    """Padded vs packed train steps (or scoring: `args.packed_work`) over the same
    `args.examples` GLUE-like examples.

    Padded: one example per row of `args.inputs` + `args.targets` tokens. Packed: first-fit into
    rows of `args.packed_inputs` (default `args.inputs`) + `max_segments * args.targets` tokens
    (room for every segment's target; the decoder is cheap), at most `args.max_segments`
    examples (and prompt copies: the encoder row is max_segments * P + packed_inputs long) per
    row. Both run `args.batch` rows per step; each call processes every batch of its layout once.
    """
    cfg = config_lib.named_config(args.size)
    lengths = {"inputs": args.inputs, "targets": args.targets}
    packed_lengths = {
        "inputs": args.packed_inputs or args.inputs,
        "targets": args.targets * args.max_segments,
    }
    examples = glue_like_examples(args.examples, lengths, cfg.vocab_size)
    padded = packing.padded(examples, lengths)
    packed, placement = packing.pack(examples, packed_lengths, args.max_segments)
    info = {
        "examples": len(examples),
        "real_tokens": int(sum(len(x) + len(y) for x, y in examples)),
        "padded_rows": len(examples),
        "packed_rows": int(placement[:, 0].max()) + 1,
        "packed_inputs": packed_lengths["inputs"],
        "packed_targets": packed_lengths["targets"],
        "input_length_median": float(np.median([len(x) for x, _ in examples])),
        "input_length_mean": float(np.mean([len(x) for x, _ in examples])),
    }
    setup = Setup(args, max_segments=args.max_segments)
    runners, per_example = {}, {}
    for name, features in (("padded", padded), ("packed", packed)):
        rows = features["encoder_input_tokens"].shape[0]
        num_batches = -(-rows // args.batch)
        pad_rows = num_batches * args.batch - rows
        features = {k: np.pad(v, ((0, pad_rows), (0, 0))) for k, v in features.items()}
        batches = [
            setup.global_batch(
                {k: v[i * args.batch : (i + 1) * args.batch] for k, v in features.items()}
            )
            for i in range(num_batches)
        ]
        info[f"{name}_batches"] = num_batches
        if args.packed_work == "score":
            run, scores = _score_pass(setup, name)
            with setup.context():
                per_example[name] = scores(batches)
        else:
            run, _, step_info = _compiled_train_step(setup, batches[0])
            info[f"{name}_compile_s"] = step_info["compile_s"]
            info[f"{name}_step_memory_gb"] = step_info["step_memory_gb"]

        def one_pass(run=run, batches=batches):
            return [run(b) for b in batches][-1]

        with setup.context():
            for _ in range(args.warmup):
                jax.block_until_ready(one_pass())
        runners[name] = _timed(setup, one_pass)
    if per_example:
        # Both layouts score every example once: report how far apart the two scores are.
        unpacked = per_example["padded"][: len(examples)]
        from_packed = packing.unpack_scores(per_example["packed"], placement)
        info["score_max_abs_diff"] = float(np.max(np.abs(unpacked - from_packed)))
    info["work"] = args.packed_work
    return runners, info


def _score_pass(setup: Setup, layout: str):
    """(jitted scorer of one batch, numpy scores of all batches) for 'padded' or 'packed'."""
    method = setup.model.score_segments if layout == "packed" else setup.model.score
    fn = jax.jit(lambda t, f, b: method(state_lib.merge_params(t, f), b))

    def run(batch):
        return fn(setup.trainable, setup.frozen, batch)

    def scores(batches):
        return np.concatenate([np.asarray(sharding.to_host(run(b), setup.mesh)) for b in batches])

    return run, scores


def step_memory_gb(compiled) -> float | None:
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
