"""The demo's protocol: source prompts -> library -> retrieval -> transfer -> baselines.

sources    one prompt per source task and one on their mixture, all from one shared
           sampled-vocab init (so prompt differences come from the tasks), written as real
           runs (MODEL_DIR layout) and added to the real prompt library
targets    a short prompt run on each target gives its task embedding (the library's
           embedding step); retrieval ranks the library with it
methods    PromptTuning (sampled-vocab init, per seed), SPoT (mixture prompt init),
           retrieval top-1 and top-k weighted average (spot_jax.spot.transfer), and
           ModelTuning; full data and few-shot, over several seeds
per source each source prompt as the init of each target (few-shot, one seed): the gain
           over PromptTuning that similarity should predict
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from etils import epath

from spot_jax.demo import runs
from spot_jax.demo.backbone import Backbone, BackboneConfig
from spot_jax.models import prompts
from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
from spot_jax.spot import library as library_lib
from spot_jax.spot import retrieval, transfer
from spot_jax.train import checkpoints

MIXTURE_ENTRY = "world_source_mixture"
TRAIN_FIELDS, VAL_FIELDS = ("train_inputs", "train_targets"), ("val_inputs", "val_targets")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes (defaults: the full demo; see `quick`)."""

    backbone: BackboneConfig = BackboneConfig()
    prompt_length: int = 8
    input_length: int = 12
    target_length: int = 4
    batch_size: int = 16
    source_steps: int = 300
    mixture_steps: int = 600
    target_steps: int = 150
    embedding_steps: int = 100
    eval_every: int = 25
    few_shot: int = 32
    seeds: tuple[int, ...] = (0, 1, 2)
    prompt_learning_rate: float = 0.3
    model_learning_rate: float = 1e-3
    top_k: int = 3
    metric: str = retrieval.DEFAULT_METRIC

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            backbone=dataclasses.replace(BackboneConfig(), steps=300, batch_size=32),
            source_steps=100,
            mixture_steps=200,
            target_steps=50,
            embedding_steps=50,
            seeds=(0, 1),
        )


def task_arrays(backbone: Backbone, world, cfg: DemoConfig) -> dict[str, runs.TaskArrays]:
    """Every world task as token arrays (inputs without the task word: the prompt replaces it)."""
    sp, out = backbone.tokenizer, {}
    for name in world.names():
        train, val = world.examples(name, "train"), world.examples(name, "validation")
        enc = lambda pairs, i, n: runs.encode([p[i] for p in pairs], sp, n)  # noqa: E731
        out[name] = runs.TaskArrays(
            name,
            enc(train, 0, cfg.input_length),
            enc(train, 1, cfg.target_length),
            enc(val, 0, cfg.input_length),
            enc(val, 1, cfg.target_length),
        )
    return out


def write_run(run_dir: epath.Path, task: str, backbone: Backbone, cfg: DemoConfig, curves, r: int):
    """Writes run r of `curves` as a MODEL_DIR (model.json, config.gin, numpy prompts at every
    evaluation, metrics.jsonl), the layout `spot-jax library add` reads. A run of an earlier
    demo in the same place is replaced (it is this demo's own output)."""
    if run_dir.exists():
        run_dir.rmtree()
    checkpoints.check_model_dir(run_dir, backbone.config, cfg.prompt_length)
    macros = {
        "MIXTURE_OR_TASK_NAME": task,
        "INITIAL_CHECKPOINT_PATH": str(backbone.path),
        "PROMPT_LENGTH": cfg.prompt_length,
        "TRAIN_STEPS": int(curves.steps[-1]),
        "BATCH_SIZE": cfg.batch_size,
        "SEED": 0,
    }
    (run_dir / "config.gin").write_text("".join(f"{k} = {v!r}\n" for k, v in macros.items()))
    lines = []
    for e, step in enumerate(curves.steps):
        prompt = curves.trainable[PROMPT_PATH][r, e]
        checkpoints.save_numpy_params(run_dir, int(step), {PROMPT_PATH: prompt})
        metrics = {
            "eval/accuracy": float(curves.accuracy[r, e]),
            "eval/loss": float(curves.loss[r, e]),
        }
        lines.append(json.dumps({"step": int(step), **metrics}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


class Protocol:
    """Runs the demo's experiments on one backbone (see the module docstring)."""

    def __init__(self, backbone: Backbone, world, cfg: DemoConfig, out: epath.Path):
        self.backbone, self.world, self.cfg, self.out = backbone, world, cfg, out
        self.arrays = task_arrays(backbone, world, cfg)
        self.prompted = PromptedT5(backbone.config, cfg.prompt_length)
        self.prompt_tuner = runs.prompt_tuner(
            self.prompted, backbone.params, cfg.prompt_learning_rate
        )
        self.model_tuner = runs.model_tuner(PromptedT5(backbone.config, 0), cfg.model_learning_rate)
        table = np.asarray(backbone.params["token_embedder/embedding"], np.float32)
        # Sampled vocabulary: the world's real pieces (not pad/EOS/UNK, sentinels or padding).
        self.embeddings = table[3 : backbone.tokenizer.get_piece_size()]
        self.library = library_lib.Library(out / "library")
        earlier = self.library.model()
        if earlier is not None and earlier["frozen"] != str(backbone.path):
            # This demo's own output from a run on another backbone (another --cache-dir, say):
            # its prompts belong to that model, and the library would refuse this one's.
            print(f"{self.library.root}: prompts of another backbone ({earlier['frozen']}); "
                  "starting the library afresh", flush=True)  # fmt: skip
            self.library.root.rmtree()

    def init_prompts(self, seeds) -> np.ndarray:
        return runs.sampled_vocab_prompts(
            self.embeddings, self.cfg.prompt_length, seeds, len(self.embeddings)
        )

    def _prompt_runs(self, inits, data: list[runs.TaskArrays], steps: int, seeds, bar):
        batches = runs.stack(
            [d.batches(steps, self.cfg.batch_size, s) for d, s in zip(data, seeds, strict=True)]
        )
        val = runs.stack([d.validation() for d in data])
        return self.prompt_tuner.run(
            {PROMPT_PATH: np.asarray(inits)}, batches, val, self.cfg.eval_every, bar
        )

    # -- sources ----------------------------------------------------------------------------

    def train_sources(self, bar) -> tuple[dict[str, float], float]:
        """Source prompts and the mixture prompt into runs/ and the library."""
        sources = self.world.names("source")
        shared = self.init_prompts([0])[0]
        data = [self.arrays[n] for n in sources]
        curves = self._prompt_runs(
            [shared] * len(sources), data, self.cfg.source_steps, [0] * len(sources), bar
        )
        accuracy = {}
        for r, name in enumerate(sources):
            run_dir = self.out / "runs" / name
            write_run(run_dir, name, self.backbone, self.cfg, curves, r)
            self._add(run_dir, name)
            accuracy[name] = float(curves.accuracy[r, -1])
        # Examples-proportional (equal sizes here); validation: every n-th of each source.
        joined = {f: np.concatenate([getattr(d, f) for d in data]) for f in TRAIN_FIELDS}
        joined.update({f: np.concatenate([getattr(d, f)[:: len(data)] for d in data])
                       for f in VAL_FIELDS})  # fmt: skip
        mixed = runs.TaskArrays(MIXTURE_ENTRY, **joined)
        mix = self._prompt_runs([shared], [mixed], self.cfg.mixture_steps, [0], bar)
        run_dir = self.out / "runs" / MIXTURE_ENTRY
        write_run(run_dir, MIXTURE_ENTRY, self.backbone, self.cfg, mix, 0)
        self._add(run_dir, MIXTURE_ENTRY)
        return accuracy, float(mix.accuracy[0, -1])

    def prompt_scales(self) -> dict[str, float]:
        """RMS of a sampled-vocab init, of the source prompts (mean) and of the mixture prompt."""
        rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
        sources = [rms(self.library.get(n).prompt()) for n in self.world.names("source")]
        return {
            "sampled_vocab": rms(self.embeddings),
            "sources_mean": float(np.mean(sources)),
            "mixture": rms(self.library.get(MIXTURE_ENTRY).prompt()),
        }

    def _add(self, run_dir, name):
        if name in self.library.names():  # a rerun into the same --out replaces its entries
            self.library.remove(name)
        self.library.add(run_dir, name, "best", self.cfg.embedding_steps, "eval/accuracy")

    # -- targets ----------------------------------------------------------------------------

    def regime_data(self, target: str, regime: str, seed: int) -> runs.TaskArrays:
        data = self.arrays[target]
        return data.subset(self.cfg.few_shot, 1000 + seed) if regime == "few-shot" else data

    def target_embeddings(self, regimes, bar) -> dict[tuple[str, str], np.ndarray]:
        """Each target's task embedding per regime: its prompt after `embedding_steps` steps
        from the shared init, the same step as the library's keys."""
        keys = [(t, g) for t in self.world.names("target") for g in regimes]
        shared = self.init_prompts([0])[0]
        data = [self.regime_data(t, g, 0) for t, g in keys]
        steps = self.cfg.embedding_steps
        curves = self._prompt_runs([shared] * len(keys), data, steps, [0] * len(keys), bar)
        return {k: curves.final[PROMPT_PATH][i] for i, k in enumerate(keys)}

    def retrieve(self, embedding: np.ndarray):
        """(top-1 prompt, top-k weighted average prompt, ranking, weights) for an embedding."""
        ranked = retrieval.rank(self.library, embedding, self.cfg.metric, exclude=(MIXTURE_ENTRY,))
        top1 = self.library.get(ranked[0].name).prompt()
        avg, weights = transfer.weighted_average(
            self.library, embedding, self.cfg.top_k, self.cfg.metric, exclude=(MIXTURE_ENTRY,)
        )
        return top1, avg, [(r.name, r.score) for r in ranked], weights

    def compare(self, target: str, regime: str, embedding: np.ndarray, bar):
        """All methods on one target and regime: accuracy curves [R, E] per method."""
        seeds = list(self.cfg.seeds)
        top1, avg, ranked, weights = self.retrieve(embedding)
        mixture = self.library.get(MIXTURE_ENTRY).prompt()
        # The mixture prompt at a sampled-vocab init's scale (prompts.rescaled, an opt-in
        # beyond SPoT): long runs at rate 0.3 grow a prompt, and a large one can stall a target.
        matched = prompts.rescaled(prompts.from_array(mixture), "embeddings", len(self.embeddings))
        inits = {
            "PromptTuning": self.init_prompts([100 + s for s in seeds]),
            "SPoT": [mixture] * len(seeds),
            "SPoT, norm-matched": [
                np.asarray(matched(None, mixture.shape, embeddings=self.embeddings))
            ]
            * len(seeds),
            "Retrieval top-1": [top1] * len(seeds),
            "Retrieval top-k": [avg] * len(seeds),
        }
        methods = list(inits)
        data = [self.regime_data(target, regime, s) for s in seeds]
        all_inits = np.concatenate([np.asarray(inits[m]) for m in methods])
        curves = self._prompt_runs(
            all_inits, data * len(methods), self.cfg.target_steps, seeds * len(methods), bar
        )
        n = len(seeds)
        out = {m: curves.accuracy[i * n : (i + 1) * n] for i, m in enumerate(methods)}
        batches = runs.stack(
            [
                d.batches(self.cfg.target_steps, self.cfg.batch_size, s)
                for d, s in zip(data, seeds, strict=True)
            ]
        )
        params = {k: np.stack([np.asarray(v)] * n) for k, v in self.backbone.params.items()}
        mt = self.model_tuner.run(params, batches, data[0].validation(), self.cfg.eval_every, bar)
        out["ModelTuning"] = mt.accuracy
        return out, curves.steps, ranked, weights

    def per_source(self, target: str, embedding: np.ndarray, pt_final: float, bar) -> list[dict]:
        """Few-shot runs of `target` from every source prompt (first seed); gain over
        `pt_final`, PromptTuning's final accuracy on the same seed."""
        sources = self.world.names("source")
        prompts = [self.library.get(n).prompt() for n in sources]
        data = self.regime_data(target, "few-shot", self.cfg.seeds[0])
        curves = self._prompt_runs(
            prompts,
            [data] * len(sources),
            self.cfg.target_steps,
            [self.cfg.seeds[0]] * len(sources),
            bar,
        )
        sims = {r.name: r.score for r in retrieval.rank(self.library, embedding, self.cfg.metric)}
        return [
            {
                "target": target,
                "source": s,
                "similarity": sims[s],
                "gain": float(curves.accuracy[i, -1]) - pt_final,
            }  # fmt: skip
            for i, s in enumerate(sources)
        ]
