"""Analysis helpers for the `tools/` scripts: 2-D projections of task embeddings (PCA, t-SNE
in numpy), rank correlation of similarity with transfer gain, labels and scatter plots."""

import csv
from collections.abc import Sequence

import numpy as np
from etils import epath


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of rows of `x` [N, D].

    Returns:
      (scores [N, k] = centred x projected on the top-k components, explained variance ratio
      [k]). Component signs are fixed so that each component's largest |loading| is positive.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k_eff = min(k, vt.shape[0])
    comps = vt[:k_eff]
    signs = np.sign(comps[np.arange(k_eff), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    scores = centred @ comps.T
    var = s**2
    ratio = var[:k_eff] / var.sum() if var.sum() > 0 else np.zeros(k_eff)
    if k_eff < k:  # fewer samples than components: pad with zeros
        scores = np.pad(scores, ((0, 0), (0, k - k_eff)))
        ratio = np.pad(ratio, (0, k - k_eff))
    return scores, ratio


def _conditional_p(dist2: np.ndarray, perplexity: float, tol: float = 1e-5) -> np.ndarray:
    """Row-wise Gaussian affinities whose entropy matches log(perplexity) (binary search)."""
    n = len(dist2)
    p = np.zeros((n, n))
    target = np.log(perplexity)
    for i in range(n):
        d = np.delete(dist2[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(100):
            w = np.exp(-(d - d.min()) * beta)
            sw = w.sum()
            h = np.log(sw) + beta * np.sum((d - d.min()) * w) / sw
            if abs(h - target) < tol:
                break
            if h > target:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = w / sw
    return p


def tsne(
    x: np.ndarray,
    perplexity: float = 30.0,
    n_iter: int = 500,
    learning_rate: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) of rows of `x` [N, D] to 2-D, in numpy.

    O(N²) per iteration: fine for a prompt library (tens to hundreds of tasks). Perplexity is
    clipped to (N - 1) / 3. PCA-initialised (scaled to std 1e-4) for reproducibility. The
    default learning rate is scikit-learn's 'auto', max(N / 12 / 4, 50).
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    if n < 3:
        return pca(x, 2)[0]
    if learning_rate is None:
        learning_rate = max(n / 12.0 / 4.0, 50.0)
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    sq = np.sum(x**2, 1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    p = _conditional_p(dist2, perplexity)
    p = (p + p.T) / (2 * n)
    p = np.maximum(p, 1e-12)
    y = pca(x, 2)[0]
    std = y.std()
    y = y / std * 1e-4 if std > 0 else np.random.default_rng(seed).normal(0, 1e-4, (n, 2))
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(n_iter):
        exaggeration = 12.0 if it < 100 else 1.0
        momentum = 0.5 if it < 100 else 0.8
        sy = np.sum(y**2, 1)
        num = 1.0 / (1.0 + np.maximum(sy[:, None] + sy[None, :] - 2 * y @ y.T, 0.0))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4.0 * (np.diag(pq.sum(1)) - pq) @ y
        same = np.sign(grad) == np.sign(velocity)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
        velocity = momentum * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y


# ---------------------------------------------------------------------------------------------
# Correlation of similarity with transfer.


def read_results(path: epath.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV with a header (e.g. source,target,similarity,gain)."""
    with epath.Path(path).open() as f:
        return list(csv.DictReader(f))


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson's r (SPoT's Fig. 5/8 statistic), Spearman's rho and Kendall's tau (tau-b; Su et
    al.'s), each with its two-sided p-value (scipy)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two equal-length series of at least 2 values, not {len(x)}")
    r, r_p = stats.pearsonr(x, y)
    rho, rho_p = stats.spearmanr(x, y)
    tau, tau_p = stats.kendalltau(x, y)
    return {
        "n": int(len(x)),
        "pearson_r": float(r),
        "pearson_p": float(r_p),
        "spearman_rho": float(rho),
        "spearman_p": float(rho_p),
        "kendall_tau": float(tau),
        "kendall_p": float(tau_p),
    }


def relative_error_reduction(score: float, baseline: float, best: float = 100.0) -> float:
    """SPoT's transfer gain: the share of the baseline's error that transfer removes,
    (score - baseline) / (best - baseline), scores on a 0-`best` scale."""
    if baseline >= best:
        raise ValueError(f"baseline {baseline} leaves no error to reduce (best {best})")
    return (score - baseline) / (best - baseline)


def scatter(
    x: np.ndarray,
    y: np.ndarray,
    path: str,
    labels: Sequence[str] | None = None,
    colours: Sequence[str] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> None:
    """A 2-D scatter saved as PNG; points coloured by `colours` (category names) with a
    legend, and annotated with `labels` when there are few."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = np.asarray(x, float), np.asarray(y, float)
    fig, ax = plt.subplots(figsize=(6, 5))
    if colours is None:
        ax.scatter(x, y, s=25)
    else:
        cats = sorted(set(colours))
        cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
        for c_i, cat in enumerate(cats):
            mask = np.array([c == cat for c in colours])
            ax.scatter(x[mask], y[mask], s=25, color=cmap(c_i % cmap.N), label=cat)
        ax.legend(fontsize=7, loc="best")
    if labels is not None and len(labels) <= 60:
        for xi, yi, name in zip(x, y, labels, strict=True):
            ax.annotate(name, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def entry_labels(lib, key: str | None, csv_path: str | None = None) -> dict[str, str]:
    """{entry name: label}: from a CSV (columns name,label; or first two columns) when given,
    else from each entry's meta[key] (e.g. 'task' or a 'family' field); missing -> 'unknown'."""
    names = lib.names()
    out = {n: "unknown" for n in names}
    if csv_path:
        with open(csv_path) as f:
            rows = list(csv.reader(f))
        if rows and rows[0][:2] in (["name", "label"], ["name", "family"], ["entry", "label"]):
            rows = rows[1:]
        for row in rows:
            if len(row) >= 2 and row[0] in out:
                out[row[0]] = row[1]
        return out
    if key:
        for e in lib.entries():
            value = e.meta.get(key)
            if value is not None:
                out[e.name] = str(value)
    return out
