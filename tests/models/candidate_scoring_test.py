"""Rank classification with one encoder pass per example equals T5X's (example, label) pairs."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import config, prompted
from spot_jax.train import ranking

INPUTS = np.array([[5, 6, 7, 1, 0, 0], [8, 9, 10, 11, 12, 1], [13, 1, 0, 0, 0, 0]], np.int32)
LABELS = np.array([[20, 1, 0], [21, 22, 1], [23, 1, 0], [24, 25, 1]], np.int32)


def _model(**overrides):
    cfg = dataclasses.replace(config.named_config("tiny", dtype="float32"), **overrides)
    return prompted.PromptedT5(cfg, prompt_length=4)


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True}])
def test_candidate_scores_equal_scores_of_the_repeated_pairs(overrides):
    model = _model(**overrides)
    pairs = {
        k: jnp.asarray(v)
        for k, v in ranking.candidate_batch({"encoder_input_tokens": INPUTS}, LABELS).items()
    }
    params = jax.jit(lambda r: nn.unbox(model.init(r, pairs)))(jax.random.PRNGKey(1))
    want = np.asarray(jax.jit(model.score)(params, pairs)).reshape(len(INPUTS), len(LABELS))
    got = np.asarray(jax.jit(model.score_candidates)(params, INPUTS, LABELS))
    assert got.shape == (len(INPUTS), len(LABELS))
    assert np.all(want < 0) and np.ptp(want) > 0
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)
    np.testing.assert_array_equal(
        ranking.choices(got.reshape(-1), len(LABELS)), np.argmax(want, axis=1)
    )


def test_candidate_scores_run_one_encoder_pass_per_example():
    model = _model()
    pairs = ranking.candidate_batch({"encoder_input_tokens": INPUTS}, LABELS)
    params = jax.jit(lambda r: nn.unbox(model.init(r, pairs)))(jax.random.PRNGKey(1))
    shared = jax.jit(model.score_candidates).lower(params, INPUTS, LABELS).compile()
    repeated = jax.jit(model.score).lower(params, pairs).compile()
    shared_flops = shared.cost_analysis()["flops"]
    repeated_flops = repeated.cost_analysis()["flops"]
    assert shared_flops < 0.75 * repeated_flops, (shared_flops, repeated_flops)
