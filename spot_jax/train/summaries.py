"""TensorBoard scalars under MODEL_DIR, written without TensorFlow.

`tensorboard --logdir $MODEL_DIR` shows one run per key prefix, as T5X's layout does: the
trainer's `train/loss` is tag `loss` of run `train`, `eval/<task>/accuracy` is tag
`<task>/accuracy` of run `eval`. The files are TensorFlow event files (TFRecord framing,
`Event` protos with `simple_value` scalars), encoded here by hand: the synthetic-data jobs and
tests never import TensorFlow (3.8 s on this CPU), and the format is small and frozen.

Each run's file is rewritten whole at every flush, because object stores (gs://) cannot
append; a long run's scalars are a few hundred kB.
"""

import itertools
import os
import socket
import struct
import time
from collections.abc import Mapping
from numbers import Real

import jax
from etils import epath


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    # TFRecord stores CRCs rotated and offset, so CRCs of CRC-bearing data stay robust.
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC (little-endian)."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


# -- Protobuf wire format, for the few fields of tensorflow.Event used here -----------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def event_bytes(
    wall_time: float,
    step: int = 0,
    scalars: Mapping[str, float] | None = None,
    file_version: str | None = None,
) -> bytes:
    """A serialized `Event` {wall_time=1, step=2, file_version=3, summary=5}; each scalar is a
    `Summary.Value` {tag=1, simple_value=2 (float32)}."""
    out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(
                1,
                _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value)),
            )
            for tag, value in scalars.items()
        )
        out += _length_delimited(5, values)
    return out


_FILE_NUMBERS = itertools.count()


class EventFile:
    """One run's event file: `<logdir>/events.out.tfevents.<time>.<host>.<pid>.<n>`.

    The per-process number `n` keeps a resumed job started in the same second (a test, a
    notebook) from overwriting the first job's file.
    """

    def __init__(self, logdir: epath.PathLike):
        self.logdir = epath.Path(logdir)
        now = time.time()
        stem = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self.path = self.logdir / f"{stem}.{next(_FILE_NUMBERS)}"
        while self.path.exists():
            self.path = self.logdir / f"{stem}.{next(_FILE_NUMBERS)}"
        self._records = bytearray(tfrecord(event_bytes(now, file_version="brain.Event:2")))

    def add(self, step: int, scalars: Mapping[str, float]) -> None:
        self._records += tfrecord(event_bytes(time.time(), step, scalars))

    def flush(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(bytes(self._records))


class Summaries:
    """Scalars by run: `write(step, {'train/loss': ..., 'eval/t/accuracy': ...})`.

    Keys without a '/' go to run `default`; values that are not real numbers (a task name,
    a path) and the key 'step' are left out. Only process 0 writes.
    """

    def __init__(self, model_dir: epath.PathLike):
        self.model_dir = epath.Path(model_dir)
        self._runs: dict[str, EventFile] = {}
        self.enabled = jax.process_index() == 0

    def write(self, step: int, metrics: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        by_run: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, Real):
                continue
            run, tag = key.split("/", 1) if "/" in key else ("default", key)
            by_run.setdefault(run, {})[tag] = float(value)
        for run, scalars in by_run.items():
            if run not in self._runs:
                self._runs[run] = EventFile(self.model_dir / run)
            self._runs[run].add(step, scalars)
            self._runs[run].flush()
