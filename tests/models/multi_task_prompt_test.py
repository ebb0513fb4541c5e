"""Multi-task prompts (prompt-tuning's extended/multitask_prompts.py): a shared prompt combined
with each task's own, the task named by the input's first token.

Checked against the single-prompt model: a multi-task model on `[<extra_id_i>, text]` computes
what the single-prompt model computes on `text` with the combined prompt (shared + task i, or
shared then task i), row by row, in training, scoring and decoding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_padding_test import _batch
from flax import traverse_util

from spot_jax.models import config, multi_task_prompt, prompted
from spot_jax.train import state as state_lib

P = 4
CFG = config.named_config("tiny", dtype="float32")
SHARED, TASKS = prompted.SHARED_PROMPT_PATH, prompted.TASK_PROMPTS_PATH


def _model(combine="add", num_tasks=3, task_length=0, cfg=CFG, features=0, **kw):
    return prompted.PromptedT5(
        cfg,
        prompt_length=P,
        multi_task_prompt=combine,
        num_tasks=num_tasks,
        task_prompt_length=task_length,
        shared_prompt_features=features,
        **kw,
    )


def _init(model, batch):
    return jax.jit(lambda r: nn.unbox(model.init(r, batch)))(jax.random.PRNGKey(0))


def _flat(params):
    return traverse_util.flatten_dict(params, sep="/")


def _tasked(batch, task_ids):
    """The batch with each row's task sentinel leading its inputs."""
    first = np.asarray([multi_task_prompt.TASK_INDEX_VOCAB - 1 - t for t in task_ids], np.int32)
    tokens = jnp.concatenate([first[:, None], batch["encoder_input_tokens"]], axis=1)
    return {**batch, "encoder_input_tokens": tokens}


def _single(params, prompt):
    """The single-prompt model's params: the frozen ones of `params` and this [P, H] prompt."""
    flat = {k: v for k, v in _flat(params).items() if not prompted.is_prompt_path(k)}
    flat[prompted.PROMPT_PATH] = jnp.asarray(prompt)
    return traverse_util.unflatten_dict(flat, sep="/")


def _combined(flat, combine, task):
    """Task `task`'s whole prompt, written out as prompt-tuning's combination functions say."""
    shared, row = np.asarray(flat[SHARED]), np.asarray(flat[TASKS][task])
    h = CFG.emb_dim
    if combine == "project":  # each shared row through the task's affine map
        h_s = shared.shape[1]
        kernel, bias = row[: h_s * h].reshape(h_s, h), row[h_s * h :]
        return np.stack([shared[i] @ kernel + bias for i in range(P)])
    if combine == "concat_features":  # the shared columns, then the task's
        return np.concatenate([shared, row.reshape(P, -1)], axis=1)
    rows = row.reshape(-1, h)
    return shared + rows if combine == "add" else np.concatenate([shared, rows])


H = CFG.emb_dim
SPLITS = {  # combine: (task_length, shared_features, shared shape, task row size)
    "add": (0, 0, (P, H), P * H),
    "concat": (1, 0, (P - 1, H), 1 * H),
    "concat_features": (0, 3, (P, 3), P * (H - 3)),
    "project": (0, 2, (P, 2), 2 * H + H),
}


@pytest.mark.parametrize("combine", list(SPLITS))
def test_each_row_gets_its_tasks_combined_prompt(combine):
    batch = _batch()
    tasks = [2, 0, 1, 2]
    task_length, features, shared_shape, row_size = SPLITS[combine]
    model = _model(combine, task_length=task_length, features=features)
    tasked = _tasked(batch, tasks)
    params = _init(model, tasked)
    flat = _flat(params)
    assert flat[SHARED].shape == shared_shape
    assert flat[TASKS].shape == (3, row_size)
    got = jax.jit(model.logits)(params, tasked)
    single = prompted.PromptedT5(CFG, prompt_length=P)
    for r, task in enumerate(tasks):
        one = {k: v[r : r + 1] for k, v in batch.items()}
        want = jax.jit(single.logits)(_single(params, _combined(flat, combine, task)), one)
        np.testing.assert_allclose(got[r : r + 1], want, rtol=1e-5, atol=1e-5)


def test_scoring_and_decoding_read_the_task_too():
    batch = _batch()
    model = _model("add")
    tasked = _tasked(batch, [1, 1, 1, 1])
    params = _init(model, tasked)
    single = prompted.PromptedT5(CFG, prompt_length=P)
    plain = _single(params, _combined(_flat(params), "add", 1))
    np.testing.assert_allclose(
        jax.jit(model.score)(params, tasked), jax.jit(single.score)(plain, batch), rtol=1e-5
    )
    candidates = batch["decoder_target_tokens"][:2]
    np.testing.assert_allclose(
        model.score_candidates(params, tasked["encoder_input_tokens"], candidates),
        single.score_candidates(plain, batch["encoder_input_tokens"], candidates),
        rtol=1e-5,
        atol=1e-5,
    )
    got, _ = model.predict(params, tasked, max_decode_length=5)
    want, _ = single.predict(plain, batch, max_decode_length=5)
    np.testing.assert_array_equal(got, want)


def test_gradients_reach_the_shared_prompt_and_only_the_tasks_in_the_batch():
    batch = _batch()
    model = _model("concat", num_tasks=4, task_length=2)
    tasked = _tasked(batch, [0, 2, 0, 2])
    params = _init(model, tasked)
    grads = _flat(jax.jit(jax.grad(lambda p: model.loss(p, tasked)[0]))(params))
    assert np.abs(np.asarray(grads[SHARED])).sum() > 0
    used = np.abs(np.asarray(grads[TASKS])).sum(axis=1)
    assert used[0] > 0 and used[2] > 0 and used[1] == 0 and used[3] == 0


def test_a_row_of_no_known_task_gets_no_task_prompt_and_the_host_check_refuses_it():
    batch = _batch()
    model = _model("add", num_tasks=2)
    tasked = _tasked(batch, [0, 5, 1, 0])  # task 5 of 2
    params = _init(model, _tasked(batch, [0] * 4))
    got = jax.jit(model.logits)(params, tasked)
    shared = np.asarray(_flat(params)[SHARED])
    one = {k: v[1:2] for k, v in batch.items()}
    single = prompted.PromptedT5(CFG, prompt_length=P)
    want = jax.jit(single.logits)(_single(params, shared), one)
    np.testing.assert_allclose(got[1:2], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"token ids \[32094\] name no task.*NUM_TASKS 2"):
        multi_task_prompt.check_task_tokens(tasked["encoder_input_tokens"], model.multi_task)
    # Padding rows (all zeros, as an eval split's last batch has) are no examples.
    padded = np.asarray(_tasked(batch, [0, 1, 1, 0])["encoder_input_tokens"]).copy()
    padded[3] = 0
    multi_task_prompt.check_task_tokens(padded, model.multi_task)
    multi_task_prompt.check_task_tokens(padded, None)


def test_scanned_equals_loop():
    batch = _batch()
    tasked = _tasked(batch, [1, 0, 1, 0])
    loop = _model("add")
    params = _init(loop, tasked)
    scanned = _model("add", cfg=config.named_config("tiny", dtype="float32", scan_layers=True))
    stacked = prompted.stack_layers(params)
    np.testing.assert_allclose(
        jax.jit(scanned.logits)(stacked, tasked),
        jax.jit(loop.logits)(params, tasked),
        rtol=1e-5,
        atol=1e-5,
    )


def test_initial_params_put_prompt_init_on_the_shared_prompt():
    from spot_jax import axes
    from spot_jax.models import prompts
    from spot_jax.train import initial_params, sharding

    prompt = np.full((P - 1, CFG.emb_dim), 0.25, np.float32)
    model = _model("concat", task_length=1, prompt_init=prompts.from_array(prompt))
    params, _ = initial_params.build_params(
        model,
        sharding.make_mesh(1),
        axes.standard_rules(),
        batch_size=2,
        feature_lengths={"inputs": 8, "targets": 4},
        initial_checkpoint_path=None,
        seed=0,
    )
    np.testing.assert_array_equal(params[SHARED], prompt)
    table = np.asarray(params[TASKS])
    assert table.shape == (3, CFG.emb_dim) and 0 <= table.min() and table.max() < 0.5
    assert sorted(k for k in params if prompted.is_prompt_path(k)) == [SHARED, TASKS]
    assert state_lib.flatten_params(params) is not None


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_tasks=0), "NUM_TASKS >= 1"),
        (dict(combine="concat", task_length=0), "TASK_PROMPT_LENGTH"),
        (dict(combine="add", task_length=2), "for 'concat'"),
        (dict(combine="concat_features"), "0 < SHARED_PROMPT_FEATURES < emb_dim"),
        (dict(combine="concat_features", features=H), "0 < SHARED_PROMPT_FEATURES < emb_dim"),
        (dict(combine="add", features=2), "for 'concat_features' and 'project'"),
        (dict(combine="sum"), "expected one of"),
        (dict(max_segments=2), "unpacked rows"),
        (dict(combine="none", num_tasks=3), "MULTI_TASK_PROMPT"),
    ],
)
def test_refusals_say_what_to_set(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw)
