import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grok_flax.attention import attend_chunked, attend_naive, soft_cap, visibility


def _inputs(B=2, T=10, S=None, K=2, R=3, H=8, seed=0, scale=1.0):
    S = S or T
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (B, T, K, R, H)) * scale
    k = jax.random.normal(ks[1], (B, S, K, H)) * scale
    v = jax.random.normal(ks[2], (B, S, K, H))
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    kpos = jnp.broadcast_to(jnp.arange(S), (B, S))
    return q, k, v, pos, kpos, jnp.ones((B, S), bool)


def plain_mha(q, k, v, mask, mult, cap=30.0):
    """Textbook multi-head attention with K/V repeated to every query head."""
    B, T, K, R, H = q.shape
    qh = q.reshape(B, T, K * R, H)
    kh = jnp.repeat(k, R, axis=2)
    vh = jnp.repeat(v, R, axis=2)
    s = soft_cap(jnp.einsum("bthd,bshd->bhts", qh, kh) * mult, cap)
    s = jnp.where(mask[:, None], s, -1e30)
    return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), vh).reshape(q.shape)


def test_gqa_equals_mha_with_repeated_kv():
    q, k, v, pos, kpos, valid = _inputs()
    out = attend_naive(q, k, v, pos, kpos, valid, multiplier=0.3)
    want = plain_mha(q, k, v, visibility(pos, kpos, valid), 0.3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_cap_bounds_logits():
    q, k, v, pos, kpos, valid = _inputs(scale=30.0)
    _, w = attend_naive(q, k, v, pos, kpos, valid, multiplier=1.0, return_weights=True)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, k)
    assert float(jnp.abs(logits).max()) > 100  # raw logits far beyond the cap
    capped = soft_cap(logits)
    assert float(jnp.abs(capped).max()) <= 30.0
    # weights are a softmax of capped logits: the largest ratio between visible keys <= e^60
    row = w[0, 0, 0, -1]
    assert float(row.max() / row.min()) <= np.exp(60.0) * 1.01


def test_padding_keys_are_ignored():
    q, k, v, pos, kpos, valid = _inputs(B=1)
    valid = valid.at[0, 3].set(False)
    out = attend_naive(q, k, v, pos, kpos, valid, multiplier=0.5)
    k2 = k.at[0, 3].set(100.0)
    v2 = v.at[0, 3].set(-100.0)
    out2 = attend_naive(q, k2, v2, pos, kpos, valid, multiplier=0.5)
    np.testing.assert_allclose(out[:, 3:], out2[:, 3:], rtol=1e-6)  # rows that see key 3
    q3, _, _, _, _, _ = _inputs(B=1)
    assert out.shape == q3.shape


def test_causality():
    q, k, v, pos, kpos, valid = _inputs(B=1, T=8)
    out = attend_naive(q, k, v, pos, kpos, valid, multiplier=0.5)
    out2 = attend_naive(
        q, k.at[:, 5:].set(9.0), v.at[:, 5:].set(9.0), pos, kpos, valid, multiplier=0.5
    )
    np.testing.assert_allclose(out[:, :5], out2[:, :5], rtol=1e-6)
    assert not np.allclose(out[:, 5:], out2[:, 5:])


@pytest.mark.parametrize(
    "T, S, chunk",
    [
        (10, 10, 4),
        (33, 33, 8),
        pytest.param(1, 40, 16, marks=pytest.mark.slow),
        pytest.param(5, 64, 16, marks=pytest.mark.slow),
        pytest.param(64, 64, 64, marks=pytest.mark.slow),
    ],
)
def test_chunked_equals_naive(T, S, chunk):
    q, k, v, _, kpos, valid = _inputs(T=T, S=S, scale=3.0)
    pos = jnp.broadcast_to(jnp.arange(S - T, S), (2, T))  # queries are the last T positions
    valid = valid.at[1, 2].set(False)
    a = attend_naive(q, k, v, pos, kpos, valid, multiplier=0.2)
    b = attend_chunked(q, k, v, pos, kpos, valid, multiplier=0.2, chunk=chunk)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_chunked_is_differentiable():
    q, k, v, pos, kpos, valid = _inputs(T=12)

    def loss(fn, q):
        return jnp.sum(fn(q, k, v, pos, kpos, valid, multiplier=0.5) ** 2)

    ga = jax.grad(lambda q: loss(attend_naive, q))(q)
    gb = jax.grad(lambda q: loss(lambda *a, **kw: attend_chunked(*a, chunk=4, **kw), q))(q)
    np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-4)
