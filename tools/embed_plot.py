"""2-D scatter of a library's task embeddings (PCA and t-SNE), coloured by a label.

    python tools/embed_plot.py --library L --out-prefix plots/emb [--method pca tsne]
        [--label-key task | --labels labels.csv] [--use embedding|prompt] [--perplexity 5]

Writes OUT_PREFIX_pca.png / OUT_PREFIX_tsne.png and OUT_PREFIX_<method>.csv (name,label,x,y).
Each embedding [P, H] is flattened (or, with --mean, averaged over tokens) first.
"""

import argparse
import sys

import numpy as np

from spot_jax.spot import analysis
from spot_jax.spot import library as library_lib


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--library", required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--method", nargs="+", choices=("pca", "tsne"), default=["pca", "tsne"])
    p.add_argument("--use", choices=("embedding", "prompt"), default="embedding")
    p.add_argument("--mean", action="store_true", help="average tokens instead of flattening")
    p.add_argument("--label-key", default="task", help="meta.json field to colour by")
    p.add_argument("--labels", default=None, help="CSV name,label (overrides --label-key)")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    lib = library_lib.Library(args.library)
    entries = lib.entries()
    if not entries:
        raise SystemExit(f"library {args.library} has no entries")
    names = [e.name for e in entries]
    arrays = [e.embedding() if args.use == "embedding" else e.prompt() for e in entries]
    x = np.stack([a.mean(0) if args.mean else a.reshape(-1) for a in arrays])
    labels = analysis.entry_labels(lib, args.label_key, args.labels)
    colours = [labels[n] for n in names]
    for method in args.method:
        if method == "pca":
            xy, ratio = analysis.pca(x, 2)
            axes = [f"PC{i + 1} ({r:.0%})" for i, r in enumerate(ratio)]
        else:
            xy = analysis.tsne(x, args.perplexity, seed=args.seed)
            axes = ["t-SNE 1", "t-SNE 2"]
        png = f"{args.out_prefix}_{method}.png"
        analysis.scatter(
            xy[:, 0], xy[:, 1], png, names, colours, axes[0], axes[1],
            f"task embeddings ({method}, {args.use})",
        )  # fmt: skip
        with open(f"{args.out_prefix}_{method}.csv", "w") as f:
            f.write("name,label,x,y\n")
            for n, c, (a, b) in zip(names, colours, xy, strict=True):
                f.write(f"{n},{c},{a:.8g},{b:.8g}\n")
        print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
