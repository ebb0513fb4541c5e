"""The training core imports and takes a jitted train step with TensorFlow, TFDS and SeqIO
unimportable (DESIGN.md §5, the TF fence; the GPU machines have no TensorFlow)."""

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import sys
    # None in sys.modules makes any import of these names raise ImportError.
    for name in ("tensorflow", "seqio", "tensorflow_datasets"):
        sys.modules[name] = None

    import functools
    import importlib
    import pkgutil

    import spot_jax.models
    import spot_jax.train

    imported = []
    for package in (spot_jax.models, spot_jax.train):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
            imported.append(info.name)
    for needed in ("t5", "prompted", "prompts", "decoding", "trainer", "steps", "checkpoints",
                   "inference", "sharding", "optim", "losses", "state"):
        assert needed in imported, (needed, imported)

    import flax.linen as nn
    import jax
    import numpy as np
    from spot_jax.data import synthetic
    from spot_jax.models import config, prompted
    from spot_jax.train import optim, state, steps

    lengths = {"inputs": 16, "targets": 8}
    batch = synthetic.make_batch(4, lengths, 512)
    model = prompted.PromptedT5(config.named_config("tiny", dtype="float32"), prompt_length=5)
    init = jax.jit(lambda rng: state.flatten_params(nn.unbox(model.init(rng, batch))))
    params = init(jax.random.PRNGKey(0))
    trainable, frozen = optim.split_trainable(params, optim.PROMPT_REGEX)
    optimizer = optim.adafactor()
    train_state = state.create(trainable, optimizer)
    step = jax.jit(functools.partial(steps.train_step, model, optimizer))
    new_state, metrics = step(train_state, frozen, batch, jax.random.PRNGKey(1))
    assert int(new_state.step) == 1 and int(metrics["nonfinite"]) == 0, metrics
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    old = np.asarray(trainable[prompted.PROMPT_PATH])
    assert not np.array_equal(np.asarray(new_state.trainable[prompted.PROMPT_PATH]), old)

    leaked = [m for m in sys.modules
              if m.split(".")[0] in ("tensorflow", "seqio", "tensorflow_datasets")
              and sys.modules[m] is not None]
    assert not leaked, leaked
    print("core fence ok", float(metrics["loss"]))
    """
)


def test_core_imports_and_trains_without_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "core fence ok" in result.stdout
