"""Tests for spot_jax.models.decoding against numpy / exhaustive references."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.models import decoding

EOS = 1
START = 0


class ToyModel:
    """Second-order toy decoder whose cache must be expanded and reordered correctly.

    logits[t] = scale * (T1[prev] + T2[prev2] + P[t] + row_bias[row]), where `prev2`
    (the token before `prev`) is read back from a per-row history in the cache, `t`
    from a per-row step counter in the cache, and `scale` is a scalar cache leaf.
    """

    def __init__(self, vocab, max_len, batch, seed=0):
        rs = np.random.RandomState(seed)
        self.t1 = rs.randn(vocab, vocab).astype(np.float32)
        self.t2 = rs.randn(vocab, vocab).astype(np.float32)
        self.pos = rs.randn(max_len, vocab).astype(np.float32)
        self.row_bias = rs.randn(batch, vocab).astype(np.float32)
        self.vocab, self.max_len, self.batch = vocab, max_len, batch
        self.calls = []

    def init_cache(self, scale=1.0):
        return {
            "hist": jnp.full((self.batch, self.max_len), START, jnp.int32),
            "count": jnp.zeros((self.batch,), jnp.int32),
            "row_bias": jnp.asarray(self.row_bias),
            "scale": jnp.asarray(scale, jnp.float32),
        }

    def tokens_to_logits(self, token_ids, cache, index):
        n = token_ids.shape[0]
        # Static checks run at trace time: batch-major leaves, scalar leaf untouched.
        assert token_ids.shape == (n, 1) and token_ids.dtype == jnp.int32
        assert cache["scale"].ndim == 0
        assert cache["hist"].shape == (n, self.max_len) and cache["count"].shape == (n,)
        assert jnp.ndim(index) == 0
        # Records which positions were actually decoded (observes early exits).
        jax.debug.callback(lambda i: self.calls.append(int(i)), index)
        prev = token_ids[:, 0]
        prev2 = jnp.where(index > 0, cache["hist"][:, jnp.maximum(index - 1, 0)], START)
        logits = (
            jnp.asarray(self.t1)[prev]
            + jnp.asarray(self.t2)[prev2]
            + jnp.asarray(self.pos)[cache["count"]]
            + cache["row_bias"]
        ) * cache["scale"]
        new_cache = dict(cache)
        new_cache["hist"] = cache["hist"].at[:, index].set(prev)
        new_cache["count"] = cache["count"] + 1
        return logits, new_cache

    def np_log_probs(self, row, prefix, scale=1.0):
        """Numpy next-token log-probs `[V]` for example `row` after `prefix` tokens."""
        t = len(prefix)
        prev = prefix[-1] if t >= 1 else START
        prev2 = prefix[-2] if t >= 2 else START
        logits = (self.t1[prev] + self.t2[prev2] + self.pos[t] + self.row_bias[row]) * scale
        logits = logits.astype(np.float64)
        return logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()


def _pad(seq, length):
    return list(seq) + [0] * (length - len(seq))


def _greedy_reference(model, row, max_len):
    seq, lp = [], 0.0
    for _ in range(max_len):
        step = model.np_log_probs(row, seq)
        tok = int(np.argmax(step))
        seq.append(tok)
        lp += step[tok]
        if tok == EOS:
            break
    return _pad(seq, max_len), lp


def _sample(model, cache, rng=None, **kw):
    fn = functools.partial(
        decoding.temperature_sample,
        model.tokens_to_logits,
        batch_size=model.batch,
        max_decode_len=model.max_len,
        eos_id=EOS,
        **kw,
    )
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return jax.jit(lambda c, r: fn(c, rng=r))(cache, rng)


def _beam(model, cache, **kw):
    fn = functools.partial(
        decoding.beam_search,
        model.tokens_to_logits,
        batch_size=model.batch,
        max_decode_len=model.max_len,
        eos_id=EOS,
        **kw,
    )
    return jax.jit(fn)(cache)


def test_expand_batch_repeats_rows_and_keeps_scalars():
    tree = {"a": jnp.arange(6).reshape(3, 2), "s": jnp.asarray(7)}
    out = decoding.expand_batch(tree, 2)
    np.testing.assert_array_equal(out["a"], [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]])
    assert out["s"].shape == () and int(out["s"]) == 7
    np.testing.assert_array_equal(decoding.expand_batch(jnp.arange(2), 3), [0, 0, 0, 1, 1, 1])


def test_greedy_matches_numpy_reference():
    model = ToyModel(vocab=6, max_len=7, batch=3, seed=1)
    tokens, log_probs = _sample(model, model.init_cache())  # topk=1 default: greedy
    assert tokens.shape == (3, 1, 7) and tokens.dtype == jnp.int32
    assert log_probs.shape == (3, 1) and log_probs.dtype == jnp.float32
    for row in range(3):
        ref_seq, ref_lp = _greedy_reference(model, row, model.max_len)
        np.testing.assert_array_equal(tokens[row, 0], ref_seq)
        np.testing.assert_allclose(log_probs[row, 0], ref_lp, rtol=1e-5, atol=1e-5)
    # temperature=0 is greedy as well, whatever topk says.
    tokens_t0, _ = _sample(model, model.init_cache(), temperature=0.0, topk=0)
    np.testing.assert_array_equal(tokens_t0, tokens)


def test_zeros_after_eos_and_early_exit():
    model = ToyModel(vocab=5, max_len=6, batch=2, seed=3)
    # Make EOS overwhelmingly likely after the first step for every row.
    model.pos[1:, EOS] += 50.0
    tokens, log_probs = _sample(model, model.init_cache())
    tokens = np.asarray(tokens)
    for row in range(2):
        seq = tokens[row, 0]
        eos_pos = np.flatnonzero(seq == EOS)
        assert eos_pos.size > 0 and eos_pos[0] <= 1
        assert np.all(seq[eos_pos[0] + 1 :] == 0)
        ref_seq, ref_lp = _greedy_reference(model, row, model.max_len)
        np.testing.assert_array_equal(seq, ref_seq)
        np.testing.assert_allclose(log_probs[row, 0], ref_lp, rtol=1e-5, atol=1e-5)


def test_sampling_deterministic_topk_and_sorted():
    model = ToyModel(vocab=8, max_len=6, batch=2, seed=4)
    cache = model.init_cache()
    kw = dict(temperature=1.0, topk=2, num_decodes=16)
    tok_a, lp_a = _sample(model, cache, jax.random.PRNGKey(42), **kw)
    tok_b, lp_b = _sample(model, cache, jax.random.PRNGKey(42), **kw)
    tok_c, _ = _sample(model, cache, jax.random.PRNGKey(7), **kw)
    np.testing.assert_array_equal(tok_a, tok_b)
    np.testing.assert_array_equal(lp_a, lp_b)
    assert tok_a.shape == (2, 16, 6) and lp_a.shape == (2, 16)
    assert not np.array_equal(tok_a, tok_c)
    assert np.all(np.diff(np.asarray(lp_a), axis=1) >= 0)  # ascending
    tok_a = np.asarray(tok_a)
    for row in range(2):
        for d in range(16):
            seq, lp = [], 0.0
            for tok in tok_a[row, d]:
                step = model.np_log_probs(row, seq)
                top2 = np.argsort(step)[-2:]
                assert tok in top2
                seq.append(int(tok))
                lp += step[tok]
                if tok == EOS:
                    break
            assert np.all(tok_a[row, d, len(seq) :] == 0)
            np.testing.assert_allclose(lp_a[row, d], lp, rtol=1e-5, atol=1e-4)


def test_topp_tiny_nucleus_is_greedy():
    model = ToyModel(vocab=8, max_len=6, batch=2, seed=5)
    greedy, _ = _sample(model, model.init_cache())
    nucleus, _ = _sample(model, model.init_cache(), topk=0, topp=1e-6, num_decodes=3)
    np.testing.assert_array_equal(nucleus, np.repeat(np.asarray(greedy), 3, axis=1))


def test_peaked_sampling_matches_greedy():
    model = ToyModel(vocab=8, max_len=6, batch=2, seed=6)
    # The scalar cache leaf sharpens the distribution into (numerically) one-hot.
    cache = model.init_cache(scale=200.0)
    greedy, greedy_lp = _sample(model, cache)
    sampled, _ = _sample(model, cache, topk=0, num_decodes=4, rng=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(sampled, np.repeat(np.asarray(greedy), 4, axis=1))
    nucleus, _ = _sample(model, cache, topk=0, topp=0.9, num_decodes=4)
    np.testing.assert_array_equal(nucleus, np.repeat(np.asarray(greedy), 4, axis=1))
    assert np.all(np.asarray(greedy_lp) > -1e-3)


def _exhaustive(model, row, max_len, alpha):
    """All complete hypotheses (EOS-terminated or max length) with penalised scores."""
    results = []
    non_eos = [t for t in range(model.vocab) if t != EOS]
    for length in range(1, max_len + 1):
        for body in itertools.product(non_eos, repeat=length - 1):
            for last in range(model.vocab):
                if last != EOS and length < max_len:
                    continue
                seq = list(body) + [last]
                lp = sum(model.np_log_probs(row, seq[:t])[seq[t]] for t in range(length))
                score = lp / ((5.0 + length) / 6.0) ** alpha
                results.append((score, _pad(seq, max_len)))
    results.sort(key=lambda r: r[0])
    return results


@pytest.mark.parametrize(
    "vocab,max_len,num_beams,alpha",
    [(3, 4, 8, 0.6), (4, 3, 9, 0.0), (3, 3, 4, 2.0)],
)
def test_beam_search_matches_exhaustive(vocab, max_len, num_beams, alpha):
    # num_beams >= (vocab - 1) ** (max_len - 1) keeps every live prefix, so the
    # returned K hypotheses must be exactly the K best complete ones.
    model = ToyModel(vocab=vocab, max_len=max_len, batch=2, seed=vocab * 10 + max_len)
    tokens, scores = _beam(model, model.init_cache(), num_beams=num_beams, alpha=alpha)
    assert tokens.shape == (2, num_beams, max_len) and tokens.dtype == jnp.int32
    assert scores.shape == (2, num_beams) and scores.dtype == jnp.float32
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    for row in range(2):
        ref = _exhaustive(model, row, max_len, alpha)[-num_beams:]
        assert np.all(np.diff(scores[row]) >= 0)  # ascending, best last
        np.testing.assert_array_equal(tokens[row, -1], ref[-1][1])
        np.testing.assert_allclose(scores[row, -1], ref[-1][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(tokens[row], np.array([s for _, s in ref]))
        np.testing.assert_allclose(scores[row], [s for s, _ in ref], rtol=1e-5, atol=1e-5)


def test_beam_search_early_stop():
    model = ToyModel(vocab=5, max_len=8, batch=2, seed=9)
    model.pos[:, EOS] += 30.0  # EOS first: the best hypothesis ends immediately.
    tokens, scores = _beam(model, model.init_cache(), num_beams=3)
    tokens = np.asarray(tokens)
    np.testing.assert_array_equal(tokens[:, -1], [_pad([EOS], 8)] * 2)
    assert np.all(np.diff(np.asarray(scores), axis=1) >= 0)
    jax.effects_barrier()
    # Three finished hypotheses exist after two steps and no live one can beat them.
    assert max(model.calls) < 3


def test_greedy_stops_when_all_rows_ended():
    model = ToyModel(vocab=5, max_len=8, batch=2, seed=12)
    model.pos[:, EOS] += 30.0
    tokens, _ = _sample(model, model.init_cache(), num_decodes=2)
    assert np.all(np.asarray(tokens)[:, :, 0] == EOS)
    jax.effects_barrier()
    assert model.calls == [0]


def test_single_beam_shapes():
    model = ToyModel(vocab=6, max_len=5, batch=3, seed=11)
    tokens, scores = _beam(model, model.init_cache(), num_beams=1, alpha=0.0)
    assert tokens.shape == (3, 1, 5) and scores.shape == (3, 1)
    assert np.all(np.asarray(scores) < 0)
