"""8-bit quantized weights: int8 values with bfloat16 scales, as in the released checkpoint.

A weight ``w[..., in, out]`` is stored as ``weight`` (int8, same shape) and ``scales``
``[..., G, out]``: the input rows are cut into G equal blocks and every (block, output column)
has its own scale, so ``w ≈ weight * scales`` with each scale repeated over its block's rows.
The release uses G = 1 (one scale per output column) for most linears and G = 8 for the
attention output projection and the experts' ``linear_1``.

``QArray`` is a pytree, so it lives inside an ``nnx.Param``, is sliced by ``jax.tree.map``
(``w[e]`` for expert e) and is sharded leaf by leaf. With f32 activations ``matmul`` applies
the scales *after* the dot where the layout allows it (G = 1): the dot then reads 1 byte per
weight. In bf16 it dequantizes first, in bf16, because that rounding is the original's.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct


@struct.dataclass
class QArray:
    """An int8 weight and its scales, as one pytree: the value is ``weight * scales`` with
    each of the ``G`` scale rows covering ``in // G`` consecutive input rows. Use it through
    :func:`matmul` (or ``dequantize``); ``shape`` is the weight's, ``blocks`` is G."""

    weight: jax.Array  # int8 [..., in, out]
    scales: jax.Array  # [..., G, out]  (bfloat16 in the release)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    @property
    def ndim(self) -> int:
        return len(self.weight.shape)

    @property
    def blocks(self) -> int:
        """G: the number of scale blocks along the input (contracted) axis."""
        return self.scales.shape[-2]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.weight.shape)) * 1 + int(np.prod(self.scales.shape)) * int(
            jnp.dtype(self.scales.dtype).itemsize
        )

    def dequantize(self, dtype=jnp.bfloat16) -> jax.Array:
        """The float weight: ``weight * scales`` in ``dtype`` (the reference does this in bf16)."""
        return self.weight.astype(dtype) * expand_scales(self.scales, self.weight.shape[-2], dtype)


def expand_scales(scales: jax.Array, rows: int, dtype) -> jax.Array:
    """[..., G, out] -> [..., rows, out]: each block's scale repeated over its rows."""
    g = scales.shape[-2]
    if rows % g:
        raise ValueError(f"{g} scale blocks do not divide {rows} input rows")
    return jnp.repeat(scales.astype(dtype), rows // g, axis=-2)


@partial(jax.jit, static_argnames=("blocks", "scale_dtype"))
def quantize(w, blocks: int = 1, scale_dtype=jnp.bfloat16) -> QArray:
    """Symmetric absmax int8 quantization with ``blocks`` scale blocks along the input axis.

    The scale of a block is its largest ``|w|`` / 127, rounded *up* to ``scale_dtype`` so that no
    value clips: every element's error is then at most half a step (scale / 2).
    """
    w = jnp.asarray(w, jnp.float32)
    *lead, rows, cols = w.shape
    if rows % blocks:
        raise ValueError(f"blocks={blocks} must divide the input size {rows}")
    wb = w.reshape(*lead, blocks, rows // blocks, cols)
    amax = jnp.max(jnp.abs(wb), axis=-2)  # [..., G, out]
    # A bf16 rounding moves a value by at most 2^-8 relative: inflate by 2^-7 first.
    scale = jnp.where(amax > 0, amax / 127.0 * (1 + 2.0**-7), 1.0).astype(scale_dtype)
    q = jnp.round(wb / scale.astype(jnp.float32)[..., None, :])
    q = jnp.clip(q, -127, 127).astype(jnp.int8).reshape(w.shape)
    return QArray(weight=q, scales=scale)


def matmul(x: jax.Array, w: jax.Array | QArray) -> jax.Array:
    """``x[..., in] @ w[in, out]`` in x's dtype, for float or quantized ``w``.

    f32 activations, G = 1: ``(x @ int8) * scale`` with fp32 accumulation — scales after the
    dot (exact: an int8 times a bf16 scale needs 15 bits, f32 has 24).
    Otherwise dequantize first, in x's dtype, as the release does (``weight.astype(bf16) *
    scales`` in bf16: in bf16 the product is rounded, and following that rounding is what
    makes bf16 runs agree with the original code; G > 1 also needs it, since the scales vary
    along the contracted axis).
    """
    dtype = x.dtype
    if not isinstance(w, QArray):
        return jnp.dot(x, w.astype(dtype))
    if w.blocks == 1 and jnp.dtype(dtype).itemsize >= 4:
        y = jnp.dot(x, w.weight.astype(dtype), preferred_element_type=jnp.float32)
        return (y * w.scales[..., 0, :].astype(jnp.float32)).astype(dtype)
    return jnp.dot(x, w.dequantize(dtype))


def as_float(w: jax.Array | QArray, dtype) -> jax.Array:
    """The weight as a float array, whatever its storage."""
    return w.dequantize(dtype) if isinstance(w, QArray) else w.astype(dtype)


def linear_param(
    key: jax.Array,
    shape: tuple[int, ...],
    *,
    quantized: bool,
    blocks: int,
    dtype,
    logical: tuple[str, ...],
):
    """A new linear weight ``[..., in, out]`` ~ N(0, 1/in), float or quantized.

    ``logical`` names each axis (see ``grok_flax.axes``); quantized scales share the
    weight's names but are never sharded along their (tiny) block axis.
    """
    w = jax.random.normal(key, shape, jnp.float32) * (shape[-2] ** -0.5)
    value = quantize(w, blocks) if quantized else w.astype(dtype)
    return nnx.Param(value, logical=logical)
