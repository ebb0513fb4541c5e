"""Fresh init: by default the model's own; with `init_as_scanned` an unscanned model is drawn as
its scanned twin (same weights as the scanned model, and a program whose random draws do not
grow with depth: what made T5 1.1 base's init compile for minutes on a GPU)."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from spot_jax import axes
from spot_jax.models import config, prompted
from spot_jax.train import fresh_init, initial_params, sharding, state

LENGTHS = {"inputs": 16, "targets": 8}


def _zeros_batch(rows: int) -> dict:
    """Token ids of the shapes to initialise for (an init reads no values)."""
    ids = lambda n: jax.numpy.zeros((rows, n), "int32")  # noqa: E731
    targets = LENGTHS["targets"]
    return {
        "encoder_input_tokens": ids(LENGTHS["inputs"]),
        "decoder_input_tokens": ids(targets),
        "decoder_target_tokens": ids(targets),
    }


def _build(model, mesh, as_scanned=True):
    params, _ = initial_params.build_params(
        model,
        mesh,
        axes.standard_rules(),
        batch_size=8,
        feature_lengths=LENGTHS,
        initial_checkpoint_path=None,
        seed=3,
        init_as_scanned=as_scanned,
    )
    return params


@pytest.mark.parametrize(
    "overrides",
    [{}, {"relpos_per_layer": True}, {"frozen_dtype": "bfloat16"}],
    ids=["t5_1_1", "relpos_per_layer", "bf16_frozen"],
)
def test_unscanned_and_scanned_models_start_from_the_same_weights(overrides):
    cfg = config.named_config("tiny", dtype="float32", **overrides)
    mesh = sharding.make_mesh(2)
    plain = _build(prompted.PromptedT5(cfg, prompt_length=4, max_segments=2), mesh)
    scanned = _build(
        prompted.PromptedT5(
            dataclasses.replace(cfg, scan_layers=True), prompt_length=4, max_segments=2
        ),
        mesh,
    )
    cut = prompted.unstack_flat(scanned)
    assert cut.keys() == plain.keys()
    assert any(k.startswith("encoder/layers_1/") for k in plain)
    for name, value in plain.items():
        assert value.dtype == cut[name].dtype, name
        assert value.sharding.is_equivalent_to(cut[name].sharding, value.ndim), name
        np.testing.assert_array_equal(np.asarray(value), np.asarray(cut[name]), err_msg=name)
    # Layers differ from one another (each drew its own keys), as a fresh init's must.
    q = "encoder/layers_{}/attention/query/kernel"
    assert not np.array_equal(np.asarray(plain[q.format(0)]), np.asarray(plain[q.format(1)]))


def _random_draws(num_layers: int) -> int:
    cfg = config.named_config(
        "tiny", dtype="float32", num_encoder_layers=num_layers, num_decoder_layers=num_layers
    )
    model = prompted.PromptedT5(cfg, prompt_length=4)
    init = fresh_init.frozen_init(model, _zeros_batch(2), as_scanned=True)
    text = jax.jit(init).lower(jax.random.PRNGKey(0)).as_text()
    return text.count("call @_threefry_split") + text.count("call @_threefry_fold_in")


def test_the_init_programs_random_draws_do_not_grow_with_depth():
    assert _random_draws(2) == _random_draws(6) > 0


def test_the_default_is_the_models_own_init():
    cfg = config.named_config("tiny", dtype="float32")
    model = prompted.PromptedT5(cfg, prompt_length=4)
    mesh = sharding.make_mesh(2)
    params = _build(model, mesh, as_scanned=False)
    rng_init, _ = jax.random.split(jax.random.PRNGKey(3))  # build_params' split of its seed
    flat = state.flatten_params(nn.unbox(jax.jit(model.init)(rng_init, _zeros_batch(8))))
    flat.pop(prompted.PROMPT_PATH)
    assert flat.keys() == params.keys() - {prompted.PROMPT_PATH}
    for name, value in flat.items():
        np.testing.assert_array_equal(np.asarray(params[name]), value, err_msg=name)
    # ... and differs from the scanned twin's draw.
    twin = _build(model, mesh, as_scanned=True)
    q = "encoder/layers_0/attention/query/kernel"
    assert not np.array_equal(np.asarray(params[q]), np.asarray(twin[q]))


def _cuda_program(init) -> str:
    """StableHLO of `init` lowered for NVIDIA GPUs (no GPU needed)."""
    return jax.export.export(jax.jit(init), platforms=["cuda"])(jax.random.PRNGKey(0)).mlir_module()


def test_the_init_draws_threefry_bits_with_one_gpu_kernel_per_call(monkeypatch):
    cfg = config.named_config("tiny", dtype="float32")
    model = prompted.PromptedT5(cfg, prompt_length=4)
    init = fresh_init.frozen_init(model, _zeros_batch(2))
    inlined = _cuda_program(init)
    with fresh_init.gpu_threefry_kernels():
        kernels = _cuda_program(init)
    assert "cu_threefry2x32" not in inlined  # JAX's default: the rounds inlined
    assert "cu_threefry2x32" in kernels  # a kernel per draw (one function per shape)
    assert kernels.count("stablehlo.shift_left") < inlined.count("stablehlo.shift_left") / 10
    # build_params traces its init within.
    entered = []
    real = fresh_init.gpu_threefry_kernels

    def spy():
        entered.append(True)
        return real()

    monkeypatch.setattr(fresh_init, "gpu_threefry_kernels", spy)
    _build(model, sharding.make_mesh(2), as_scanned=False)
    assert entered
