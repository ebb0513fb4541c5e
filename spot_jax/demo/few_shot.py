"""PPT's few-shot protocol on the demo's run engine: 32 train and 32 dev examples per seed.

Gu et al. (B3) train on 32 examples, select the checkpoint on a 32-example dev set and report
mean ± std over 5 seeds; here both sets are drawn per seed from the task's train split
(disjoint), every run is evaluated on the full validation split at each evaluation step, and
the reported number is validation exact match at the step with the best dev accuracy (the
earliest on ties). Step 0 is the initialisation itself, so a run whose training only hurts
dev reports its zero-shot accuracy, as checkpoint selection would.

Also here: PPT's input format with a real sentinel as the mask (`encode_masked`), and the
seed-by-seed tables both PPT and projection sections print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from spot_jax.data import ppt
from spot_jax.demo import runs
from spot_jax.demo.report import mean_std
from spot_jax.models.prompted import PROMPT_PATH

SEEDS = (0, 1, 2, 3, 4)
SHOTS = 32


def encode_masked(texts: Sequence[str], sp, length: int, sentinel: int) -> np.ndarray:
    """Token ids [N, length] of texts whose `ppt.MASK` marks become the sentinel id (the world
    vocabulary has no sentinel pieces; the backbone learnt sentinel ids in span corruption).

    Raises:
        ValueError: a text is longer than `length` (never truncated silently).
    """
    out = np.zeros((len(texts), length), np.int32)
    for i, text in enumerate(texts):
        ids: list[int] = []
        for k, part in enumerate(text.split(ppt.MASK)):
            ids += [sentinel] if k else []
            ids += sp.encode(part.strip()) if part.strip() else []
        ids.append(runs.EOS)
        if len(ids) > length:
            raise ValueError(f"{text!r} is {len(ids)} tokens, more than {length}")
        out[i, : len(ids)] = ids
    return out


def split(data: runs.TaskArrays, shots: int, seed: int) -> tuple[runs.TaskArrays, dict]:
    """(the seed's `shots` train examples, its disjoint `shots`-example dev features), both
    class-balanced as the project's `<task>_32shot_seed<s>` splits: a seeded shuffle, then
    one example of each target in turn (targets with fewer examples drop out)."""
    if 2 * shots > len(data.train_inputs):
        raise ValueError(f"{data.name}: {len(data.train_inputs)} train examples, need {2 * shots}")
    groups: dict[bytes, list[int]] = {}
    for i in np.random.default_rng([1000, seed]).permutation(len(data.train_inputs)):
        groups.setdefault(data.train_targets[i].tobytes(), []).append(int(i))
    longest = max(len(g) for g in groups.values())
    turns = [g[k] for k in range(longest) for g in groups.values() if k < len(g)]
    train, dev = turns[:shots], turns[shots : 2 * shots]
    sub = dataclasses.replace(
        data, train_inputs=data.train_inputs[train], train_targets=data.train_targets[train]
    )
    return sub, runs.features(data.train_inputs[dev], data.train_targets[dev])


@dataclasses.dataclass
class FewShot:
    """R few-shot runs' accuracies (validation exact match, %).

    Attributes:
        selected: at the step of best dev accuracy [R] (the reported number).
        final: at the last step [R].
        zero_shot: of the initialisation [R].
        picked_step: the selected step of each run [R].
    """

    selected: np.ndarray
    final: np.ndarray
    zero_shot: np.ndarray
    picked_step: np.ndarray


def run(
    tuner: runs.Tuner,
    inits: np.ndarray,
    data: Sequence[runs.TaskArrays],
    seeds: Sequence[int],
    steps: int,
    batch_size: int,
    eval_every: int,
    shots: int = SHOTS,
    progress=None,
) -> FewShot:
    """R = len(inits) few-shot prompt runs, run r on `data[r]` with seed `seeds[r]`.

    Args:
        tuner: the prompt tuner of the model (and shapes) the runs use.
        inits: initial prompts [R, P, H].
        data: each run's task (full train split; the seed draws its train and dev sets).
        seeds: each run's seed (examples and batch order).
        steps, batch_size, eval_every: the runs' schedule.
        shots: train examples, and dev examples, per seed.
        progress: a tqdm bar, or None.
    """
    pairs = [split(d, shots, s) for d, s in zip(data, seeds, strict=True)]
    batches = runs.stack(
        [t.batches(steps, batch_size, s) for (t, _), s in zip(pairs, seeds, strict=True)]
    )
    val = runs.stack([t.validation() for t, _ in pairs])
    curves = tuner.run({PROMPT_PATH: np.asarray(inits)}, batches, val, eval_every, progress)
    history = curves.trainable[PROMPT_PATH]  # [R, E, P, H]
    num_runs, num_evals = history.shape[:2]
    dev = jax.tree.map(lambda x: np.repeat(x, num_evals, 0), runs.stack([d for _, d in pairs]))
    flat = {PROMPT_PATH: history.reshape(num_runs * num_evals, *history.shape[2:])}
    dev_acc = tuner.evaluate(flat, dev)[0].reshape(num_runs, num_evals)
    pick = dev_acc.argmax(1)
    return FewShot(
        selected=curves.accuracy[np.arange(num_runs), pick],
        final=curves.accuracy[:, -1],
        zero_shot=curves.accuracy[:, 0],
        picked_step=curves.steps[pick],
    )


def seed_table(rows: dict[str, dict[str, Sequence[float]]], methods: Sequence[str]) -> str:
    """Targets x methods, mean ± std over seeds, then every seed's value; an average row
    (per seed first, then mean ± std) when there are several targets."""
    head = "| target | " + " | ".join(methods) + " |"
    lines = [head, "|---" * (len(methods) + 1) + "|"]

    def cell(values):
        v = np.asarray(values, float)
        if len(v) == 1:  # one number for all seeds (e.g. a zero-shot accuracy)
            return f"{v[0]:.1f}"
        return f"{mean_std(v)} ({', '.join(f'{x:.0f}' for x in v)})"

    for target, by_method in rows.items():
        lines.append(f"| {target} | " + " | ".join(cell(by_method[m]) for m in methods) + " |")
    if len(rows) > 1:
        avg = {m: np.mean([r[m] for r in rows.values()], axis=0) for m in methods}
        lines.append("| **average** | " + " | ".join(cell(avg[m]) for m in methods) + " |")
    return "\n".join(lines)
