"""The real SeqIO pipeline on the in-memory demo task `spot_demo_copy_v1`."""

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.tf
seqio = pytest.importorskip("seqio")

from spot_jax.data import DatasetConfig, make_eval_iterator, make_train_iterator, real_rows  # noqa: E402
from spot_jax.data.tasks import demo  # noqa: E402

LENGTHS = {"inputs": 48, "targets": 8}
KEYS = {
    "encoder_input_tokens",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
}
VOCAB = seqio.ByteVocabulary()


def _cfg(**overrides):
    kwargs = dict(
        mixture_or_task_name=demo.TASK_NAME, task_feature_lengths=LENGTHS, batch_size=8, seed=7
    )
    kwargs.update(overrides)
    return DatasetConfig(**kwargs)


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _decode_rows(tokens):
    """Strings of the non-padding rows of `[b, n]` ids (ByteVocabulary stops at EOS)."""
    return [VOCAB.decode(row.tolist()) for row in tokens if row.any()]


def _inputs_of(batches):
    return [text for b in batches for text in _decode_rows(b["encoder_input_tokens"])]


def test_train_batches_have_converter_features_that_decode_to_task_examples():
    batches = _take(make_train_iterator(_cfg()), 2)
    pairs = dict(demo.examples("train"))
    for batch in batches:
        assert set(batch) == KEYS
        for key, value in batch.items():
            assert value.dtype == np.int32, key
            want = LENGTHS["inputs"] if key == "encoder_input_tokens" else LENGTHS["targets"]
            assert value.shape == (8, want), key
        inputs = _decode_rows(batch["encoder_input_tokens"])
        targets = _decode_rows(batch["decoder_target_tokens"])
        assert len(inputs) == len(targets) == 8
        for x, y in zip(inputs, targets, strict=True):
            assert pairs[x] == y
        targets_ids = batch["decoder_target_tokens"]
        # Every target ends with EOS (1) followed only by padding.
        for row in targets_ids:
            eos = list(row).index(1)
            assert not row[eos + 1 :].any() and (row[:eos] > 2).all()
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], 0)
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], targets_ids[:, :-1])
        np.testing.assert_array_equal(
            batch["decoder_loss_weights"], (targets_ids != 0).astype(np.int32)
        )
        assert batch["encoder_input_tokens"].max() < 259


_RESUME_SCRIPT = textwrap.dedent(
    """
    import itertools, sys
    import numpy as np
    from spot_jax.data import DatasetConfig, make_train_iterator
    cfg = DatasetConfig("spot_demo_copy_v1", {"inputs": 48, "targets": 8}, batch_size=8, seed=7)
    it = make_train_iterator(cfg, shard_index=1, num_shards=2, start_step=3)
    batches = list(itertools.islice(it, 2))
    np.savez(sys.argv[1], *[b["encoder_input_tokens"] for b in batches],
             *[b["decoder_target_tokens"] for b in batches])
    """
)


def test_resume_in_a_fresh_process_sees_the_uninterrupted_batches(tmp_path):
    # A fresh process is what a restart after SIGKILL is: nothing carries over but the seed.
    out = tmp_path / "resumed.npz"
    result = subprocess.run(
        [sys.executable, "-c", _RESUME_SCRIPT, str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    whole = _take(make_train_iterator(_cfg(), shard_index=1, num_shards=2), 5)
    resumed = np.load(out)
    for i, batch in enumerate(whole[3:]):
        np.testing.assert_array_equal(resumed[f"arr_{i}"], batch["encoder_input_tokens"])
        np.testing.assert_array_equal(resumed[f"arr_{i + 2}"], batch["decoder_target_tokens"])
    # And the stream is shuffled: the resumed batches are not the first ones again.
    assert not np.array_equal(whole[0]["encoder_input_tokens"], whole[3]["encoder_input_tokens"])


def test_resume_in_process_matches_tail():
    whole = _take(make_train_iterator(_cfg()), 4)
    resumed = _take(make_train_iterator(_cfg(), start_step=2), 2)
    for got, want in zip(resumed, whole[2:], strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(got[key], want[key])


def test_two_shards_split_an_epoch_into_disjoint_halves():
    # Unshuffled, 12 batches of 16 per shard are exactly one epoch of the 384 examples.
    cfg = _cfg(shuffle=False, batch_size=32)
    halves = [
        _inputs_of(_take(make_train_iterator(cfg, shard_index=i, num_shards=2), 12))
        for i in range(2)
    ]
    assert len(halves[0]) == len(halves[1]) == 192
    assert not set(halves[0]) & set(halves[1])
    assert set(halves[0]) | set(halves[1]) == {x for x, _ in demo.examples("train")}


def test_shuffled_shards_stay_disjoint():
    shard_inputs = [
        set(_inputs_of(_take(make_train_iterator(_cfg(), shard_index=i, num_shards=2), 4)))
        for i in range(2)
    ]
    assert shard_inputs[0] and shard_inputs[1]
    assert not shard_inputs[0] & shard_inputs[1]


def test_eval_is_one_ordered_pass_padded_with_zero_rows():
    cfg = _cfg(split="validation", batch_size=24)
    batches = list(make_eval_iterator(cfg))
    assert len(batches) == 3
    assert all(b["encoder_input_tokens"].shape == (24, 48) for b in batches)
    assert [int(real_rows(b).sum()) for b in batches] == [24, 24, 16]
    for value in batches[-1].values():
        assert not value[16:].any()
    want = demo.examples("validation")
    assert _inputs_of(batches) == [x for x, _ in want]
    targets = [t for b in batches for t in _decode_rows(b["decoder_target_tokens"])]
    assert targets == [y for _, y in want]

    shards = [list(make_eval_iterator(cfg, shard_index=i, num_shards=2)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    for step, whole in enumerate(batches):
        for key in KEYS:
            rows = np.concatenate([shards[0][step][key], shards[1][step][key]])
            np.testing.assert_array_equal(rows, whole[key])


def test_unknown_task_names_the_fix():
    with pytest.raises(ValueError, match="DatasetConfig.module"):
        make_train_iterator(_cfg(mixture_or_task_name="no_such_task_v0"))


def test_module_is_imported_before_lookup():
    with pytest.raises(ModuleNotFoundError):
        make_train_iterator(_cfg(module="spot_jax_no_such_module"))
    batch = next(make_train_iterator(_cfg(module="spot_jax.data.tasks.demo")))
    assert batch["encoder_input_tokens"].shape == (8, 48)


def test_indivisible_global_batch_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        make_train_iterator(_cfg(batch_size=9), num_shards=2)


def test_demo_task_is_registered_with_its_splits_metrics_and_postprocessor():
    task = seqio.get_mixture_or_task(demo.TASK_NAME)
    assert demo.register() is task  # idempotent
    assert set(task.splits) == {"train", "validation"}
    assert [fn.__name__ for fn in task.metric_fns] == ["accuracy"]
    assert task.postprocess_fn(b" Plum \n") == "plum"
    train, validation = demo.examples("train"), demo.examples("validation")
    assert (len(train), len(validation)) == (384, 64)
    assert not {x for x, _ in train} & {x for x, _ in validation}
    assert all(x.startswith("copy: ") and x.split()[1] == y for x, y in train + validation)


def test_packing_keeps_segment_ids_and_positions():
    # Rows long enough to hold several demo examples (each ~30 input and ~6 target bytes).
    lengths = {"inputs": 128, "targets": 32}
    batch = next(make_train_iterator(_cfg(pack=True, task_feature_lengths=lengths)))
    packing = {
        "encoder_segment_ids",
        "encoder_positions",
        "decoder_segment_ids",
        "decoder_positions",
    }
    assert set(batch) == KEYS | packing
    # Several short examples share a row, and each decoder segment starts with BOS 0.
    segments = batch["decoder_segment_ids"]
    assert segments.max() > 1
    starts = (batch["decoder_positions"] == 0) & (segments > 0)
    np.testing.assert_array_equal(batch["decoder_input_tokens"][starts], 0)


def _segments_of(batch):
    """(input text, target text) of every packed example of a batch, row by row."""
    out = []
    for r in range(batch["encoder_input_tokens"].shape[0]):
        for s in range(1, int(batch["encoder_segment_ids"][r].max()) + 1):
            x = batch["encoder_input_tokens"][r][batch["encoder_segment_ids"][r] == s]
            y = batch["decoder_target_tokens"][r][batch["decoder_segment_ids"][r] == s]
            out.append((VOCAB.decode(x.tolist()), VOCAB.decode(y.tolist())))
    return out


def test_first_fit_packing_caps_segments_and_keeps_every_example_whole():
    lengths = {"inputs": 128, "targets": 32}
    cfg = _cfg(pack=True, max_segments=3, task_feature_lengths=lengths, shuffle=False)
    batches = _take(make_train_iterator(cfg), 3)
    assert set(batches[0]) == KEYS | {
        "encoder_segment_ids",
        "encoder_positions",
        "decoder_segment_ids",
        "decoder_positions",
    }
    for batch in batches:
        assert batch["encoder_input_tokens"].shape == (8, 128)
        assert batch["decoder_segment_ids"].max() == 3  # rows fill up to the cap, not past it
        starts = (batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)
        np.testing.assert_array_equal(batch["decoder_input_tokens"][starts], 0)
    # Unshuffled, the packed examples are the split's examples in order, each intact.
    packed = [ex for batch in batches for ex in _segments_of(batch)]
    want = [(x, y) for x, y in demo.examples("train")[: len(packed)]]
    assert sorted(packed) == sorted(want) and len(packed) > 2 * 8


def test_first_fit_packing_resumes_at_the_same_batches():
    cfg = _cfg(pack=True, max_segments=3, task_feature_lengths={"inputs": 128, "targets": 32})
    whole = _take(make_train_iterator(cfg), 4)
    resumed = _take(make_train_iterator(cfg, start_step=2), 2)
    for got, want in zip(resumed, whole[2:], strict=True):
        assert set(got) == set(want)
        for key in got:
            np.testing.assert_array_equal(got[key], want[key])


def test_max_segments_without_packing_is_refused():
    with pytest.raises(ValueError, match="needs pack=True"):
        _cfg(max_segments=2)
