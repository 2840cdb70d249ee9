"""Checkers for the "Try this" exercises of notebook 02:
`notebooks/02_rotary_embeddings.ipynb`.

1. A larger base (Llama 3's 500,000): ``longest_wavelength``, ``turning_pairs``.
2. The RoPE paper's neighbouring-pair layout: ``rope_interleaved`` (a function, judged against
   ``grok_flax.apply_rope`` on reordered features).
3. Positions in bfloat16: ``bf16_exact_positions``, ``bf16_angle_error``.
"""

from __future__ import annotations

import math

import numpy as np

from grok_flax.course import exercise

H = 128  # Grok-1's (and Llama 3's) head size
CONTEXT = 8192  # Grok-1's context
BASE = 10_000.0  # Grok-1's RoPE base
LLAMA3_BASE = 500_000.0


def _number(answer) -> float:
    a = np.asarray(answer)
    if a.size != 1:
        raise ValueError(f"give one number, not an array of shape {a.shape}")
    return float(a.reshape(()))


def _wavelengths(base: float) -> np.ndarray:
    return 2 * math.pi / base ** (-np.arange(0, H, 2) / H)


def _close(a: float, b: float, rtol: float = 1e-3) -> bool:
    return math.isclose(a, b, rel_tol=rtol)


# --- 1. a larger base ----------------------------------------------------------------------
@exercise(
    "02",
    task="The longest RoPE wavelength, in positions, for head size 128 and base 500,000.",
    wrong=[
        lambda: 2 * math.pi * BASE ** (126 / 128),
        lambda: LLAMA3_BASE ** (126 / 128),
        lambda: 2 * math.pi * LLAMA3_BASE,
        lambda: 2 * math.pi,
    ],
    praise="50× the base stretches the slowest pair's turn 50^(126/128) ≈ 47×, to ~2.56 million "
    "positions.",
)
def longest_wavelength(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    a = _number(answer)
    right = _wavelengths(LLAMA3_BASE).max()
    if _close(a, right):
        return None
    if _close(a, _wavelengths(BASE).max()):
        return f"{a:,.0f} is the base-10,000 value (Grok-1's): did you change the base to 500,000?"
    if _close(a, right / (2 * math.pi)):
        return (
            f"{a:,.0f} is 1/θ, positions per radian; a full turn is 2π radians, so the "
            "wavelength is 2π/θ."
        )
    if _close(a, 2 * math.pi * LLAMA3_BASE):
        return (
            f"{a:,.0f} is 2π·base; the slowest pair is i = 63, whose θ is base^(−126/128), "
            "not base^(−1)."
        )
    if _close(a, 2 * math.pi):
        return f"{a:.3f} is the shortest wavelength (pair 0, θ = 1); the longest is pair 63's."
    return (
        f"{a:,.1f} is not it: the longest wavelength is 2π/θ of the slowest pair, "
        "i = 63, θ = 500,000^(−126/128)."
    )


@exercise(
    "02",
    task="How many of the 64 pairs complete a full turn within 8,192 positions with base 500,000?",
    wrong=[lambda: 50, lambda: 64 - 35, lambda: 64],
    praise="35 of 64 (base 10,000: 50): a larger base gives more slow pairs, which keep telling "
    "distant positions apart.",
)
def turning_pairs(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    a = _number(answer)
    right = int((_wavelengths(LLAMA3_BASE) <= CONTEXT).sum())
    if a == right:
        return None
    if a == int((_wavelengths(BASE) <= CONTEXT).sum()):
        return f"{a:.0f} is the count for base 10,000 (Grok-1's): did you change the base?"
    if a == H // 2 - right:
        return (
            f"{a:.0f} counts the pairs that do NOT finish a turn; count wavelengths ≤ 8,192 "
            "instead."
        )
    if a == H // 2:
        return "not every pair turns: the slowest pairs' wavelengths are far beyond 8,192."
    return (
        f"{a:g} is not it: count the pairs whose wavelength 2π/θᵢ is at most 8,192 positions, "
        "with θᵢ = 500,000^(−2i/128)."
    )


# --- 2. the neighbouring-pair layout -------------------------------------------------------
def _interleaved_ref(x, positions, base=BASE, sign=1.0):
    theta = base ** (-np.arange(0, x.shape[-1], 2) / x.shape[-1])
    phi = sign * np.asarray(positions, np.float64)[:, None] * theta[None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(phi) - odd * np.sin(phi)
    out[..., 1::2] = odd * np.cos(phi) + even * np.sin(phi)
    return out


def _rotate_half_np(x, positions, base=BASE):
    h = x.shape[-1] // 2
    theta = base ** (-np.arange(0, x.shape[-1], 2) / x.shape[-1])
    phi = np.asarray(positions, np.float64)[:, None] * theta[None]
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate(
        [x1 * np.cos(phi) - x2 * np.sin(phi), x2 * np.cos(phi) + x1 * np.sin(phi)], -1
    )


def _library_on_reordered(x, positions, base=BASE):
    """grok_flax.apply_rope on the features reordered (0, 2, …, 1, 3, …), ordered back."""
    import jax.numpy as jnp

    from grok_flax.rope import apply_rope

    perm = np.concatenate([np.arange(0, x.shape[-1], 2), np.arange(1, x.shape[-1], 2)])
    xs = jnp.asarray(x[None, :, None, perm], jnp.float32)
    out = apply_rope(xs, jnp.asarray(positions, jnp.int32)[None], base)
    return np.asarray(out[0, :, 0], np.float64)[:, np.argsort(perm)]


@exercise(
    "02",
    task="A function rope_interleaved(x [T, H], positions [T], base=10000.0) that rotates "
    "neighbouring features (2i, 2i+1) by position·θᵢ (the RoPE paper's layout).",
    wrong=[
        lambda: _rotate_half_np,
        lambda: lambda x, p, base=BASE: _interleaved_ref(x, p, base, sign=-1.0),
        lambda: lambda x, p, base=BASE: x,
    ],
    praise="it equals grok_flax.apply_rope on the features reordered (0, 2, …, 126, 1, 3, …, "
    "127): converting weights between the layouts permutes the q and k projections' output "
    "columns within each head.",
)
def rope_interleaved(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    if not callable(answer):
        return "give a function rope_interleaved(x, positions, base=10000.0), not a value."
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, H))
    positions = np.arange(0, 24 * 37, 37)  # 0 … 851
    got = np.asarray(answer(x.copy(), positions.copy()), np.float64)
    if got.shape != x.shape:
        return f"it returned shape {got.shape}; a rotation keeps the shape {x.shape} of x."
    right = _library_on_reordered(x, positions)
    tol = 2e-3 * np.abs(x).max()  # the library's angles are float32
    if np.abs(got - right).max() <= tol:
        return None
    if np.abs(got - x).max() <= tol:
        return "it returns x unchanged: nothing was rotated."
    if np.abs(got - _rotate_half_np(x, positions)).max() <= tol:
        return (
            "that is Grok-1's rotate-half layout (pairs i, i + H/2); pair neighbouring "
            "features 2i and 2i+1 instead."
        )
    if np.abs(got - _interleaved_ref(x, positions, sign=-1.0)).max() <= tol:
        return (
            "it rotates the wrong way (by −p·θᵢ): x[2i]' = x[2i]·cos − x[2i+1]·sin, "
            "x[2i+1]' = x[2i+1]·cos + x[2i]·sin."
        )
    if not np.allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-3):
        return "it changes the vectors' lengths, so it is not a rotation of each pair."
    t, f = np.unravel_index(np.argmax(np.abs(got - right)), x.shape)
    return (
        f"it differs from the library's RoPE on reordered features by up to "
        f"{np.abs(got - right).max():.2g}, e.g. at position {positions[t]}, feature {f}: "
        "check the pairing (2i, 2i+1) and θᵢ = base^(−2i/H)."
    )


# --- 3. positions in bfloat16 --------------------------------------------------------------
@exercise(
    "02",
    task="How many of the positions 0 … 8,191 does bfloat16 store exactly?",
    wrong=[lambda: 897, lambda: CONTEXT, lambda: 257],
    praise="bfloat16 keeps 8 significant bits: every integer up to 256, then every 2nd up to "
    "512, every 4th up to 1,024, …, every 32nd from 4,096.",
)
def bf16_exact_positions(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    import ml_dtypes

    a = _number(answer)
    p = np.arange(CONTEXT)
    right = int((p.astype(ml_dtypes.bfloat16).astype(np.float64) == p).sum())
    if a == right:
        return None
    if a == right + 1:
        return (
            f"{a:.0f} counts 8,192 too: np.unique of the rounded positions includes 8,192 "
            "(where 8,191 rounds to), which is not one of the positions 0 … 8,191."
        )
    if a == CONTEXT:
        return (
            "bfloat16 keeps only 8 significant bits, so above 256 not every integer can be "
            "written: compare each position with its bfloat16 round trip."
        )
    if a in (256, 257):
        return (
            f"{a:.0f} are only the integers up to 256; above it every 2nd, then every 4th, … "
            "integer is still exact."
        )
    return f"{a:g} is not it: count the p in 0 … 8,191 with float(bfloat16(p)) == p."


@exercise(
    "02",
    task="The error, in radians, of pair 0's angle (θ₀ = 1) at position 8,191 when the position "
    "is stored in bfloat16.",
    wrong=[lambda: 0.0, lambda: math.degrees(1.0), lambda: 16.0, lambda: 2.2e-4],
    praise="8,191 rounds to 8,192 in bfloat16 (every 32nd integer is exact there), so pair 0 is "
    "off by a whole radian, 57°, and 8,176 … 8,191 all get the same angles; rounding θᵢ and the "
    "products to bfloat16 too makes it worse (the solution's picture).",
)
def bf16_angle_error(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    import ml_dtypes

    a = abs(_number(answer))
    p = CONTEXT - 1
    right = abs(float(np.asarray(p).astype(ml_dtypes.bfloat16)) - p)  # θ₀ = 1: the error is p's
    if math.isclose(a, right, rel_tol=1e-3):
        return None
    if a < 1e-2:
        return (
            f"{a:g} rad is float32's size of error; bfloat16 has 8 significant bits, so 8,191 "
            "is not exact: what does it round to?"
        )
    if math.isclose(a, math.degrees(right), rel_tol=1e-3):
        return f"{a:.1f} is in degrees; give the error in radians."
    if math.isclose(a, 16.0, rel_tol=1e-3):
        return (
            "16 is the largest rounding error between 4,096 and 8,192 (half of the step 32); "
            "8,191 itself is much closer to an exact value."
        )
    return (
        f"{a:g} rad is not it: with θ₀ = 1 the angle is the position itself, so the error is "
        "|bfloat16(8,191) − 8,191|."
    )
