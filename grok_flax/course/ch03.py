"""Checkers for the "Try this" exercises of notebook 03:
`notebooks/03_attention_and_kv_memory.ipynb`."""

from __future__ import annotations

import math

import numpy as np

from grok_flax.course import exercise

N_KEYS = 8192  # Grok-1's context: one query may see this many keys
GIB = 1024**3


# --------------------------------------------------------------------------------------------
# 1. the attention weights of the demo model with the cap at 5
# --------------------------------------------------------------------------------------------
def _causal_softmax(logits: np.ndarray) -> np.ndarray:
    T = logits.shape[-1]
    visible = np.tril(np.ones((T, T), bool))
    z = np.where(visible, logits, -np.inf)
    w = np.exp(z - z.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def _weights_like_cap(cap: float | None, *, causal: bool = True, normalise: bool = True):
    """[L=2, B=1, K=2, R=2, T=12, T] weights of random logits (std 12), capped at ``cap``."""
    logits = np.random.default_rng(3).standard_normal((2, 1, 2, 2, 12, 12)) * 12.0
    if cap is not None:
        logits = cap * np.tanh(logits / cap)
    if not causal:
        w = np.exp(logits - logits.max(-1, keepdims=True))
        return w / w.sum(-1, keepdims=True)
    w = _causal_softmax(logits)
    return w if normalise else w * 3.0


@exercise(
    "03",
    task="Build the demo model with attn_logit_cap=5.0 and the same weights; give its attention "
    "weights on the snippet ([L, B, K, R, T, T], from capture=('attention',)).",
    wrong=[
        lambda: _weights_like_cap(30.0),
        lambda: _weights_like_cap(5.0, causal=False),
        lambda: _weights_like_cap(5.0, normalise=False),
    ],
    praise="Log-weights of one query now span at most 2 × 5 = 10: the cap bounds how lopsided "
    "a head can be, and a trained head that wanted more gets flattened.",
)
def cap_five_weights(answer) -> str | None:
    """None when the weights are causal, normalised, and no query's log-weights spread over more
    than 2 × 5 = 10 (two logits in (−5, 5) differ by less than 10)."""
    w = np.asarray(answer, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        return f"expected weights [..., T, T] (queries × keys of one sequence), got {w.shape}"
    if not np.all(np.isfinite(w)) or w.min() < 0:
        return "weights must be finite and ≥ 0: these come after the softmax"
    T = w.shape[-1]
    future = ~np.tril(np.ones((T, T), bool))
    if np.abs(w[..., future]).max() > 1e-6:
        return (
            "some query puts weight on a later key: these are not causal attention weights "
            "(capture them from the model, which masks the future)"
        )
    sums = w.sum(-1)
    if np.abs(sums - 1).max() > 1e-3:
        return (
            f"a query's weights sum to {sums.flat[np.abs(sums - 1).argmax()]:.3g}, not 1: "
            "softmax weights are normalised"
        )
    logw = np.log(np.maximum(w, 1e-300))
    spread = (
        np.where(~future, logw, -np.inf).max(-1) - np.where(~future, logw, np.inf).min(-1)
    ).max()
    if spread > 10 + 1e-3:
        return (
            f"one query's log-weights spread over {spread:.1f}, but logits capped at ±5 can "
            "differ by at most 10 (log wᵢ − log wⱼ = ℓᵢ − ℓⱼ): is the cap still 30?"
        )
    return None


# --------------------------------------------------------------------------------------------
# 2. KV bytes per token, for any number of KV heads
# --------------------------------------------------------------------------------------------
def _kv_wrong(factor_of_truth):
    def make():
        from grok_flax.kv_memory import kv_bytes_per_token

        return lambda cfg: factor_of_truth(cfg) * kv_bytes_per_token(cfg)

    return make


@exercise(
    "03",
    task="Write kv_bytes(cfg) -> int: the bytes of bfloat16 KV memory one token occupies, all "
    "layers together, for any GrokConfig (try Grok-1 with 1, 8, 16 and 48 KV heads).",
    wrong=[
        _kv_wrong(lambda cfg: 0.5),  # k only, or v only
        _kv_wrong(lambda cfg: cfg.q_per_kv),  # one k and v per query head
        _kv_wrong(lambda cfg: 1 / cfg.num_layers),  # one layer
        _kv_wrong(lambda cfg: 2.0),  # float32
    ],
    praise="2 × L × K × H × 2 bytes: the KV memory grows with the KV heads, not the query heads, "
    "so Grok-1's 8 KV heads need 1/6 of what 48 would.",
)
def kv_bytes(answer) -> str | None:
    """None when ``answer(cfg)`` equals ``kv_bytes_per_token(cfg)`` (bfloat16) for Grok-1 with
    several KV-head counts and for the tiny config; otherwise names the factor that is off."""
    from grok_flax.config import GrokConfig
    from grok_flax.kv_memory import kv_bytes_per_token

    if not callable(answer):
        return "give a function: kv_bytes(cfg) -> bytes per token"
    g1 = GrokConfig.grok_1()
    cases = [g1.replace(num_kv_heads=n) for n in (1, 8, 16, 48)] + [GrokConfig.tiny()]
    for cfg in cases:
        want, got = kv_bytes_per_token(cfg), answer(cfg)
        if got == want:
            continue
        what = (
            f"for {cfg.num_layers} layers, {cfg.num_q_heads} query / {cfg.num_kv_heads} KV "
            f"heads of {cfg.key_size} you give {got:,} bytes, the memory holds {want:,}"
        )
        ratio = float(got) / want
        hints = {
            0.5: "half: both k AND v are kept, one of each per KV head",
            2.0: "twice: bfloat16 is 2 bytes a value, not 4",
            float(cfg.q_per_kv): "that counts query heads; only the KV heads' k and v are stored",
            1 / cfg.num_layers: "that is one layer; every layer keeps its own k and v",
        }
        for r, hint in hints.items():
            if math.isclose(ratio, r, rel_tol=1e-9):
                return f"{what} — {hint}"
        return f"{what} (× {ratio:.3g})"
    return None


# --------------------------------------------------------------------------------------------
# 3. how big a logit gap is "all the attention"
# --------------------------------------------------------------------------------------------
def _top_weight(gap: float, n: int = N_KEYS) -> float:
    return 1 / (1 + (n - 1) * math.exp(-gap))


@exercise(
    "03",
    task=f"Among {N_KEYS:,} keys, how far above all the others (equal to each other) must one "
    "key's logit be, after the cap, for it to take 99% of the weight?",
    wrong=[
        lambda: math.log(99),  # against one other key
        lambda: math.log(N_KEYS - 1),  # 50%
        lambda: 30.0,  # the cap
    ],
    praise="ln(99 × 8,191) ≈ 13.6: well inside ±30, so the cap never stops a head from "
    "putting 99% of its weight on one token.",
)
def gap_for_99(answer) -> str | None:
    """None for ln(0.99 / 0.01 × 8,191) within 0.05; otherwise says what weight the given gap
    gives the top key."""
    try:
        gap = float(answer)
    except (TypeError, ValueError):
        return f"give a number (a logit difference), got {type(answer).__name__}"
    want = math.log(0.99 / 0.01 * (N_KEYS - 1))
    if abs(gap - want) <= 0.05:
        return None
    w = _top_weight(gap)
    if math.isclose(gap, math.log(99), rel_tol=1e-3):
        return (
            f"a gap of ln 99 = {gap:.2f} gives 99% against ONE other key; here "
            f"{N_KEYS - 1:,} keys each keep e^(−gap), so the top key gets only {w:.1%}"
        )
    if gap >= 30:
        return (
            f"with the cap at 30 no gap after the cap can exceed 60, and {gap:g} gives the top "
            f"key {w:.10%} — far more than 99%: find where it is exactly 99%"
        )
    side = "short of" if w < 0.99 else "past"
    return f"a gap of {gap:.2f} gives the top key {w:.2%} of the weight, {side} 99%"
