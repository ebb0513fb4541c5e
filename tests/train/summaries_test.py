"""TensorBoard event files written without TensorFlow, read back by TensorFlow's reader."""

import numpy as np
import pytest
import tensorflow as tf

from spot_jax.train import summaries


def test_crc32c_matches_the_castagnoli_check_value():
    assert summaries.crc32c(b"123456789") == 0xE3069283
    assert summaries.crc32c(b"") == 0


def test_scalars_by_run_read_back_by_tensorflow(tmp_path, read_tensorboard):
    writer = summaries.Summaries(tmp_path)
    writer.write(1, {"step": 1, "train/loss": 2.5, "train/tokens_per_s": np.float32(100.0)})
    writer.write(
        2,
        {"train/loss": 1.25, "eval/task_a/accuracy": 0.75, "job": "eval", "done": True, "n": 3},
    )
    train = read_tensorboard(tmp_path / "train")
    assert train == {"loss": [(1, 2.5), (2, 1.25)], "tokens_per_s": [(1, 100.0)]}
    assert read_tensorboard(tmp_path / "eval") == {"task_a/accuracy": [(2, 0.75)]}
    # Strings and booleans are left out; a key without a run prefix goes to run 'default'.
    assert read_tensorboard(tmp_path / "default") == {"n": [(2, 3.0)]}
    (path,) = (tmp_path / "train").glob("events.out.tfevents.*")
    first = next(tf.compat.v1.train.summary_iterator(str(path)))
    assert first.file_version == "brain.Event:2" and first.wall_time > 0


def test_a_second_writer_keeps_the_first_ones_file(tmp_path, read_tensorboard):
    summaries.Summaries(tmp_path).write(10, {"train/loss": 3.0})
    summaries.Summaries(tmp_path).write(20, {"train/loss": 2.0})  # a resumed job, same second
    assert len(list((tmp_path / "train").glob("events.out.tfevents.*"))) == 2
    assert read_tensorboard(tmp_path / "train") == {"loss": [(10, 3.0), (20, 2.0)]}


def test_a_corrupted_record_fails_tensorflows_crc_check(tmp_path):
    summaries.Summaries(tmp_path).write(5, {"train/loss": 1.0})
    (path,) = (tmp_path / "train").glob("events.out.tfevents.*")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.compat.v1.train.summary_iterator(str(path)))
