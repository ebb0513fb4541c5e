"""The numpy synthetic source through the data seam: semantics, determinism, resume, shards."""

import itertools

import numpy as np
import pytest

from spot_jax.data import (
    DatasetConfig,
    make_eval_iterator,
    make_train_iterator,
    real_rows,
    synthetic,
)

LENGTHS = {"inputs": 12, "targets": 6}
KEYS = {
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
}


def _cfg(**overrides):
    kwargs = dict(
        mixture_or_task_name="synthetic",
        task_feature_lengths=LENGTHS,
        batch_size=8,
        vocab_size=1000,
        seed=3,
    )
    kwargs.update(overrides)
    return DatasetConfig(**kwargs)


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _assert_batches_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in g:
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def _concat_rows(batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _trimmed(row):
    """Row up to and including its first EOS."""
    return list(row[: list(row).index(synthetic.EOS_ID) + 1])


def test_batch_keys_dtypes_shapes():
    batch = next(make_train_iterator(_cfg()))
    assert set(batch) == KEYS
    for key, value in batch.items():
        assert value.dtype == np.int32, key
        want = (8, LENGTHS["inputs"] if key == "encoder_input_tokens" else LENGTHS["targets"])
        assert value.shape == want, key


def test_features_follow_enc_dec_converter_semantics():
    # 64 rows of random lengths cover short inputs (padded) and long ones (target trimmed).
    batch = next(make_train_iterator(_cfg(batch_size=64)))
    inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
    for x, y in zip(inputs, targets, strict=True):
        x, y = _trimmed(x), _trimmed(y)
        tokens = x[:-1]
        assert 1 <= len(tokens) <= LENGTHS["inputs"] - 1
        assert all(synthetic.FIRST_TOKEN_ID <= t < 1000 for t in tokens)
        # Target: the first min(n, L-1) input tokens reversed, then EOS.
        k = min(len(tokens), LENGTHS["targets"] - 1)
        assert y == tokens[:k][::-1] + [synthetic.EOS_ID]
    # Everything after the EOS is padding.
    for rows in (inputs, targets):
        for row in rows:
            assert not row[len(_trimmed(row)) :].any()
    # decoder_input = targets shifted right with BOS 0; weights mark non-padding targets.
    np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], 0)
    np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], targets[:, :-1])
    np.testing.assert_array_equal(batch["decoder_loss_weights"], (targets != 0).astype(np.int32))
    # Both padded and full-length targets occur, so the checks above saw both cases.
    assert (targets[:, -1] == 0).any() and (targets[:, -1] != 0).any()


def test_stream_is_deterministic_and_seeded():
    first = _take(make_train_iterator(_cfg()), 3)
    _assert_batches_equal(_take(make_train_iterator(_cfg()), 3), first)
    other = next(make_train_iterator(_cfg(seed=4)))
    assert not np.array_equal(other["encoder_input_tokens"], first[0]["encoder_input_tokens"])
    # Consecutive batches hold different examples.
    assert not np.array_equal(first[0]["encoder_input_tokens"], first[1]["encoder_input_tokens"])


@pytest.mark.parametrize("num_shards,shard_index", [(1, 0), (2, 1)])
def test_resume_equals_tail_of_uninterrupted_stream(num_shards, shard_index):
    cfg = _cfg()
    whole = _take(make_train_iterator(cfg, shard_index=shard_index, num_shards=num_shards), 7)
    resumed = make_train_iterator(cfg, shard_index=shard_index, num_shards=num_shards, start_step=4)
    _assert_batches_equal(_take(resumed, 3), whole[4:])


def test_shards_partition_the_global_batch():
    cfg = _cfg()
    global_batches = _take(make_train_iterator(cfg), 3)
    shard_streams = [make_train_iterator(cfg, shard_index=i, num_shards=2) for i in range(2)]
    for step in range(3):
        shard_batches = [next(stream) for stream in shard_streams]
        assert all(b["encoder_input_tokens"].shape[0] == 4 for b in shard_batches)
        # Shard 0 then shard 1 is exactly the 1-shard global batch, row for row.
        _assert_batches_equal([_concat_rows(shard_batches)], [global_batches[step]])
        rows = [tuple(r) for b in shard_batches for r in b["encoder_input_tokens"]]
        assert len(set(rows[:4]) & set(rows[4:])) == 0


def test_eval_is_one_padded_pass():
    cfg = _cfg(split="validation", batch_size=24)
    batches = list(make_eval_iterator(cfg))
    # 64 examples in batches of 24: 24 + 24 + 16 real rows and 8 padding rows.
    assert len(batches) == 3
    assert all(b["encoder_input_tokens"].shape == (24, 12) for b in batches)
    assert [int(real_rows(b).sum()) for b in batches] == [24, 24, 16]
    last = batches[-1]
    for value in last.values():
        assert not value[16:].any()
        assert value[:16].any(axis=1).all()
    # The same pass again, and it differs from the train split.
    _assert_batches_equal(list(make_eval_iterator(cfg)), batches)
    train = next(make_train_iterator(_cfg(batch_size=24)))
    assert not np.array_equal(train["encoder_input_tokens"], batches[0]["encoder_input_tokens"])


def test_eval_shards_have_equal_batch_counts_and_cover_the_split():
    cfg = _cfg(split="validation", batch_size=24)
    whole = list(make_eval_iterator(cfg))
    shards = [list(make_eval_iterator(cfg, shard_index=i, num_shards=2)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    for step in range(3):
        _assert_batches_equal([_concat_rows([shards[0][step], shards[1][step]])], [whole[step]])
    # In the last global batch shard 1 holds rows 60..71: 4 examples, then padding.
    assert int(real_rows(shards[1][-1]).sum()) == 4
    assert sum(int(real_rows(b).sum()) for s in shards for b in s) == synthetic.EVAL_SPLIT_SIZE


def test_train_iterator_cycles_a_finite_split():
    cfg = _cfg(split="validation", batch_size=32)
    batches = _take(make_train_iterator(cfg), 3)
    # 64 examples: batch 2 repeats batch 0.
    _assert_batches_equal([batches[2]], [batches[0]])


def test_make_batch_is_the_first_train_batch():
    batch = synthetic.make_batch(8, LENGTHS, vocab_size=1000, seed=3)
    _assert_batches_equal([batch], [next(make_train_iterator(_cfg()))])


@pytest.mark.parametrize(
    "overrides,kwargs,message",
    [
        (dict(vocab_size=None), {}, "vocab_size"),
        (dict(pack=True), {}, "pack"),
        ({}, dict(num_shards=3), "not divisible"),
        ({}, dict(num_shards=2, shard_index=2), "shard_index"),
        ({}, dict(start_step=-1), "start_step"),
    ],
)
def test_bad_arguments_fail_at_the_call_with_a_clear_message(overrides, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_train_iterator(_cfg(**overrides), **kwargs)


def test_eval_of_infinite_train_split_is_refused():
    with pytest.raises(ValueError, match="infinite"):
        make_eval_iterator(_cfg(split="train"))


def test_config_requires_both_feature_lengths():
    with pytest.raises(ValueError, match="targets"):
        DatasetConfig("synthetic", {"inputs": 8})
