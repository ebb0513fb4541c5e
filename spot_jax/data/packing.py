"""Packing examples into rows, in numpy: greedy first-fit, seqio's packed feature layout.

Short inputs (GLUE sentences are tens of tokens) padded to a 512-token row waste most of the
encoder's work. Packing puts several examples in one row; the model keeps them apart with
`*_segment_ids` (1, 2, ... per example, 0 = padding) and restarts relative positions per
example with `*_positions`, and gives each example its own prompt copy
(`models.segments`). The features are seqio EncDecFeatureConverter(pack=True)'s:

    encoder_input_tokens, encoder_segment_ids, encoder_positions           [R, T]
    decoder_target_tokens, decoder_input_tokens, decoder_loss_weights,
    decoder_segment_ids, decoder_positions                                  [R, L]

`decoder_input_tokens` is the target shifted right *within* each segment (0 starts every
segment), so no example sees another's tokens. No example is ever split across rows; examples
longer than the row are truncated first, as seqio trims before packing. Pure numpy, no TF.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from spot_jax.data import synthetic

Example = tuple[np.ndarray, np.ndarray]  # (inputs [n], targets [m]), unpadded int ids


class FirstFit:
    """Row occupancy for greedy first-fit: each example goes to the first row it fits.

    Args:
      feature_lengths: {'inputs': T, 'targets': L}, the row lengths.
      max_segments: at most this many examples share a row.
      max_rows: the most rows that may be opened.
    """

    def __init__(self, feature_lengths: Mapping[str, int], max_segments: int, max_rows: int):
        self.t_len = int(feature_lengths["inputs"])
        self.l_len = int(feature_lengths["targets"])
        self.max_segments = max_segments
        self.used_in = np.zeros(max_rows, np.int64)
        self.used_out = np.zeros(max_rows, np.int64)
        self.count = np.zeros(max_rows, np.int64)
        self.open_rows = 0

    def place(self, input_length: int, target_length: int) -> int | None:
        """Row for an example of these lengths (now occupied), or None if no row can take it."""
        k = self.open_rows
        fits = (self.used_in[:k] + input_length <= self.t_len) & (
            self.used_out[:k] + target_length <= self.l_len
        )
        fits &= self.count[:k] < self.max_segments
        if fits.any():
            row = int(np.argmax(fits))
        elif k < len(self.count):
            row, self.open_rows = k, k + 1
        else:
            return None
        self.used_in[row] += input_length
        self.used_out[row] += target_length
        self.count[row] += 1
        return row


def first_fit(
    input_lengths: Sequence[int],
    target_lengths: Sequence[int],
    feature_lengths: Mapping[str, int],
    max_segments: int,
) -> np.ndarray:
    """Rows [N] of examples assigned in order to the first row where inputs and targets fit.

    Lengths must already be at most the row lengths, so every example gets a row.
    """
    fit = FirstFit(feature_lengths, max_segments, max(len(input_lengths), 1))
    return np.array(
        [fit.place(a, b) for a, b in zip(input_lengths, target_lengths, strict=True)], np.int64
    )


def pack(
    examples: Sequence[Example],
    feature_lengths: Mapping[str, int],
    max_segments: int,
    num_rows: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Packs all `examples` (first-fit, in order) into rows.

    Args:
      examples: (inputs, targets) pairs of unpadded int ids, each ending in EOS.
      feature_lengths: {'inputs': T, 'targets': L}.
      max_segments: the most examples in one row (the model's `max_segments`).
      num_rows: pad the result to this many rows (all-zero rows); default: as many as used.

    Returns:
      (features as in the module docstring, placement [N, 2] int: (row, segment id) of each
      example, segment ids counting from 1 in order of arrival in the row).
    """
    t_len, l_len = int(feature_lengths["inputs"]), int(feature_lengths["targets"])
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    trimmed = [(np.asarray(x)[:t_len], np.asarray(y)[:l_len]) for x, y in examples]
    rows = first_fit(
        [len(x) for x, _ in trimmed], [len(y) for _, y in trimmed], feature_lengths, max_segments
    )
    used = int(rows.max()) + 1 if len(rows) else 0
    total = used if num_rows is None else num_rows
    if total < used:
        raise ValueError(f"{len(examples)} examples need {used} rows, more than {num_rows}")
    enc = {k: np.zeros((total, t_len), np.int32) for k in ("tokens", "segments", "positions")}
    dec = {
        k: np.zeros((total, l_len), np.int32)
        for k in ("targets", "inputs", "weights", "segments", "positions")
    }
    fill_in = np.zeros(total, np.int64)
    fill_out = np.zeros(total, np.int64)
    segment_count = np.zeros(total, np.int64)
    placement = np.zeros((len(trimmed), 2), np.int64)
    for i, ((x, y), row) in enumerate(zip(trimmed, rows, strict=True)):
        segment_count[row] += 1
        seg = segment_count[row]
        placement[i] = row, seg
        a, b = fill_in[row], fill_out[row]
        enc["tokens"][row, a : a + len(x)] = x
        enc["segments"][row, a : a + len(x)] = seg
        enc["positions"][row, a : a + len(x)] = np.arange(len(x))
        dec["targets"][row, b : b + len(y)] = y
        dec["inputs"][row, b + 1 : b + len(y)] = y[:-1]  # shifted right within the segment
        dec["weights"][row, b : b + len(y)] = y != 0
        dec["segments"][row, b : b + len(y)] = seg
        dec["positions"][row, b : b + len(y)] = np.arange(len(y))
        fill_in[row] += len(x)
        fill_out[row] += len(y)
    features = {
        "encoder_input_tokens": enc["tokens"],
        "encoder_segment_ids": enc["segments"],
        "encoder_positions": enc["positions"],
        "decoder_target_tokens": dec["targets"],
        "decoder_input_tokens": dec["inputs"],
        "decoder_loss_weights": dec["weights"],
        "decoder_segment_ids": dec["segments"],
        "decoder_positions": dec["positions"],
    }
    return features, placement


def packed_batches(
    examples: Iterable[Example],
    batch_size: int,
    feature_lengths: Mapping[str, int],
    max_segments: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Streams packed batches of `batch_size` rows from an example stream.

    Each batch is filled first-fit with the next examples until one fits none of its rows;
    that example opens the next batch. Deterministic for a deterministic stream; the last
    (partial) batch is padded with all-zero rows.
    """
    t_len, l_len = int(feature_lengths["inputs"]), int(feature_lengths["targets"])
    pending: list[Example] = []
    fit = FirstFit(feature_lengths, max_segments, batch_size)
    for x, y in examples:
        example = (np.asarray(x)[:t_len], np.asarray(y)[:l_len])
        if fit.place(len(example[0]), len(example[1])) is None:
            # The example fits none of this batch's rows: emit the batch, open the next one.
            yield pack(pending, feature_lengths, max_segments, batch_size)[0]
            pending = []
            fit = FirstFit(feature_lengths, max_segments, batch_size)
            fit.place(len(example[0]), len(example[1]))
        pending.append(example)
    if pending:
        yield pack(pending, feature_lengths, max_segments, batch_size)[0]


def unpack_scores(scores: np.ndarray, placement: np.ndarray) -> np.ndarray:
    """Per-row, per-segment scores [R, S] (`PromptedT5.score_segments`) -> [N] per example.

    `placement` is `pack`'s (row, segment id) of each example, so the result is in the
    examples' order.
    """
    scores, placement = np.asarray(scores), np.asarray(placement)
    if len(placement) and placement[:, 1].max() > scores.shape[1]:
        raise ValueError(
            f"examples placed in segment {placement[:, 1].max()} but the scores have only "
            f"{scores.shape[1]} columns: score with max_segments at least pack's max_segments"
        )
    return scores[placement[:, 0], placement[:, 1] - 1]


def unpadded_examples(batch: Mapping[str, np.ndarray]) -> list[Example]:
    """Unpacked, padded model features -> (inputs, targets) without padding, one per real row."""
    out = []
    for x, y in zip(batch["encoder_input_tokens"], batch["decoder_target_tokens"], strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if (x != 0).any() or (y != 0).any():
            out.append((x[x != 0], y[y != 0]))
    return out


def padded(examples: Sequence[Example], feature_lengths: Mapping[str, int]) -> dict:
    """Examples as unpacked model features, one padded row each (the baseline packing beats)."""
    t_len, l_len = int(feature_lengths["inputs"]), int(feature_lengths["targets"])
    inputs = np.zeros((len(examples), t_len), np.int32)
    targets = np.zeros((len(examples), l_len), np.int32)
    for i, (x, y) in enumerate(examples):
        x, y = np.asarray(x)[:t_len], np.asarray(y)[:l_len]
        inputs[i, : len(x)] = x
        targets[i, : len(y)] = y
    return synthetic.model_features(inputs, targets)
