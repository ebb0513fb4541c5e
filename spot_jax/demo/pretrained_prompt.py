"""PPT in the task world (Gu et al., §B): a prompt pre-trained on unlabeled world documents in
the sentence-pair format, then few-shot on each held-out target against sampled-vocab init.

pre-train  `world.documents` (several train-side scenes of one person in one city on
           consecutive days) -> PPT's 3-way next-sentence prediction (`ppt.examples('nsp3')`):
           's1 <X> s2' -> '<X> yes|maybe|no' (adjacent | same document | other document); the
           mask is the backbone's first sentinel id, the label words PPT's (the world
           vocabulary adds 'maybe'). One prompt run from a sampled-vocab init.
few-shot   each target rewritten into the same format, 'scene <X>' -> '<X> answer'; 32 train
           and 32 dev examples per seed (`few_shot`), seeds 0-4: PPT init vs sampled-vocab init
           (PromptTuning), same examples and batches per seed; the PPT prompt's zero-shot
           accuracy beside.

Only nsp3 is pre-trained: PPT's multiple-choice templates ('? A. ... The correct one is')
need punctuation and words the world's word-level vocabulary has no pieces for, and inputs
five times longer. Three of the four targets answer yes/no, the words NSP's prompt learns to
emit; the fourth (the object) copies a word, which no PPT format teaches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm import tqdm

from spot_jax.data import ppt
from spot_jax.data import world as world_lib
from spot_jax.demo import few_shot, runs
from spot_jax.demo.experiment import Protocol, write_run
from spot_jax.models.prompted import PROMPT_PATH

PPT_ENTRY = "world_ppt_nsp3"
METHODS = ("PPT zero-shot", "PPT init", "sampled-vocab init")


@dataclasses.dataclass(frozen=True)
class PPTConfig:
    """Sizes of the PPT experiment (few-shot steps and batch size are the demo's target runs').

    Attributes:
        documents, validation_documents: world documents for pre-training and its validation.
        pretrain_steps: steps of the PPT prompt run.
        input_length: tokens of a 's1 <X> s2' input (two 9-word scenes, mask, EOS).
        seeds: few-shot seeds.
    """

    documents: int = 4096
    validation_documents: int = 256
    pretrain_steps: int = 600
    input_length: int = 20
    seeds: tuple[int, ...] = few_shot.SEEDS

    @classmethod
    def quick(cls) -> PPTConfig:
        return cls(documents=1024, validation_documents=128, pretrain_steps=150)


def nsp_arrays(protocol: Protocol, cfg: PPTConfig) -> runs.TaskArrays:
    """PPT's nsp3 examples of world documents as token arrays (train / validation)."""
    world, sp = protocol.world, protocol.backbone.tokenizer
    sentinel = world_lib.sentinel_id(protocol.backbone.seqio_vocab_size, 0)

    def build(count, seed):
        docs = world.documents(count, seed=seed)
        # One example per document: the world's documents hold 3-6 scenes, and the demo's
        # figures were measured on this stream (PPT makes one per sentence of 5+ sentences).
        exs = list(
            ppt.examples(
                "nsp3",
                docs,
                seed=seed,
                label_words=world_lib.PPT_LABEL_WORDS,
                queries="one",
                min_sentences=2,
            )
        )
        enc = lambda key, n: few_shot.encode_masked([e[key] for e in exs], sp, n, sentinel)  # noqa: E731
        return enc("inputs", cfg.input_length), enc("targets", protocol.cfg.target_length)

    train, val = build(cfg.documents, 0), build(cfg.validation_documents, 1)
    return runs.TaskArrays(PPT_ENTRY, *train, *val)


def masked_target(protocol: Protocol, name: str) -> runs.TaskArrays:
    """A target in PPT's downstream format: 'scene <X>' -> '<X> answer'."""
    sp, dcfg = protocol.backbone.tokenizer, protocol.cfg
    sentinel = world_lib.sentinel_id(protocol.backbone.seqio_vocab_size, 0)
    arrays = []
    for split in ("train", "validation"):
        pairs = protocol.world.examples(name, split)
        x = [f"{scene} {ppt.MASK}" for scene, _ in pairs]
        y = [f"{ppt.MASK} {answer}" for _, answer in pairs]
        arrays += [few_shot.encode_masked(x, sp, dcfg.input_length, sentinel),
                   few_shot.encode_masked(y, sp, dcfg.target_length, sentinel)]  # fmt: skip
    return runs.TaskArrays(name, *arrays)


def run_ppt(protocol: Protocol, cfg: PPTConfig, progress: bool = True) -> dict:
    """Pre-trains the PPT prompt and runs the few-shot comparison; JSON-able results."""
    dcfg, targets = protocol.cfg, protocol.world.names("target")
    nsp = nsp_arrays(protocol, cfg)
    total = cfg.pretrain_steps + 2 * len(targets) * len(cfg.seeds) * dcfg.target_steps
    with tqdm(total=total, desc="PPT runs", unit="step", disable=not progress) as bar:
        shared = protocol.init_prompts([0])
        pre = protocol._prompt_runs(shared, [nsp], cfg.pretrain_steps, [0], bar)
        write_run(protocol.out / "runs" / PPT_ENTRY, PPT_ENTRY, protocol.backbone, dcfg, pre, 0)
        prompt = pre.final[PROMPT_PATH][0]
        seeds = list(cfg.seeds)
        # Per method, one init per seed: the PPT prompt for all; PromptTuning's seeded draws.
        by_method = [
            np.stack([prompt] * len(seeds)),
            protocol.init_prompts([100 + s for s in seeds]),
        ]
        data = [masked_target(protocol, t) for t in targets]
        order = [(t, m) for t in range(len(targets)) for m in range(2)]  # run blocks of seeds
        result = few_shot.run(
            protocol.prompt_tuner,
            np.concatenate([by_method[m] for _, m in order]),
            [data[t] for t, _ in order for _ in seeds],
            seeds * len(order),
            dcfg.target_steps,
            dcfg.batch_size,
            dcfg.eval_every,
            progress=bar,
        )
    per_target, n = {}, len(seeds)
    for i, (t, m) in enumerate(order):
        rows = slice(i * n, (i + 1) * n)
        entry = per_target.setdefault(targets[t], {})
        if m == 0:
            entry["PPT zero-shot"] = [float(result.zero_shot[rows][0])]
        key = METHODS[1 + m]
        entry[key] = result.selected[rows].tolist()
        entry[f"{key} (last step)"] = result.final[rows].tolist()
        entry[f"{key} (picked step)"] = result.picked_step[rows].tolist()
    return {
        "seeds": seeds,
        "nsp_accuracy": [float(a) for a in pre.accuracy[0]],
        "nsp_steps": [int(s) for s in pre.steps],
        "nsp_examples": [len(nsp.train_inputs), len(nsp.val_inputs)],
        "per_target": per_target,
        "run_dir": str(protocol.out / "runs" / PPT_ENTRY),
    }


def sections(res: dict, cfg: PPTConfig, dcfg) -> list[tuple[str, str]]:
    """The report's PPT section."""
    seeds = ", ".join(map(str, res["seeds"]))
    table = few_shot.seed_table(res["per_target"], METHODS)
    gain = np.mean(
        [np.subtract(r["PPT init"], r["sampled-vocab init"]) for r in res["per_target"].values()],
        axis=0,
    )
    body = f"""
A prompt pre-trained with PPT's sentence-pair task (3-way next-sentence prediction,
label words yes / maybe / no, the backbone's first sentinel as `<X>`) on {res["nsp_examples"][0]}
examples from {cfg.documents} world documents (each: one person in one city on consecutive days,
train-side scenes only), {cfg.pretrain_steps} steps from a sampled-vocab init: NSP validation
exact match {res["nsp_accuracy"][0]:.1f}% at step 0 -> {res["nsp_accuracy"][-1]:.1f}% (chance
33.3%; {res["nsp_examples"][1]} examples). Run: `{res["run_dir"]}`.

Few-shot on each held-out target in the same format ('scene <X>' -> '<X> answer'), PPT's
protocol: {few_shot.SHOTS} train + {few_shot.SHOTS} dev examples drawn per seed,
{dcfg.target_steps} steps, batch {dcfg.batch_size}, validation exact match (%) at the step of
best dev accuracy; mean ± std over seeds {seeds} (each seed's value in brackets). Both inits see
the same examples and batches per seed.

{table}

PPT init vs sampled-vocab init, averaged over targets: {gain.mean():+.1f} points (per seed:
{", ".join(f"{g:+.1f}" for g in gain)}).
"""
    return [(f"PPT: pre-trained prompt vs sampled-vocab init, few-shot (seeds {seeds})", body)]


def experiment(quick: bool = False, cfg: PPTConfig | None = None, progress: bool = True):
    """The demo hook (`command.EXPERIMENTS`): `fn(protocol, results) -> sections`."""
    cfg = cfg or (PPTConfig.quick() if quick else PPTConfig())

    def ppt_experiment(protocol: Protocol, results: dict) -> list[tuple[str, str]]:
        res = run_ppt(protocol, cfg, progress)
        results["ppt"] = res
        return sections(res, cfg, protocol.cfg)

    return ppt_experiment
