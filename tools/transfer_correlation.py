"""Correlation between task similarity and transfer gain (does similarity predict
transfer?).

    python tools/transfer_correlation.py results.csv [--x similarity] [--y gain]
        [--plot scatter.png] [--json out.json] [--per-target]

The CSV has a header with at least source,target,similarity,gain. Prints Pearson's r (SPoT's
Fig. 5/8), Spearman's rho and Kendall's tau (Su et al.'s) with two-sided p-values over all
rows (and, with --per-target, within each target, as SPoT's retrieval evaluation ranks sources
per target).
"""

import argparse
import json
import sys

import numpy as np

from spot_jax.spot import analysis


def analyse(rows, x_key="similarity", y_key="gain", per_target=False):
    missing = [k for k in (x_key, y_key) if rows and k not in rows[0]]
    if missing:
        raise SystemExit(f"columns {missing} not in the CSV (have {sorted(rows[0])})")
    x = np.array([float(r[x_key]) for r in rows])
    y = np.array([float(r[y_key]) for r in rows])
    out = {"all": analysis.correlation(x, y)}
    if per_target:
        targets = sorted({r["target"] for r in rows})
        for t in targets:
            sub = [r for r in rows if r["target"] == t]
            if len(sub) >= 3:
                out[t] = analysis.correlation(
                    [float(r[x_key]) for r in sub], [float(r[y_key]) for r in sub]
                )
    return x, y, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", help="results CSV (source,target,similarity,gain)")
    p.add_argument("--x", default="similarity")
    p.add_argument("--y", default="gain")
    p.add_argument("--plot", default=None, help="scatter PNG path")
    p.add_argument("--json", default=None, help="write the statistics as JSON")
    p.add_argument("--per-target", action="store_true")
    args = p.parse_args(argv)
    rows = analysis.read_results(args.csv)
    x, y, stats = analyse(rows, args.x, args.y, args.per_target)
    for group, s in stats.items():
        print(
            f"{group}: n={s['n']} pearson_r={s['pearson_r']:.6g} (p={s['pearson_p']:.4g}) "
            f"spearman_rho={s['spearman_rho']:.6g} "
            f"(p={s['spearman_p']:.4g}) kendall_tau={s['kendall_tau']:.6g} "
            f"(p={s['kendall_p']:.4g})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=2)
    if args.plot:
        s = stats["all"]
        analysis.scatter(
            x, y, args.plot, None, [r.get("target", "") for r in rows], args.x, args.y,
            f"rho={s['spearman_rho']:.3f}, tau={s['kendall_tau']:.3f} (n={s['n']})",
        )  # fmt: skip
        print(f"wrote {args.plot}", file=sys.stderr)
    return stats


if __name__ == "__main__":
    main()
