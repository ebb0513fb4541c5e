"""The demo backbone: T5 span corruption in numpy, pretraining batches, the cache."""

import dataclasses

import numpy as np
import pytest

from spot_jax.data import world as world_lib
from spot_jax.demo import backbone as backbone_lib

TINY = backbone_lib.BackboneConfig(
    emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1, steps=20, batch_size=8
)


@pytest.mark.parametrize("length", [12, 24, 57, 100])
def test_noise_mask_density_and_span_count(length):
    rng = np.random.default_rng(length)
    mask = backbone_lib.random_spans_noise_mask(length, 0.15, 3.0, rng)
    assert mask.shape == (length,) and not mask[0]  # starts with non-noise, as T5
    num_noise = int(np.clip(round(length * 0.15), 1, length - 1))
    assert mask.sum() == num_noise
    starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
    assert len(starts) == max(1, round(num_noise / 3))


def test_span_corruption_inverts_to_the_text():
    rng = np.random.default_rng(0)
    tokens = np.arange(10, 40)
    mask = backbone_lib.random_spans_noise_mask(len(tokens), 0.15, 3.0, rng)
    inputs, targets = backbone_lib.span_corruption(tokens, mask, vocab_size=300)
    sentinels = [world_lib.sentinel_id(300, i) for i in range(3)]
    assert inputs.count(sentinels[0]) == 1 and targets[0] == sentinels[0]
    # Replace each sentinel in the inputs by the tokens that follow it in the targets.
    spans, current = {}, None
    for t in targets:
        if t >= 300 - world_lib.EXTRA_IDS:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    rebuilt = [x for t in inputs for x in (spans[t] if t in spans else [t])]
    assert rebuilt == tokens.tolist()


def test_pretraining_never_reads_targets():
    w = world_lib.build_world()
    text = set(w.unlabeled_text())
    for name in w.names("target"):
        for split in w.split_sizes:
            assert not text & {x for x, _ in w.examples(name, split)}


def test_backbone_is_cached_and_a_second_load_skips_pretraining(tmp_path, monkeypatch):
    first = backbone_lib.load_or_pretrain_backbone(TINY, tmp_path, progress=False)
    assert first.pretrained_now and (first.path.parent / backbone_lib.DONE_FILE).exists()
    assert first.record["token_loss"][-1] < first.record["token_loss"][0]

    def fail(*args, **kwargs):
        raise AssertionError("pretrained again despite the cache")

    monkeypatch.setattr(backbone_lib, "pretrain", fail)
    second = backbone_lib.load_or_pretrain_backbone(TINY, tmp_path, progress=False)
    assert not second.pretrained_now and second.path == first.path
    for k, v in first.params.items():
        np.testing.assert_array_equal(np.asarray(second.params[k]), np.asarray(v))
    # Another config is another cache entry.
    other = dataclasses.replace(TINY, steps=10)
    assert other.key() != TINY.key()
    with pytest.raises(AssertionError, match="pretrained again"):
        backbone_lib.load_or_pretrain_backbone(other, tmp_path, progress=False)


def test_a_new_vocabulary_is_a_new_backbone(monkeypatch):
    before = TINY.key()
    monkeypatch.setattr(world_lib, "VOCAB_VERSION", world_lib.VOCAB_VERSION + 1)
    assert TINY.key() != before
