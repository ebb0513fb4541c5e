"""The params a job starts from: frozen weights (restored, or a seeded init) and the prompt.

Training, evaluation, inference and the analysis tools all build their model's params here:
flat `{'encoder/layers_0/...': array}` dicts, each array created directly in its sharding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spot_jax import axes
from spot_jax.models import prompts
from spot_jax.models.prompted import PromptedT5, is_prompt_path
from spot_jax.train import fresh_init, frozen_checkpoint, sharding
from spot_jax.train import state as state_lib


def build_params(
    model: PromptedT5,
    mesh,
    rules,
    *,
    batch_size: int,
    feature_lengths: dict[str, int],
    initial_checkpoint_path: str | None,
    seed: int,
    init_as_scanned: bool = False,
):
    """All params, flat and sharded: frozen weights restored (or seeded init) + initial prompt.

    `init_as_scanned`: a fresh unscanned model is drawn as its scanned twin
    (`fresh_init.frozen_init`: fast to compile at depth, other values than its own init).

    Returns:
      (flat params, flat shardings).
    """
    per_device = max(1, batch_size // mesh.shape[axes.DATA]) * mesh.shape[axes.DATA]
    boxed = model.abstract_params(per_device, feature_lengths["inputs"], feature_lengths["targets"])
    shardings = state_lib.flatten_params(sharding.logical_shardings(boxed, mesh, rules))
    abstract = state_lib.flatten_params(nn.unbox(boxed))
    abstract = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
        for k, v in abstract.items()
    }
    rng_init, rng_prompt = jax.random.split(jax.random.PRNGKey(seed))
    # Both branches make the frozen weights in this dtype directly (read or created in it),
    # so a bf16 XXL never holds all its float32 weights at once.
    frozen_dtype = model.config.frozen_dtype
    if initial_checkpoint_path:
        model_abstract = {
            k: jax.ShapeDtypeStruct(v.shape, frozen_dtype or v.dtype, sharding=v.sharding)
            for k, v in abstract.items()
            if not is_prompt_path(k)
        }
        params = frozen_checkpoint.restore_frozen(
            initial_checkpoint_path, model_abstract, model.config
        )
    else:
        # Seeded fresh init, created directly in its shardings.
        ids = lambda n: jnp.zeros((per_device, n), jnp.int32)  # noqa: E731
        fake = {
            "encoder_input_tokens": ids(feature_lengths["inputs"]),
            "decoder_input_tokens": ids(feature_lengths["targets"]),
            "decoder_target_tokens": ids(feature_lengths["targets"]),
        }
        init = fresh_init.frozen_init(model, fake, as_scanned=init_as_scanned)
        out_shardings = {k: v for k, v in shardings.items() if not is_prompt_path(k)}
        with sharding.active(mesh), fresh_init.gpu_threefry_kernels():
            params = jax.jit(init, out_shardings=out_shardings)(rng_init)
    if model.prompt_length:
        # The input prompt (a multi-task model's shared prompt) from PROMPT_INIT; the others
        # (per-layer prompts, task prompts): prompt-tuning's U[0, 0.5), each its own key.
        main = model.input_prompt_path
        params[main] = initial_prompt(model, params, rng_prompt, shardings[main])
        others = sorted(k for k in abstract if k != main and is_prompt_path(k))
        for i, name in enumerate(others):
            draw = prompts.random_uniform()(
                jax.random.fold_in(rng_prompt, i + 1), abstract[name].shape
            )
            params[name] = jax.device_put(np.asarray(draw, np.float32), shardings[name])
    return params, shardings


def initial_prompt(model: PromptedT5, params, rng, prompt_sharding) -> jax.Array:
    """Runs the prompt initialiser; those that need it get the frozen embedding table."""
    init = model.prompt_init or prompts.random_uniform()
    shape = model.input_prompt_shape
    kwargs = {}
    if getattr(init, "needs_embeddings", False):
        table = params["token_embedder/embedding"]
        kwargs["embeddings"] = sharding.to_host(table, table.sharding.mesh).astype(np.float32)
    prompt = np.asarray(init(rng, shape, jnp.float32, **kwargs), np.float32)
    return jax.device_put(prompt, prompt_sharding)
