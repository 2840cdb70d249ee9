import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grok_flax.quant import QArray, expand_scales, matmul, quantize


@pytest.mark.parametrize("blocks", [1, 2, 8])
def test_error_at_most_half_a_step(blocks):
    w = jax.random.normal(jax.random.key(0), (3, 64, 24)) * 0.3
    q = quantize(w, blocks)
    assert q.weight.dtype == jnp.int8 and q.scales.shape == (3, blocks, 24)
    step = expand_scales(q.scales, 64, jnp.float32)
    err = jnp.abs(q.dequantize(jnp.float32) - w)
    assert bool(jnp.all(err <= step / 2 + 1e-7))


def test_block_scales_apply_to_their_rows():
    weight = jnp.ones((8, 3), jnp.int8)
    scales = jnp.arange(1, 9, dtype=jnp.float32).reshape(4, 2)[:, :1].repeat(3, 1)  # [4, 3]
    deq = QArray(weight, scales).dequantize(jnp.float32)
    np.testing.assert_array_equal(deq[:, 0], [1, 1, 3, 3, 5, 5, 7, 7])


@pytest.mark.parametrize("blocks", [1, 4])
def test_matmul_equals_dequantized_matmul(blocks):
    w = quantize(jax.random.normal(jax.random.key(1), (32, 16)), blocks)
    x = jax.random.normal(jax.random.key(2), (5, 32))
    np.testing.assert_allclose(matmul(x, w), x @ w.dequantize(jnp.float32), rtol=1e-5, atol=1e-5)


def test_zero_weights_and_bad_blocks():
    q = quantize(jnp.zeros((4, 2)))
    assert bool(jnp.all(q.dequantize(jnp.float32) == 0))
    with pytest.raises(ValueError, match="divide"):
        quantize(jnp.zeros((6, 2)), blocks=4)
