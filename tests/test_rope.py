import jax
import jax.numpy as jnp
import numpy as np

from grok_flax.rope import apply_rope


def test_dot_product_depends_only_on_offset():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

    def score(m, n):
        rq = apply_rope(q, jnp.array([[m]]))
        rk = apply_rope(k, jnp.array([[n]]))
        return float(jnp.sum(rq * rk))

    for m, n in [(5, 2), (103, 100), (8000, 7997)]:
        np.testing.assert_allclose(score(m, n), score(3, 0), rtol=2e-4, atol=2e-4)
    assert abs(score(7, 0) - score(3, 0)) > 1e-3  # but it does depend on the offset


def test_offset_decode_equals_full_sequence_positions():
    x = jax.random.normal(jax.random.key(2), (2, 12, 3, 8))
    full = apply_rope(x, jnp.broadcast_to(jnp.arange(12), (2, 12)))
    # row-wise offsets: continue row 0 from 5 and row 1 from 9
    pos = jnp.array([[5], [9]])
    step = apply_rope(jnp.stack([x[0, 5:6], x[1, 9:10]]), pos)
    np.testing.assert_allclose(step[0, 0], full[0, 5], rtol=1e-6)
    np.testing.assert_allclose(step[1, 0], full[1, 9], rtol=1e-6)


def test_rotation_preserves_norm_and_dtype():
    x = jax.random.normal(jax.random.key(3), (1, 4, 2, 8)).astype(jnp.bfloat16)
    y = apply_rope(x, jnp.arange(4)[None] * 1000)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        jnp.linalg.norm(y.astype(float), axis=-1),
        jnp.linalg.norm(x.astype(float), axis=-1),
        rtol=2e-2,
    )
