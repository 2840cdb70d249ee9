"""Choosing the next token from logits, with the reference's semantics.

``logits / temperature``, then (optionally) top-k, then the reference's nucleus filter: sort,
softmax, keep every logit ≥ the smallest one whose cumulative probability (from the bottom)
reaches 1 - top_p. ``temperature = 0`` means greedy (argmax of the raw logits) — the
reference divides by the temperature, which breaks at 0. Every setting is an array [B], so
one compiled step serves every request.

Cost: when every row is greedy the step is one argmax (the filters and the draw are skipped
by a ``lax.cond``); otherwise one sort of the vocabulary per row serves both filters
(``top_k_top_p_filter``). ``top_k_filter`` / ``top_p_filter`` are the one-filter-at-a-time
definitions, kept as the oracle the tests compare with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED = -1e10  # the reference's fill for filtered logits


def top_p_filter(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Nucleus filter exactly as the reference: logits [B, V], top_p [B] in (0, 1]."""
    sorted_logits = jnp.sort(logits, axis=-1)  # ascending
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    reached = jnp.cumsum(sorted_probs, axis=-1) >= (1 - top_p)[:, None]
    threshold = jnp.take_along_axis(sorted_logits, jnp.argmax(reached, axis=-1)[:, None], -1)
    return jnp.where(logits >= threshold, logits, MASKED)


def top_k_filter(logits: jax.Array, top_k: jax.Array) -> jax.Array:
    """Keep the k largest logits of each row (ties at the k-th kept); k = 0 keeps all."""
    V = logits.shape[-1]
    kth = jnp.take_along_axis(jnp.sort(logits, axis=-1), jnp.clip(V - top_k, 0, V - 1)[:, None], -1)
    return jnp.where((top_k[:, None] <= 0) | (logits >= kth), logits, MASKED)


def top_k_top_p_filter(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """``top_p_filter(top_k_filter(logits, top_k), top_p)`` with a single sort per row.

    After the top-k filter the sorted row is the same sorted row with its first V - k
    entries replaced by the fill (they are the smallest), so it need not be sorted again.
    """
    V = logits.shape[-1]
    s = jnp.sort(logits, axis=-1)  # ascending
    kth = jnp.take_along_axis(s, jnp.clip(V - top_k, 0, V - 1)[:, None], -1)
    off = top_k[:, None] <= 0
    x = jnp.where(off | (logits >= kth), logits, MASKED)  # the top-k filter
    s = jnp.where(off | (s >= kth), s, MASKED)  # ... and its sorted row
    reached = jnp.cumsum(jax.nn.softmax(s, axis=-1), axis=-1) >= (1 - top_p)[:, None]
    threshold = jnp.take_along_axis(s, jnp.argmax(reached, axis=-1)[:, None], -1)
    return jnp.where(x >= threshold, x, MASKED)


def candidates_for(top_k: int, vocab: int) -> int | None:
    """How many candidates an exact top-k pre-selection needs for a row with ``top_k`` > 0
    (twice top_k, at least 64, a power of two, so a handful of compiled variants serve every
    setting), or None (top_k off: every logit is a candidate)."""
    if top_k <= 0:
        return None
    return min(vocab, max(64, 1 << (2 * int(top_k) - 1).bit_length()))


def sample(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    top_k: jax.Array,
    candidates: int | None = None,
) -> jax.Array:
    """logits [B, V]; keys [B] PRNG keys; temperature/top_p/top_k [B] -> tokens [B] int32.

    As the reference, the arithmetic is in the logits' dtype (bf16 logits: the temperature
    and top_p are cast to bf16 and the filters run in bf16). ``candidates`` (static; every
    row's top_k must be in 1..candidates/2, see ``candidates_for``): draw among the
    ``candidates`` largest logits only (``lax.top_k``) instead of sorting the whole
    vocabulary. Every logit outside them is filtered out by top-k anyway, so the
    distribution is the same; the draw itself uses different random numbers.
    """
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    hot = temperature > 0

    def draw():
        dtype = logits.dtype
        x = logits / jnp.where(hot, temperature, 1.0).astype(dtype)[:, None]
        if candidates is None:
            x = top_k_top_p_filter(x, top_k, top_p.astype(dtype))
            drawn = jax.vmap(jax.random.categorical)(keys, x)
        else:
            values, index = jax.lax.top_k(x, candidates)  # [B, C], largest first
            values = top_k_top_p_filter(values, top_k, top_p.astype(dtype))
            pick = jax.vmap(jax.random.categorical)(keys, values)
            drawn = jnp.take_along_axis(index, pick[:, None], axis=1)[:, 0]
        return jnp.where(hot, drawn.astype(jnp.int32), greedy)

    return jax.lax.cond(jnp.any(hot), draw, lambda: greedy)
