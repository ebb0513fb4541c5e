"""One markdown report of a SPoT analysis: matrix, heatmap, embedding plot, correlation.

    python tools/report.py --out-dir report/ [--matrix m.csv] [--heatmap heat.png]
        [--embedding emb_pca.png ...] [--results results.csv] [--title T]

Writes OUT_DIR/report.md. Images are copied into OUT_DIR/figures/ (unless already under
OUT_DIR) and linked relatively, so the folder can be moved as a whole. With --results
(source,target,similarity,gain), the correlation is computed and its scatter drawn here.
"""

import argparse
import os
import shutil
from pathlib import Path

from spot_jax.spot import analysis, zero_shot


def _image(path: str, out_dir: Path) -> str:
    """Copies `path` into out_dir/figures when outside out_dir; returns its relative link."""
    src = Path(path).resolve()
    if not src.exists():
        raise SystemExit(f"image {path} does not exist")
    root = out_dir.resolve()
    if root not in src.parents:
        dest = root / "figures" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        src = dest
    return Path(os.path.relpath(src, root)).as_posix()


def _table(rows, cols, values, max_cols: int = 30) -> list[str]:
    cols = cols[:max_cols]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in zip(rows, values, strict=True):
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in row[: len(cols)]) + " |")
    return lines


def build(args) -> Path:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {args.title}", ""]
    if args.matrix:
        rows, cols, values = zero_shot.read_csv(args.matrix)
        md += ["## Matrix", "", f"Source: `{args.matrix}` ({len(rows)} x {len(cols)}).", ""]
        md += _table(rows, cols, values) + [""]
    if args.heatmap:
        md += ["## Heatmap", "", f"![heatmap]({_image(args.heatmap, out_dir)})", ""]
    if args.embedding:
        md += ["## Task embeddings", ""]
        for path in args.embedding:
            md += [f"![{Path(path).stem}]({_image(path, out_dir)})", ""]
    if args.results:
        rows = analysis.read_results(args.results)
        x = [float(r[args.x]) for r in rows]
        y = [float(r[args.y]) for r in rows]
        s = analysis.correlation(x, y)
        scatter = out_dir / "figures" / "transfer_correlation.png"
        scatter.parent.mkdir(parents=True, exist_ok=True)
        analysis.scatter(
            x, y, str(scatter), None, [r.get("target", "") for r in rows], args.x, args.y,
            f"rho={s['spearman_rho']:.3f}, tau={s['kendall_tau']:.3f}",
        )  # fmt: skip
        md += [
            "## Correlation of similarity and transfer",
            "",
            f"`{args.x}` vs `{args.y}` over {s['n']} source/target pairs from `{args.results}`.",
            "",
            "| statistic | value | p-value |",
            "|---|---|---|",
            f"| Pearson r | {s['pearson_r']:.4f} | {s['pearson_p']:.3g} |",
            f"| Spearman rho | {s['spearman_rho']:.4f} | {s['spearman_p']:.3g} |",
            f"| Kendall tau | {s['kendall_tau']:.4f} | {s['kendall_p']:.3g} |",
            "",
            f"![correlation]({_image(str(scatter), out_dir)})",
            "",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--title", default="SPoT analysis report")
    p.add_argument("--matrix", default=None, help="matrix CSV (similarity or zero-shot)")
    p.add_argument("--heatmap", default=None, help="heatmap PNG")
    p.add_argument("--embedding", nargs="*", default=[], help="embedding plot PNG(s)")
    p.add_argument("--results", default=None, help="CSV source,target,similarity,gain")
    p.add_argument("--x", default="similarity")
    p.add_argument("--y", default="gain")
    path = build(p.parse_args(argv))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
