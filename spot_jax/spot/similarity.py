"""Prompt (task-embedding) similarity: SPoT's two metrics and Su et al.'s four.

All metrics take two prompts `[L1, H]`, `[L2, H]` and return a similarity (higher = more
alike). With p¹_i, p²_j the tokens (rows) and vec() the row-major flattening:

    avg_tokens  (SPoT)   cos(mean_i p¹_i, mean_j p²_j)
    per_token   (SPoT)   1/(L1 L2) Σ_i Σ_j cos(p¹_i, p²_j)       (all pairs, not aligned ones)
    e_concat    (Su)     1 / (1 + ‖vec(P¹) − vec(P²)‖₂)
    e_avg       (Su)     1 / (1 + 1/(L1 L2) Σ_i Σ_j ‖p¹_i − p²_j‖₂)
    c_concat    (Su)     cos(vec(P¹), vec(P²))
    c_avg       (Su)     1/(L1 L2) Σ_i Σ_j cos(p¹_i, p²_j)

SPoT's per-token average cosine and Su's C_average are the same formula; both names are kept
so results read in either paper's terms. Su's code hard-codes l = 100; here L is the prompt's.
The concat metrics need equal shapes. ON (activated-neuron overlap) needs the model and lives
in `neurons.py`.
"""

from collections.abc import Callable, Sequence

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]
_EPS = 1e-12


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), _EPS))


def _rows_cos(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Cosine of every row pair: [L1, H], [L2, H] -> [L1, L2]."""
    n1 = p1 / np.maximum(np.linalg.norm(p1, axis=-1, keepdims=True), _EPS)
    n2 = p2 / np.maximum(np.linalg.norm(p2, axis=-1, keepdims=True), _EPS)
    return n1 @ n2.T


def _check(p1: np.ndarray, p2: np.ndarray, same_shape: bool = False):
    p1, p2 = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
    if p1.ndim != 2 or p2.ndim != 2 or p1.shape[-1] != p2.shape[-1]:
        raise ValueError(
            f"prompts must be [L, H] of one width H; got {list(p1.shape)} and {list(p2.shape)}"
        )
    if same_shape and p1.shape != p2.shape:
        raise ValueError(
            f"concat metrics need prompts of one shape; got {list(p1.shape)} and "
            f"{list(p2.shape)} (use a per-token metric)"
        )
    return p1, p2


def avg_tokens(p1: np.ndarray, p2: np.ndarray) -> float:
    """SPoT's Cosine Similarity of Average Tokens: cos of the mean tokens [H], [H]."""
    p1, p2 = _check(p1, p2)
    return _cos(p1.mean(axis=0), p2.mean(axis=0))


def per_token(p1: np.ndarray, p2: np.ndarray) -> float:
    """SPoT's Per-token Average Cosine Similarity: the mean of the [L1, L2] cosine matrix."""
    p1, p2 = _check(p1, p2)
    return float(_rows_cos(p1, p2).mean())


def e_concat(p1: np.ndarray, p2: np.ndarray) -> float:
    """Su et al.'s E_concat: 1 / (1 + Euclidean distance of the flattened prompts)."""
    p1, p2 = _check(p1, p2, same_shape=True)
    return float(1.0 / (1.0 + np.linalg.norm((p1 - p2).ravel())))


def e_avg(p1: np.ndarray, p2: np.ndarray) -> float:
    """Su et al.'s E_average: 1 / (1 + mean Euclidean distance over all L1 x L2 token pairs)."""
    p1, p2 = _check(p1, p2)
    # ‖a − b‖² = ‖a‖² + ‖b‖² − 2ab, clipped at 0 against rounding for identical rows.
    sq = (p1**2).sum(-1)[:, None] + (p2**2).sum(-1)[None, :] - 2.0 * p1 @ p2.T
    return float(1.0 / (1.0 + np.sqrt(np.maximum(sq, 0.0)).mean()))


def c_concat(p1: np.ndarray, p2: np.ndarray) -> float:
    """Su et al.'s C_concat: cosine of the flattened prompts."""
    p1, p2 = _check(p1, p2, same_shape=True)
    return _cos(p1.ravel(), p2.ravel())


def c_avg(p1: np.ndarray, p2: np.ndarray) -> float:
    """Su et al.'s C_average: mean cosine over all L1 x L2 token pairs (= SPoT's per_token)."""
    return per_token(p1, p2)


METRICS: dict[str, Metric] = {
    "avg_tokens": avg_tokens,
    "per_token": per_token,
    "e_concat": e_concat,
    "e_avg": e_avg,
    "c_concat": c_concat,
    "c_avg": c_avg,
}
# Every metric above is symmetric in its arguments.
SYMMETRIC = frozenset(METRICS)


def get(metric: str) -> Metric:
    """The metric function by name; a clear error lists the names."""
    if metric not in METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; choose one of {', '.join(METRICS)} (or 'on', which "
            "needs the model: see `spot-jax library similarity --help`)"
        )
    return METRICS[metric]


def matrix(prompts: Sequence[np.ndarray], metric: str) -> np.ndarray:
    """Pairwise similarity [N, N] of N prompts (each pair computed once; symmetric)."""
    fn = get(metric)
    n = len(prompts)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = fn(prompts[i], prompts[j])
    return out


def rank(
    target: np.ndarray, candidates: dict[str, np.ndarray], metric: str
) -> list[tuple[str, float]]:
    """(name, similarity to `target`) of each candidate, most similar first (ties by name)."""
    fn = get(metric)
    scores = [(name, fn(prompt, target)) for name, prompt in candidates.items()]
    # sorted() has no order with a NaN among the keys: it would silently misplace every score.
    bad = [name for name, score in scores if not np.isfinite(score)]
    if bad:
        raise ValueError(f"{metric} is not finite for {', '.join(bad)}: a NaN/inf prompt?")
    return sorted(scores, key=lambda x: (-x[1], x[0]))


def cluster_order(sim: np.ndarray) -> list[int]:
    """Leaf order of average-linkage clustering on the distance max(sim) - sim."""
    if len(sim) < 3:
        return list(range(len(sim)))
    from scipy.cluster import hierarchy
    from scipy.spatial import distance

    dist = sim.max() - sim
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    linkage = hierarchy.linkage(distance.squareform(dist, checks=False), method="average")
    return [int(i) for i in hierarchy.leaves_list(linkage)]


def plot_heatmap(sim: np.ndarray, names: Sequence[str], path: str, title: str = "") -> None:
    """A heatmap of `sim` with rows/columns in clustering order, saved as PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    order = cluster_order(sim)
    sim = sim[np.ix_(order, order)]
    labels = [names[i] for i in order]
    size = max(4.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
