"""Cross-entropy with z-loss: values and the custom gradient against plain references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.train import losses

B, L, V = 3, 5, 11


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(scale=3.0, size=(B, L, V)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, V, size=(B, L)).astype(np.int32))
    weights = jnp.asarray((rng.random((B, L)) > 0.3).astype(np.float32))
    return logits, targets, weights


def reference_loss(logits, targets, weights, z_loss):
    """Plain autodiff-able definition: sum_w [ -log p(target) + z * logsumexp^2 ]."""
    lse = jax.scipy.special.logsumexp(logits, axis=-1)
    log_p = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - lse
    return jnp.sum((-log_p + z_loss * lse**2) * weights)


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.1])
def test_loss_and_z_loss_values(inputs, z_loss):
    logits, targets, weights = inputs
    total, z, weight_sum = losses.weighted_cross_entropy(logits, targets, weights, z_loss)
    np.testing.assert_allclose(total, reference_loss(logits, targets, weights, z_loss), rtol=1e-5)
    lse = jax.scipy.special.logsumexp(logits, axis=-1)
    np.testing.assert_allclose(z, jnp.sum(z_loss * lse**2 * weights), rtol=1e-5, atol=1e-7)
    assert float(weight_sum) == float(weights.sum())


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.1])
def test_custom_gradient_matches_autodiff_reference(inputs, z_loss):
    logits, targets, weights = inputs
    got = jax.grad(lambda x: losses.weighted_cross_entropy(x, targets, weights, z_loss)[0])(logits)
    want = jax.grad(lambda x: reference_loss(x, targets, weights, z_loss))(logits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Padding positions get no gradient.
    assert np.all(np.asarray(got)[np.asarray(weights) == 0] == 0)


def test_z_loss_term_changes_the_gradient(inputs):
    logits, targets, weights = inputs
    g0 = jax.grad(lambda x: losses.weighted_cross_entropy(x, targets, weights, 0.0)[0])(logits)
    g1 = jax.grad(lambda x: losses.weighted_cross_entropy(x, targets, weights, 0.1)[0])(logits)
    assert not np.allclose(g0, g1, atol=1e-4)


def test_gradient_is_stable_for_large_logits():
    logits = jnp.array([[[1000.0, 0.0, -1000.0]]])
    targets = jnp.array([[1]])
    weights = jnp.ones((1, 1))
    loss, grad = jax.value_and_grad(
        lambda x: losses.weighted_cross_entropy(x, targets, weights, 1e-4)[0]
    )(logits)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(loss, 1000.0 + 1e-4 * 1000.0**2, rtol=1e-5)


def test_sequence_log_likelihood_and_accuracy(inputs):
    logits, targets, weights = inputs
    log_p = jax.nn.log_softmax(logits)
    want = np.zeros(B)
    for b in range(B):
        for t in range(L):
            want[b] += float(log_p[b, t, targets[b, t]]) * float(weights[b, t])
    np.testing.assert_allclose(
        losses.sequence_log_likelihood(logits, targets, weights), want, rtol=1e-5
    )
    perfect = jax.nn.one_hot(targets, V) * 10.0
    correct, total = losses.token_accuracy(perfect, targets, weights)
    assert float(correct) == float(total) == float(weights.sum())
    wrong = jax.nn.one_hot((targets + 1) % V, V) * 10.0
    assert float(losses.token_accuracy(wrong, targets, weights)[0]) == 0.0


def test_integer_targets_match_the_one_hot_path():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(4, 64, 2048)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, 2048, size=(4, 64)).astype(np.int32))

    def by_ids(x):
        return jnp.sum(losses.token_cross_entropy(x, targets, 1e-4)[0])

    def by_one_hot(x):
        onehot = jax.nn.one_hot(targets, x.shape[-1], dtype=x.dtype)
        return jnp.sum(losses.cross_entropy_with_logits(x, onehot, 1e-4)[0])

    np.testing.assert_allclose(by_ids(logits), by_one_hot(logits), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(by_ids)(logits), jax.grad(by_one_hot)(logits), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("chunk", [16, 24, 64])  # divides L, leaves a padded last chunk, = L
def test_chunked_losses_match_the_whole_logits(chunk):
    rng = np.random.default_rng(2)
    hidden = jnp.asarray(rng.normal(size=(3, 64, 32)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(32, 512)).astype(np.float32) * 0.3)
    targets = jnp.asarray(rng.integers(0, 512, size=(3, 64)).astype(np.int32))
    weights = jnp.asarray(rng.integers(0, 2, size=(3, 64)).astype(np.float32))

    def whole(h, k):
        logits = jnp.dot(h, k)
        loss, z = losses.token_cross_entropy(logits, targets, 1e-4)
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return jnp.sum(loss * weights), (loss, z, correct)

    def chunked(h, k):
        loss, z, correct = losses.chunked_token_losses(h, k, targets, 1e-4, chunk)
        return jnp.sum(loss * weights), (loss, z, correct)

    (total_w, parts_w), grads_w = jax.value_and_grad(whole, (0, 1), has_aux=True)(hidden, kernel)
    (total_c, parts_c), grads_c = jax.value_and_grad(chunked, (0, 1), has_aux=True)(hidden, kernel)
    np.testing.assert_allclose(total_c, total_w, rtol=1e-6)
    for got, want in zip(parts_c, parts_w, strict=True):
        assert got.shape == (3, 64)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_c, grads_w, strict=True):  # hidden (prompt tuning) and kernel
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
