"""The demo's report: a list of markdown sections, plots beside it.

`build` makes the SPoT sections from `command.run_demo`'s results; later experiments append
their own with `Report.add` (e.g. PPT-style pre-trained prompts, cross-model projection) before
`write`. Every number is what the runs gave; nothing is filtered or re-selected.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath

from spot_jax.spot import analysis, similarity
from spot_jax.spot import library as library_lib

REPORT_FILE = "report.md"
HEATMAP_FILE = "similarity.png"
CURVES_FILE = "curves.png"


@dataclasses.dataclass
class Report:
    """A titled list of (heading, markdown body) sections."""

    title: str
    sections: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def add(self, heading: str, body: str) -> None:
        self.sections.append((heading, body.strip()))

    def markdown(self) -> str:
        parts = [f"# {self.title}"] + [f"## {h}\n\n{b}" for h, b in self.sections]
        return "\n\n".join(parts) + "\n"

    def write(self, out: epath.PathLike) -> str:
        text = self.markdown()
        (epath.Path(out) / REPORT_FILE).write_text(text)
        return text


def mean_std(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def results_table(per_target: dict, methods: list[str]) -> str:
    """Targets x methods, final validation exact match (%) mean ± std over seeds."""
    rows = ["| target | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for target, r in per_target.items():
        rows.append(f"| {target} | " + " | ".join(mean_std(r["final"][m]) for m in methods) + " |")
    avg = {m: np.mean([r["final"][m] for r in per_target.values()], axis=0) for m in methods}
    rows.append("| **average** | " + " | ".join(mean_std(avg[m]) for m in methods) + " |")
    return "\n".join(rows)


def gains(per_target: dict, method: str) -> tuple[np.ndarray, str]:
    """Per-seed gain of `method` over PromptTuning, averaged over targets: ([seeds], text)."""
    diff = np.mean(
        [np.subtract(r["final"][method], r["final"]["PromptTuning"]) for r in per_target.values()],
        axis=0,
    )
    return diff, f"{diff.mean():+.1f} points (per seed: {', '.join(f'{d:+.1f}' for d in diff)})"


def family_recovery(names, families, sim: np.ndarray) -> dict[str, float]:
    """Same- vs cross-family mean similarity (off-diagonal) and nearest-neighbour accuracy."""
    fam = np.array([families[n] for n in names])
    same = fam[:, None] == fam[None, :]
    off = ~np.eye(len(names), dtype=bool)
    masked = np.where(off, sim, -np.inf)
    nn = masked.argmax(axis=1)
    return {
        "same_family": float(sim[same & off].mean()),
        "cross_family": float(sim[~same].mean()),
        "nn_accuracy": float(np.mean(fam[nn] == fam)),
    }


def plot_heatmap(sim, names, families, path, title) -> None:
    """Clustered heatmap, tick labels coloured by family (`similarity.cluster_order`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = similarity.cluster_order(sim)
    fams = sorted(set(families.values()))
    colours = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(fams)}
    labels = [names[i].removeprefix("world_") for i in order]
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(sim[np.ix_(order, order)], cmap="viridis")
    ax.set_xticks(range(len(order)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, i in zip(ticks, order, strict=True):
            tick.set_color(colours[families[names[i]]])
    handles = [plt.Line2D([], [], color=colours[f], marker="s", ls="", label=f) for f in fams]
    ax.legend(handles=handles, title="family", bbox_to_anchor=(1.2, 1), loc="upper left")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps long tick labels and the legend
    plt.close(fig)


def plot_curves(results: dict, path) -> None:
    """Validation exact match vs step, mean over seeds: one panel per target and regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes, targets = list(results["regimes"]), results["targets"]
    size = (3.4 * len(targets), 3 * len(regimes))
    fig, axes = plt.subplots(len(regimes), len(targets), figsize=size, squeeze=False, sharey=True)
    steps = results["steps"]
    for i, regime in enumerate(regimes):
        for j, target in enumerate(targets):
            ax = axes[i, j]
            for method, curves in results["regimes"][regime][target]["curves"].items():
                c = np.asarray(curves)
                ax.plot(steps, c.mean(0), label=method)
                ax.fill_between(steps, c.min(0), c.max(0), alpha=0.15)
            ax.set_title(f"{target.removeprefix('world_')} ({regime})", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
        axes[i, 0].set_ylabel("validation exact match (%)", fontsize=8)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build(results: dict, out: epath.PathLike, quick: bool = False) -> Report:
    """The SPoT sections of the report, and the heatmap and curves PNGs in `out`."""
    out = epath.Path(out)
    cfg, families = results["config"], results["families"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    methods = list(next(iter(results["regimes"]["full"].values()))["final"])
    report = Report("SPoT on the task world" + (" (quick run)" if quick else ""))
    bb = results["backbone"]
    report.add(
        "Setup",
        f"""
Frozen backbone: T5 1.1 shape {bb["t5"]}, pretrained on the world's unlabeled source text (span
corruption) and source tasks for {cfg["backbone"]["steps"]} steps ({
            "pretrained in this run" if bb["pretrained_now"] else "loaded from the cache"
        }: `{bb["path"]}`). Prompt length
{cfg["prompt_length"]}; {len(results["sources"])} source tasks + 1 mixture in the library
(`{results["library"]}`); {len(results["targets"])} held-out targets. Target runs:
{cfg["target_steps"]} steps, batch {cfg["batch_size"]}, full data ({
            results["split_sizes"]["train"]
        } examples) and few-shot
({cfg["few_shot"]} examples drawn per seed); seeds {seeds}. Accuracy: validation exact match (%)
at the last step (no checkpoint selection). CPU kernels here are not bitwise reproducible and
prompt tuning is chaotic, so a rerun moves these numbers by a few points; judge gains by the
per-seed values. Times (s, this machine): {results["timings"]}.
""",
    )
    if "prompt_rms" in results:
        rms = results["prompt_rms"]
        report.add(
            "The mixture prompt",
            f"""
SPoT's source prompt is trained on the mixture of all {len(results["sources"])} sources. The
world's inputs carry no task word, so one prompt cannot tell the mixed tasks apart: it reaches
{results["mixture_accuracy"]:.1f}% on the mixture's validation examples (each source alone:
{np.mean(list(results["source_accuracy"].values())):.1f}% on average), and it grows large:
RMS {rms["mixture"]:.2f}, against {rms["sampled_vocab"]:.2f} for a sampled-vocab init and
{rms["sources_mean"]:.2f} for the source prompts. **SPoT, norm-matched** starts from the same
prompt scaled to the sampled-vocab init's RMS (`prompts.rescaled`, `RESCALE_PROMPT_RMS =
'embeddings'` in `gin/spot/target_from_library.gin`), an opt-in that is not in SPoT's paper.
""",
        )
    for regime, per_target in results["regimes"].items():
        lines = [results_table(per_target, methods), ""]
        for m in methods[1:]:
            lines.append(f"- {m} vs PromptTuning: {gains(per_target, m)[1]}")
        report.add(f"Results: {regime} (mean ± std over seeds {seeds})", "\n".join(lines))

    lib = library_lib.Library(results["library"])
    names = results["sources"]
    keys = [lib.get(n).embedding() for n in names]
    sim = similarity.matrix(keys, cfg["metric"])
    plot_heatmap(sim, names, families, out / HEATMAP_FILE,
                 f"{cfg['metric']} similarity of source task embeddings")  # fmt: skip
    rec = family_recovery(names, families, sim)
    rec_p = family_recovery(
        names, families, similarity.matrix([lib.get(n).prompt() for n in names], cfg["metric"])
    )
    hits = [
        np.mean([families[n] == families[t] for n, _ in r["ranking"][: cfg["top_k"]]])
        for r_t in results["regimes"].values()
        for t, r in r_t.items()
    ]
    top1 = [families[r["ranking"][0][0]] == families[t] for r_t in results["regimes"].values()
            for t, r in r_t.items()]  # fmt: skip
    report.add(
        "Prompt similarity recovers task families",
        f"""
![similarity]({HEATMAP_FILE})

Task embeddings (each source's prompt at step {cfg["embedding_steps"]}, all from one shared
init), metric `{cfg["metric"]}`: same-family mean similarity {rec["same_family"]:.4f} vs
cross-family {rec["cross_family"]:.4f}; nearest neighbour in the same family for
{100 * rec["nn_accuracy"]:.0f}% of sources (chance {100 * 2 / (len(names) - 1):.0f}%). Final
prompts: same {rec_p["same_family"]:.4f} vs cross {rec_p["cross_family"]:.4f}, nearest-neighbour
{100 * rec_p["nn_accuracy"]:.0f}%. Retrieval for the targets: top-1 source of the target's family
in {100 * np.mean(top1):.0f}% of target/regime pairs; top-{cfg["top_k"]} of the target's family
{100 * np.mean(hits):.0f}% (chance {100 * 3 / len(names):.0f}%).
""",
    )
    rows = results["per_source"]
    corr = analysis.correlation([r["similarity"] for r in rows], [r["gain"] for r in rows])
    per = []
    for t in results["targets"]:
        sub = [r for r in rows if r["target"] == t]
        c = analysis.correlation([r["similarity"] for r in sub], [r["gain"] for r in sub])
        per.append(f"{t.removeprefix('world_')} {c['spearman_rho']:+.2f}")
    same = [r["gain"] for r in rows if families[r["source"]] == families[r["target"]]]
    cross = [r["gain"] for r in rows if families[r["source"]] != families[r["target"]]]
    report.add(
        "Does similarity predict transfer?",
        f"""
Each source prompt as the init of each target (few-shot, seed {cfg["seeds"][0]},
{cfg["target_steps"]} steps); gain = its final accuracy minus PromptTuning's with the same seed
and examples. Spearman rho between source-target similarity and gain over all {corr["n"]}
pairs: {corr["spearman_rho"]:+.2f}
(p = {corr["spearman_p"]:.2g}); per target: {"; ".join(per)}. Mean gain from same-family sources
{np.mean(same):+.1f} points vs other families {np.mean(cross):+.1f}.
""",
    )
    plot_curves(results, out / CURVES_FILE)
    report.add(
        "Convergence", f"![curves]({CURVES_FILE})\n\nMean over seeds; bands span min to max."
    )
    for heading, body in results.get("extra_sections", []):
        report.add(heading, body)
    return report
