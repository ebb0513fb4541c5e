"""Rank classification: score every class label as the target and pick the likeliest.

Greedy decoding may write text that is no label at all (counted wrong); rank classification
(T5X's `score_batch` over the label set, as in the prompt-tuning papers' zero-shot evals)
always answers with one of the labels. For a batch of b examples and C candidate labels, the
model scores b*C (input, label) pairs:

    encoder_input_tokens   [b*C, T]  each row repeated C times
    decoder_target_tokens  [b*C, L]  the C tokenized labels (EOS-terminated), tiled b times
    decoder_input_tokens   [b*C, L]  targets shifted right, 0 (BOS) first
    decoder_loss_weights   [b*C, L]  1 on label tokens

and the choice of example i is argmax over its C log-likelihoods. Numpy only (core side of the
TF fence); the candidates' token ids come from the data seam's task scorer.

That pair layout runs the encoder C times on each input. spot_jax's evals score with
`PromptedT5.score_candidates` instead (one encoder pass per example, the decoder per pair; the
same numbers); the pair batch stays as the reference layout for tests and for scoring with
other implementations (HF PEFT in `tools/benchmark.py --mode rank`).
"""

from __future__ import annotations

import numpy as np


def candidate_batch(batch: dict[str, np.ndarray], candidates: np.ndarray) -> dict[str, np.ndarray]:
    """The (example, candidate) pairs of a host-local batch, as model features.

    Args:
        batch: host-local eval batch with `encoder_input_tokens` `[b, T]`.
        candidates: `[C, L]` int32 label token ids, EOS-terminated, 0-padded.

    Returns:
        The four model features, `[b*C, T]` / `[b*C, L]`, example-major (row i*C + c).
    """
    encoder = np.asarray(batch["encoder_input_tokens"])
    b, num_candidates = encoder.shape[0], candidates.shape[0]
    targets = np.tile(np.asarray(candidates, np.int32), (b, 1))
    decoder_inputs = np.zeros_like(targets)
    decoder_inputs[:, 1:] = targets[:, :-1]
    return {
        "encoder_input_tokens": np.repeat(encoder, num_candidates, axis=0),
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets != 0).astype(np.int32),
    }


def choices(log_likelihoods: np.ndarray, num_candidates: int) -> np.ndarray:
    """`[b]` index of the likeliest candidate of each example, from `[b*C]` scores."""
    scores = np.asarray(log_likelihoods).reshape(-1, num_candidates)
    return np.argmax(scores, axis=-1)
