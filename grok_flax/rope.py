"""Rotary position embeddings (RoPE), as in the reference: base 10000, rotate-half layout.

Each pair of features (i, i + H/2) of a query or key is rotated by the angle
``position * base^(-2i/H)``. A rotation by m applied to q and by n applied to k leaves the dot
product depending on m - n only: attention sees relative positions. Angles are computed in
fp32 whatever the activation dtype; positions are per row, so cached decode can continue each
row from its own offset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def inverse_frequencies(key_size: int, base: float = 10000.0) -> jax.Array:
    """[H/2] fp32: base^(-2i/H) for i = 0 .. H/2 - 1."""
    exponents = jnp.arange(0, key_size, 2, dtype=jnp.float32)
    return 1.0 / (base ** (exponents / key_size))


def rotate_half(x: jax.Array) -> jax.Array:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate((-x2, x1), axis=-1)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate ``x`` [B, T, N, H] by integer ``positions`` [B, T]; returns x's dtype."""
    inv_freq = inverse_frequencies(x.shape[-1], base)  # [H/2]
    phase = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    phase = jnp.concatenate([phase, phase], axis=-1)[:, :, None, :]  # [B, T, 1, H]
    out = x * jnp.cos(phase) + rotate_half(x) * jnp.sin(phase)  # fp32
    return out.astype(x.dtype)


class RotaryEmbedding(nnx.Module):
    """RoPE as a (parameter-free) module: ``rope(x [B,T,N,H], positions [B,T])``."""

    def __init__(self, key_size: int, base: float = 10000.0):
        if key_size % 2:
            raise ValueError(f"rotary embeddings need an even key_size, got {key_size}")
        self.base = base

    def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """``x`` [B, T, N, H] rotated by ``positions`` [B, T] (``apply_rope``), in x's dtype."""
        with jax.named_scope("rope"):
            return apply_rope(x, positions, self.base)
