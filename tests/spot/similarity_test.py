"""Each similarity metric equals its paper definition, computed here with plain loops."""

import math

import numpy as np
import pytest

from spot_jax.spot import similarity

RNG = np.random.default_rng(0)
P1 = RNG.normal(size=(5, 4)).astype(np.float32)
P2 = RNG.normal(size=(5, 4)).astype(np.float32) + 0.3
P3 = RNG.normal(size=(7, 4)).astype(np.float32)  # another prompt length


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / math.sqrt(float(a @ a) * float(b @ b)))


def avg_tokens_def(p, q):
    return cos(p.mean(0), q.mean(0))


def per_token_def(p, q):
    return sum(cos(a, b) for a in p for b in q) / (len(p) * len(q))


def e_concat_def(p, q):
    return 1 / (
        1 + math.sqrt(sum(float(x - y) ** 2 for x, y in zip(p.ravel(), q.ravel(), strict=True)))
    )


def e_avg_def(p, q):
    total = sum(math.sqrt(float(((a - b).astype(np.float64) ** 2).sum())) for a in p for b in q)
    return 1 / (1 + total / (len(p) * len(q)))


def c_concat_def(p, q):
    return cos(p.ravel(), q.ravel())


DEFINITIONS = {
    "avg_tokens": avg_tokens_def,
    "per_token": per_token_def,
    "e_concat": e_concat_def,
    "e_avg": e_avg_def,
    "c_concat": c_concat_def,
    "c_avg": per_token_def,  # Su's C_average is the all-pairs mean cosine
}


@pytest.mark.parametrize("metric", list(similarity.METRICS))
def test_metric_equals_its_definition(metric):
    fn = similarity.get(metric)
    want = DEFINITIONS[metric](P1, P2)
    assert fn(P1, P2) == pytest.approx(want, rel=1e-6, abs=1e-9)
    # Symmetric, as every one of these metrics is.
    assert fn(P2, P1) == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("metric", ["avg_tokens", "per_token", "e_avg", "c_avg"])
def test_per_token_metrics_take_different_lengths(metric):
    want = DEFINITIONS[metric](P1, P3)
    assert similarity.get(metric)(P1, P3) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("metric", ["e_concat", "c_concat"])
def test_concat_metrics_refuse_different_shapes(metric):
    with pytest.raises(ValueError, match="one shape"):
        similarity.get(metric)(P1, P3)


def test_identical_prompts_score_as_identical():
    for metric in ("avg_tokens", "e_concat", "c_concat"):
        assert similarity.get(metric)(P1, P1) == pytest.approx(1.0, abs=1e-6), metric
    # The all-pairs metrics compare each token with every other one too: identical prompts
    # still score as high as any prompt can against P1.
    for metric in ("per_token", "e_avg", "c_avg"):
        fn = similarity.get(metric)
        assert fn(P1, P1) >= max(fn(P1, P2), fn(P1, P1 + 1.0)), metric
    # A one-token prompt (L = 1) reduces the all-pairs metrics to exact identity.
    assert similarity.e_avg(P1[:1], P1[:1]) == pytest.approx(1.0)
    assert similarity.c_avg(P1[:1], P1[:1]) == pytest.approx(1.0)


def test_matrix_is_symmetric_with_the_pairwise_values():
    prompts = [P1, P2, P1 * 2 + 1]
    for metric in similarity.METRICS:
        m = similarity.matrix(prompts, metric)
        np.testing.assert_allclose(m, m.T)
        assert m[0, 1] == pytest.approx(similarity.get(metric)(P1, P2))
        assert m[1, 2] == pytest.approx(similarity.get(metric)(P2, prompts[2]))


def test_rank_is_best_first():
    ranked = similarity.rank(P1, {"far": P2 + 5, "same": P1.copy(), "near": P1 + 0.01}, "e_concat")
    assert [n for n, _ in ranked] == ["same", "near", "far"]
    assert ranked[0][1] == pytest.approx(1.0)


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="choose one of"):
        similarity.get("bogus")


def test_heatmap_is_written_in_cluster_order(tmp_path):
    sim = similarity.matrix([P1, P1 + 0.01, P2, P2 + 0.01], "e_concat")
    order = similarity.cluster_order(sim)
    # Near-duplicates are leaves next to each other.
    assert abs(order.index(0) - order.index(1)) == 1 and abs(order.index(2) - order.index(3)) == 1
    path = tmp_path / "h.png"
    similarity.plot_heatmap(sim, ["a", "a2", "b", "b2"], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
