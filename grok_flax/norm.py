"""RMSNorm as in the reference: fp32 statistics, eps 1e-5, a plain learned scale (no offset)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``scale * x / sqrt(mean(x^2) + eps)`` computed in fp32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    mean_sq = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
    return (scale.astype(jnp.float32) * (xf * jax.lax.rsqrt(mean_sq + eps))).astype(x.dtype)


class RMSNorm(nnx.Module):
    """``scale * x / sqrt(mean(x²) + eps)`` over the last axis, in f32; a learned scale [D],
    no offset. Grok-1 puts two around each block (the "sandwich") and one before the output."""

    def __init__(self, dim: int, eps: float = 1e-5, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical=("embed_norm",))  # [D]

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` [..., D] normalised over D in fp32 and scaled, returned in x's dtype."""
        return rms_norm(x, self.scale[...], self.eps)
