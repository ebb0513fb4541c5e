"""The demo's run engine: R runs side by side, one compiled program, honest accuracy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.demo import runs
from spot_jax.models.config import T5Config
from spot_jax.models.prompted import PROMPT_PATH, PromptedT5
from spot_jax.train import state as state_lib

CFG = T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
               num_encoder_layers=1, num_decoder_layers=1, relpos_buckets=8,
               relpos_max_distance=16, dtype="float32")  # fmt: skip


def _setup():
    model = PromptedT5(CFG, prompt_length=3)
    rng = np.random.default_rng(0)
    x = rng.integers(3, 32, size=(40, 6)).astype(np.int32)
    y = np.stack([x[:, 0], np.ones(40, np.int32)], 1)  # copy the first token, then EOS
    task = runs.TaskArrays("copy", x[:32], y[:32], x[32:], y[32:])
    batch = runs.features(x[:4], y[:4])
    params = state_lib.flatten_params(nn.unbox(model.init(jax.random.PRNGKey(0), batch)))
    return model, task, params


def test_runs_train_only_the_prompt_and_reuse_one_program():
    model, task, params = _setup()
    tuner = runs.prompt_tuner(model, params, learning_rate=0.3)
    inits = np.stack([np.asarray(params[PROMPT_PATH])] * 2)
    batches = runs.stack([task.batches(8, 4, s) for s in (0, 1)])
    curves = tuner.run({PROMPT_PATH: inits}, batches, task.validation(), eval_every=4)
    assert curves.accuracy.shape == (2, 3) and list(curves.steps) == [0, 4, 8]
    assert curves.trainable[PROMPT_PATH].shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(curves.trainable[PROMPT_PATH][:, 0], inits)
    # Different batch streams from one init give different prompts.
    assert not np.allclose(curves.final[PROMPT_PATH][0], curves.final[PROMPT_PATH][1])
    tuner.run({PROMPT_PATH: inits}, batches, task.validation(), eval_every=4)
    assert tuner._chunk._cache_size() == 1 and tuner._eval._cache_size() == 1


def test_teacher_forced_exact_match_equals_greedy_decoding():
    model, task, params = _setup()
    tuner = runs.prompt_tuner(model, params, learning_rate=0.3)
    prompt = np.asarray(params[PROMPT_PATH])
    val = task.validation()
    acc, _ = tuner._eval({PROMPT_PATH: prompt[None]}, jax.tree.map(lambda v: v[None], val))
    frozen = {k: v for k, v in params.items() if k != PROMPT_PATH}
    merged = state_lib.merge_params({PROMPT_PATH: jnp.asarray(prompt)}, frozen)
    tokens, _ = model.predict(merged, val, max_decode_length=2)
    greedy = np.all(np.asarray(tokens[:, -1]) == val["decoder_target_tokens"], axis=-1)
    assert float(acc[0]) == 100.0 * greedy.mean()


def test_encode_refuses_to_truncate():
    class Words:
        def encode(self, texts):
            return [[3 + len(w) for w in t.split()] for t in texts]

    assert runs.encode(["a bb"], Words(), 4).tolist() == [[4, 5, 1, 0]]
    with pytest.raises(ValueError, match="more than 3"):
        runs.encode(["a bb c"], Words(), 3)


def test_few_shot_subsets_are_seeded():
    _, task, _ = _setup()
    a, b, c = task.subset(8, 1), task.subset(8, 1), task.subset(8, 2)
    np.testing.assert_array_equal(a.train_inputs, b.train_inputs)
    assert not np.array_equal(a.train_inputs, c.train_inputs)
    assert len(a.train_inputs) == 8 and len(a.val_inputs) == len(task.val_inputs)
