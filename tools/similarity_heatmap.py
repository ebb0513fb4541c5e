"""Clustered heatmap of a prompt library's similarity matrix, with task-family labels.

    python tools/similarity_heatmap.py --library L --metric e_avg --out heat.png \
        [--use embedding|prompt] [--family-key family | --families fam.csv] [--csv m.csv]

Rows/columns are ordered by average-linkage clustering (as `spot-jax library similarity`
plots); with family labels, each tick reads `name [family]` and is coloured by family.
"""

import argparse
import sys

import numpy as np

from spot_jax.spot import analysis, similarity
from spot_jax.spot import library as library_lib


def plot(sim, names, families, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = similarity.cluster_order(sim)
    sim = sim[np.ix_(order, order)]
    names = [names[i] for i in order]
    fams = [families.get(n, "unknown") for n in names] if families else None
    labels = [f"{n} [{f}]" for n, f in zip(names, fams, strict=True)] if fams else names
    size = max(4.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if fams:
        cats = sorted(set(fams))
        cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
        colour = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for t, f in zip(ticks, fams, strict=True):
                t.set_color(colour[f])
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return names


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--library", required=True)
    p.add_argument("--metric", default="e_avg", choices=list(similarity.METRICS))
    p.add_argument("--use", choices=("embedding", "prompt"), default="embedding")
    p.add_argument("--family-key", default=None, help="meta.json field holding the family")
    p.add_argument("--families", default=None, help="CSV name,family (overrides --family-key)")
    p.add_argument("--matrix", default=None, help="plot this matrix CSV instead of computing")
    p.add_argument("--csv", default=None, help="also write the matrix CSV here")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args(argv)
    lib = library_lib.Library(args.library)
    if args.matrix:
        from spot_jax.spot import zero_shot

        names, cols, sim = zero_shot.read_csv(args.matrix)
        if names != cols:
            raise SystemExit("--matrix must be square with the same row and column names")
    else:
        entries = lib.entries()
        if not entries:
            raise SystemExit(f"library {args.library} has no entries")
        names = [e.name for e in entries]
        arrays = [e.embedding() if args.use == "embedding" else e.prompt() for e in entries]
        sim = similarity.matrix(arrays, args.metric)
    families = None
    if args.family_key or args.families:
        families = analysis.entry_labels(lib, args.family_key, args.families)
    if args.csv:
        lines = ["," + ",".join(names)]
        lines += [
            n + "," + ",".join(f"{v:.8g}" for v in r) for n, r in zip(names, sim, strict=True)
        ]
        with open(args.csv, "w") as f:
            f.write("\n".join(lines) + "\n")
    order = plot(sim, names, families, args.out, f"{args.metric} ({args.use})")
    print(f"wrote {args.out} (order: {' '.join(order)})", file=sys.stderr)


if __name__ == "__main__":
    main()
