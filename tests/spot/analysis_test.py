"""The analysis helpers and tools/: PCA and t-SNE, similarity-vs-transfer correlation, the
similarity heatmap and embedding plots of a library, and the markdown report."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from spot_jax.spot import analysis, zero_shot

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pca_of_known_data():
    # Points on a line along v (plus a constant offset): one component explains everything.
    v = np.array([3.0, 4.0, 0.0]) / 5.0
    t = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = t[:, None] * v + np.array([1.0, 1.0, 1.0])
    scores, ratio = analysis.pca(x, 2)
    np.testing.assert_allclose(scores[:, 0], t, atol=1e-12)  # sign: largest loading positive
    np.testing.assert_allclose(scores[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    # Axis-aligned data with variances 9 and 1: scores are the centred coordinates.
    x = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    scores, ratio = analysis.pca(x, 2)
    np.testing.assert_allclose(np.abs(scores), np.abs(x), atol=1e-12)
    np.testing.assert_allclose(ratio, [0.9, 0.1], atol=1e-12)
    # Fewer samples than components: zero padding.
    scores, ratio = analysis.pca(np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]), 3)
    assert scores.shape == (2, 3) and ratio[2] == 0.0  # no third component: padding
    # Two centred points span one direction; the second's share is rounding (LAPACK's SVD gave
    # 5e-35 on one machine, 0 on another).
    np.testing.assert_allclose(ratio[:2], [1.0, 0.0], atol=1e-12)


def test_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (8, 10)), rng.normal(5, 0.1, (8, 10))])
    y = analysis.tsne(x, perplexity=4, n_iter=300)
    assert y.shape == (16, 2) and np.all(np.isfinite(y))
    centres = [y[:8].mean(0), y[8:].mean(0)]
    radius = max(np.linalg.norm(y[:8] - centres[0], axis=1).max(),
                 np.linalg.norm(y[8:] - centres[1], axis=1).max())  # fmt: skip
    assert np.linalg.norm(centres[0] - centres[1]) > 2 * radius
    # Deterministic for a seed.
    np.testing.assert_array_equal(y, analysis.tsne(x, perplexity=4, n_iter=300))


def _write_results(path, sim, gain, targets=None):
    targets = targets or ["t"] * len(sim)
    lines = ["source,target,similarity,gain"]
    lines += [
        f"s{i},{t},{s},{g}" for i, (t, s, g) in enumerate(zip(targets, sim, gain, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")


def test_correlation_tool(tmp_path, capsys):
    tool = _tool("transfer_correlation")
    # A monotone (nonlinear) relation: rho = tau = 1.
    sim = np.linspace(0.1, 0.9, 9)
    _write_results(tmp_path / "mono.csv", sim, np.exp(3 * sim) - 2)
    png, js = tmp_path / "scatter.png", tmp_path / "stats.json"
    stats_ = tool.main([str(tmp_path / "mono.csv"), "--plot", str(png), "--json", str(js)])
    assert stats_["all"]["spearman_rho"] == pytest.approx(1.0)
    assert stats_["all"]["kendall_tau"] == pytest.approx(1.0)
    assert png.stat().st_size > 0 and json.loads(js.read_text())["all"]["n"] == 9
    assert "spearman_rho=1" in capsys.readouterr().out
    # A hand example: d = [-1, 1, -1, 1, 0] -> rho = 1 - 6*4/120 = 0.8; 8 concordant and 2
    # discordant pairs -> tau = 0.6; p-values as scipy's.
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    _write_results(tmp_path / "hand.csv", x, y, ["u", "u", "u", "v", "v"])
    s = tool.main([str(tmp_path / "hand.csv"), "--per-target"])
    assert s["all"]["spearman_rho"] == pytest.approx(0.8)
    assert s["all"]["kendall_tau"] == pytest.approx(0.6)
    assert s["all"]["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert s["all"]["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert set(s) == {"all", "u"}  # per-target groups need >= 3 rows
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "hand.csv"), "--y", "nope"])


@pytest.fixture
def fake_lib(tmp_path):
    """A library written by hand: two task families, clearly apart."""
    rng = np.random.default_rng(0)
    root = tmp_path / "lib"
    for i in range(6):
        fam = "nli" if i < 3 else "qa"
        e = root / f"task{i}"
        e.mkdir(parents=True)
        base = np.ones((4, 8)) * (1.0 if fam == "nli" else -1.0)
        np.save(e / "prompt.npy", (base + rng.normal(0, 0.1, (4, 8))).astype(np.float32))
        np.save(e / "embedding.npy", (base + rng.normal(0, 0.1, (4, 8))).astype(np.float32))
        (e / "meta.json").write_text(json.dumps({"task": f"task{i}", "family": fam}))
    return root


def test_heatmap_and_embedding_tools(fake_lib, tmp_path):
    heat, csv = tmp_path / "heat.png", tmp_path / "m.csv"
    _tool("similarity_heatmap").main(
        ["--library", str(fake_lib), "--metric", "e_avg", "--family-key", "family",
         "--out", str(heat), "--csv", str(csv)]
    )  # fmt: skip
    names, cols, sim = zero_shot.read_csv(csv)
    assert names == cols == [f"task{i}" for i in range(6)] and heat.stat().st_size > 0
    assert sim[0, 1] > sim[0, 4]  # same family more similar
    fams = tmp_path / "fam.csv"
    fams.write_text("name,family\ntask0,x\n")
    labels = analysis.entry_labels(__import__("spot_jax.spot.library").spot.library.Library(
        fake_lib), "family", str(fams))  # fmt: skip
    assert labels["task0"] == "x" and labels["task1"] == "unknown"
    prefix = tmp_path / "emb"
    _tool("embed_plot").main(
        ["--library", str(fake_lib), "--out-prefix", str(prefix), "--label-key", "family",
         "--perplexity", "2"]
    )  # fmt: skip
    for method in ("pca", "tsne"):
        assert Path(f"{prefix}_{method}.png").stat().st_size > 0
        rows = Path(f"{prefix}_{method}.csv").read_text().splitlines()
        assert rows[0] == "name,label,x,y" and len(rows) == 7
    pca_x = [float(r.split(",")[2]) for r in Path(f"{prefix}_pca.csv").read_text().splitlines()[1:]]
    assert np.sign(pca_x[0]) == np.sign(pca_x[1]) != np.sign(pca_x[4])  # families split on PC1


def test_report(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "m.csv").write_text("source,a,b\na,1,0.5\nb,0.25,1\n")
    for name in ("heat", "emb_pca"):
        analysis.scatter([0, 1], [1, 0], str(work / f"{name}.png"))
    _write_results(work / "r.csv", [0.1, 0.2, 0.3, 0.4], [1, 2, 4, 3])
    out = tmp_path / "report"
    path = _tool("report").main(
        ["--out-dir", str(out), "--matrix", str(work / "m.csv"),
         "--heatmap", str(work / "heat.png"), "--embedding", str(work / "emb_pca.png"),
         "--results", str(work / "r.csv")]
    )  # fmt: skip
    text = Path(path).read_text()
    for section in ("## Matrix", "## Heatmap", "## Task embeddings", "## Correlation"):
        assert section in text
    assert "| a | 1 | 0.5 |" in text and "| Spearman rho | 0.8000 |" in text
    links = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]
    assert len(links) == 3
    for link in links:
        assert not Path(link).is_absolute() and (out / link).is_file()
