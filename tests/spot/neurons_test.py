"""ON: the binary-cosine overlap of activated FFN neurons, as Su et al. define it."""

import jax
import numpy as np
import pytest

from spot_jax.models import config, prompted
from spot_jax.spot import neurons
from spot_jax.train import state


def test_overlap_is_the_cosine_of_binary_vectors():
    rng = np.random.default_rng(0)
    a1, a2 = rng.random((2, 3, 16)) > 0.5, rng.random((2, 3, 16)) > 0.4
    per_input = [
        (x & y).sum() / np.sqrt(x.sum() * y.sum())
        for x, y in zip(a1.reshape(2, -1), a2.reshape(2, -1), strict=True)
    ]
    assert neurons.overlap(a1, a2) == pytest.approx(np.mean(per_input))
    assert neurons.overlap(a1, a1) == pytest.approx(1.0)
    window = [
        (x & y).sum() / np.sqrt(x.sum() * y.sum())
        for x, y in zip(a1[:, 1:], a2[:, 1:], strict=True)
    ]
    assert neurons.overlap(a1, a2, slice(1, None)) == pytest.approx(np.mean(window))
    assert neurons.overlap(np.zeros_like(a1), a2) == 0.0


def test_activations_have_one_gate_row_per_layer_of_the_probed_stack():
    cfg = config.T5Config(
        vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
        num_encoder_layers=2, num_decoder_layers=3, dtype="float32",
    )  # fmt: skip
    model = prompted.PromptedT5(cfg, prompt_length=4)
    batch = {k: np.ones((1, 2), np.int32) for k in
             ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")}  # fmt: skip
    params = state.flatten_params(jax.tree.map(np.asarray, model.module.init(
        jax.random.PRNGKey(0), *batch.values())["params"]))  # fmt: skip
    params = {k: getattr(v, "value", v) for k, v in params.items()}
    rng = np.random.default_rng(1)
    p1, p2 = rng.normal(size=(2, 4, 8)).astype(np.float32)
    a1 = neurons.activations(model, params, p1)
    assert a1.shape == (1, 3, 16) and a1.dtype == bool
    # The pattern depends on the prompt, and on the inputs when given.
    a2 = neurons.activations(model, params, p2)
    assert not np.array_equal(a1, a2)
    enc = neurons.activations(model, params, p1, where="encoder")
    assert enc.shape == (1, 2, 16)
    m = neurons.on_matrix(model, params, [p1, p2, p1], inputs=np.array([[5, 1], [7, 1]]))
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 2] == pytest.approx(1.0) and m[0, 1] < 1.0


def test_a_multi_task_run_is_refused_with_what_to_measure_instead(tmp_path):
    import json

    from fake_runs import fake_run

    from spot_jax.spot import runs as runs_lib

    run = fake_run(tmp_path, "multi", "spot_multitask__a__b", seed=0)
    model = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**model, "multi_task_prompt": "add"}))
    with pytest.raises(runs_lib.LibraryError, match="library add --task-index"):
        neurons.frozen_model(run)
