"""Concept pictures for notebook 03: attention: grouped-query heads, the soft cap, the causal
mask, the KV memory filling.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from grok_flax.viz.figures import config_or_grok1, format_bytes

__all__ = [
    "causal_mask",
    "gqa_groups",
    "kv_memory_fill",
    "soft_cap_attention",
    "soft_cap_curve",
]

_Q_COLOR = "#dbe9f6"
_KV_COLOR = "#f9f3d2"
_GROUP_COLORS = tuple(f"C{i}" for i in range(10))


# --------------------------------------------------------------------------------------------
# grouped-query attention
# --------------------------------------------------------------------------------------------
def gqa_groups(cfg=None, *, title: str | None = None) -> Figure:
    """Which query heads read which key/value head: ``cfg.num_q_heads`` query heads (top) in
    ``cfg.num_kv_heads`` groups of R = ``cfg.q_per_kv``, each group joined to the one KV head
    it shares (bottom). Query head j reads KV head j // R. Grok-1 by default."""
    from matplotlib.patches import Rectangle

    cfg = config_or_grok1(cfg)
    Nq, K, R, H = cfg.num_q_heads, cfg.num_kv_heads, cfg.q_per_kv, cfg.key_size
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.add_subplot()
    gap = 0.6  # between groups, in query-head widths
    width = Nq + gap * (K - 1)
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(-0.9, 5.3)
    ax.axis("off")
    number_each = Nq <= 24  # room to write every query head's index
    for kv in range(K):
        color = _GROUP_COLORS[kv % len(_GROUP_COLORS)]
        x0 = kv * (R + gap)
        for r in range(R):
            j = kv * R + r
            ax.add_patch(Rectangle((x0 + r + 0.05, 3.2), 0.9, 1.0, fc=_Q_COLOR, ec=color, lw=1.2))
            if number_each:
                ax.text(x0 + r + 0.5, 3.7, str(j), ha="center", va="center", fontsize=8)
        ax.text(x0 + R / 2, 4.45, f"q {kv * R}–{kv * R + R - 1}", ha="center", fontsize=8)
        # the KV head, centred under its group, and a line from each query head to it
        kx, kw = x0 + R / 2, min(R, 3.0)
        ax.add_patch(Rectangle((kx - kw / 2, 0.2), kw, 1.0, fc=_KV_COLOR, ec=color, lw=1.5))
        ax.text(kx, 0.7, f"KV {kv}", ha="center", va="center", fontsize=8, fontweight="bold")
        for r in range(R):
            ax.plot([x0 + r + 0.5, kx], [3.2, 1.2], color=color, lw=0.8, alpha=0.8)
    ax.text(-0.4, 4.95, f"{Nq} query heads (each its own q, {H} wide)", fontsize=9, va="bottom")
    ax.text(
        -0.4,
        -0.1,
        f"{K} key/value heads (k and v, {H} wide each): query head j reads KV head j // {R}; "
        f"the library keeps q as [B, T, K={K}, R={R}, H={H}], so k and v are never copied {R}×",
        fontsize=8.5,
        va="top",
    )
    ax.set_title(
        title
        or f"Grouped-query attention: {Nq} query heads share {K} KV heads, "
        f"R = {Nq} / {K} = {R} query heads per KV head",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------------------------
# the soft cap
# --------------------------------------------------------------------------------------------
def _check_cap(cap: float) -> float:
    cap = float(cap)
    if not cap > 0 or not np.isfinite(cap):
        raise ValueError(f"the cap must be a positive number, got {cap!r}")
    return cap


def soft_cap_curve(cap: float = 30.0, *, x_max: float | None = None) -> Figure:
    """What the softmax sees against the logit: ``cap · tanh(x / cap)`` next to the identity,
    with the lines ±cap it never crosses (left), and its slope — the factor every gradient
    through a logit is multiplied by (right). ``x_max``: the range drawn (default 4·cap)."""
    cap = _check_cap(cap)
    x_max = 4 * cap if x_max is None else float(x_max)
    if not x_max > 0:
        raise ValueError(f"x_max must be positive, got {x_max!r}")
    x = np.linspace(-x_max, x_max, 801)
    y = cap * np.tanh(x / cap)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(1.5, 1))
    ax.plot(x, x, ":", color="grey", label="no cap: x")
    ax.plot(x, y, lw=2, label=f"{cap:g}·tanh(x/{cap:g})")
    for sign in (1, -1):
        ax.axhline(sign * cap, color="black", lw=0.7, ls="--")
    ax.text(-x_max * 0.97, cap * 1.06, f"+{cap:g}: never reached", fontsize=8, va="bottom")
    ax.text(x_max * 0.97, -cap * 1.06, f"−{cap:g}", fontsize=8, va="top", ha="right")
    ax.set_ylim(-2 * cap, 2 * cap)
    ax.set_xlim(-x_max, x_max)
    ax.set_xlabel("logit in (q·k × 1/√H)")
    ax.set_ylabel("logit out (what the softmax sees)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_title(f"the cap: identity near 0, bounded by ±{cap:g}", fontsize=10)
    bx.plot(x, 1 / np.cosh(x / cap) ** 2, lw=2, color="C2")
    bx.set_xlim(-x_max, x_max)
    bx.set_ylim(0, 1.08)
    bx.set_xlabel("logit in")
    bx.set_ylabel("slope d(out)/d(in)")
    bx.grid(alpha=0.3)
    bx.set_title(f"its slope sech²(x/{cap:g}): 1 near 0, → 0 far out", fontsize=10)
    return fig


def soft_cap_attention(cap: float = 30.0, n_keys: int = 8192) -> Figure:
    """One query, ``n_keys`` keys: one key's logit grows, the other ``n_keys − 1`` stay at 0.
    The attention left for the others, without the cap and with ``cap · tanh(x / cap)``:
    without it falls for ever, with it stops at (n−1)/(e^cap + n − 1)."""
    cap = _check_cap(cap)
    if int(n_keys) != n_keys or n_keys < 2:
        raise ValueError(f"n_keys must be an integer ≥ 2, got {n_keys!r}")
    n_keys = int(n_keys)
    top = np.linspace(0, 5 * cap, 501)
    rest = n_keys - 1  # their total e^logit, each logit 0 (the cap leaves 0 at 0)
    left_raw = rest / (np.exp(top) + rest)
    left_cap = rest / (np.exp(cap * np.tanh(top / cap)) + rest)
    floor = rest / (np.exp(cap) + rest)
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(top, left_raw, ":", color="grey", lw=2, label="no cap")
    ax.plot(top, left_cap, lw=2, label=f"capped at {cap:g}")
    ax.axhline(floor, color="black", lw=0.7, ls="--")
    ax.text(top[-1], floor * 3, f"floor {floor:.1e} = {rest:,} / (e^{cap:g} + {rest:,})",
            ha="right", va="bottom", fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylim(max(left_raw[-1], floor * 1e-12), 1.5)
    ax.set_xlim(0, top[-1])
    ax.set_xlabel(f"logit of one key (the other {rest:,} at 0)")
    ax.set_ylabel(f"attention left for the other {rest:,}")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"one key among {n_keys:,}: the cap keeps a floor, but a tiny one", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# the mask
# --------------------------------------------------------------------------------------------
def causal_mask(lengths: Sequence[int] = (5, 3), num_tokens: int | None = None) -> Figure:
    """Which keys each query may see, for a batch whose row b holds ``lengths[b]`` real tokens
    followed by padding up to ``num_tokens`` (default: the longest row). Key s is visible to
    query t iff s ≤ t (not in the future) and s is a real token. One panel per row."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be one or more positive numbers, got {lengths}")
    T = max(lengths) if num_tokens is None else int(num_tokens)
    if T < max(lengths):
        raise ValueError(f"num_tokens={T} is shorter than the longest row ({max(lengths)})")
    if T > 24:
        raise ValueError(f"num_tokens={T}: at most 24 tokens fit a readable picture")
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#e6e6e6", "#f4c7a1", "#2c7fb8"])  # hidden, hidden: padding, seen
    n = len(lengths)
    fig = Figure(figsize=(min(3.3 * n + 0.6, 10), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    t = np.arange(T)
    for ax, length in zip(axes, lengths, strict=True):
        real = t < length
        visible = (t[None, :] <= t[:, None]) & real[None, :]
        grid = np.where(visible, 2, np.where(real[None, :], 0, 1))
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        if T <= 12:
            for (i, j), v in np.ndenumerate(visible):
                ax.text(j, i, "1" if v else "0", ha="center", va="center", fontsize=8,
                        color="white" if v else "#555555")  # fmt: skip
        names = [str(i) if i < length else f"{i}·pad" for i in range(T)]
        ax.set_xticks(range(T), names, rotation=90, fontsize=8)
        ax.set_yticks(range(T), names, fontsize=8)
        ax.set_xlabel("key s", fontsize=9)
        ax.set_ylabel("query t", fontsize=9)
        pads = T - length
        ax.set_title(f"{length} real tokens" + (f" + {pads} padding" if pads else ""), fontsize=9)
    fig.suptitle(
        "visible (blue, 1): key s ≤ query t and s is a real token; "
        "grey: the future; orange: padding",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------------------------
# the KV memory
# --------------------------------------------------------------------------------------------
def kv_memory_fill(
    cfg=None,
    prompt_len: int = 4,
    new_tokens: int = 3,
    max_len: int = 8,
    *,
    labels: Sequence[str] | None = None,
    dtype="bfloat16",
    title: str | None = None,
) -> Figure:
    """The KV memory after each call of a decode: a prefill writes the ``prompt_len`` prompt
    tokens' keys and values into slots 0 … prompt_len − 1, then each decode call writes one
    slot, the one ``step`` points at, and advances ``step``. Rows: after each call; columns:
    the ``max_len`` slots; dark: written by that call, light: written before, white: empty;
    a red frame marks ``step`` (the next slot to write). One slot holds every layer's k and v
    for one token: 2 × L × K × H values of ``dtype``."""
    import jax.numpy as jnp

    cfg = config_or_grok1(cfg)
    if prompt_len < 1 or new_tokens < 0 or prompt_len + new_tokens > max_len:
        raise ValueError(
            f"need prompt_len ≥ 1, new_tokens ≥ 0 and prompt_len + new_tokens ≤ max_len; "
            f"got {prompt_len}, {new_tokens}, {max_len}"
        )
    if labels is not None and len(labels) < prompt_len + new_tokens:
        raise ValueError(f"{len(labels)} labels for {prompt_len + new_tokens} tokens")
    calls = 1 + new_tokens
    grid = np.zeros((calls, max_len))
    for i in range(calls):
        step = prompt_len + i  # after call i
        grid[i, :step] = 1
        grid[i, (0 if i == 0 else step - 1) : step] = 2
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(10, 1.7 + 0.26 * calls), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=2.4, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(max_len + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(calls + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#bbbbbb", lw=0.5)
    ax.tick_params(which="minor", length=0)
    for i in range(calls):
        step = prompt_len + i
        if step < max_len:  # the next slot to write
            ax.add_patch(
                Rectangle((step - 0.45, i - 0.4), 0.9, 0.8, fill=False, ec="#d62728", lw=1.5)
            )
        ax.text(max_len - 0.3, i, f"step = {step}", va="center", fontsize=8)
    ax.set_xlim(-0.5, max_len - 0.5 + max(1.6, max_len * 0.12))
    names = ["prefill"] + [f"decode {i}" for i in range(1, calls)]
    ax.set_yticks(range(calls), names, fontsize=8)
    tick = list(labels[: prompt_len + new_tokens]) if labels is not None else []
    tick += [str(s) for s in range(len(tick), max_len)]
    ax.set_xticks(range(max_len), tick, fontsize=8, rotation=90 if labels is not None else 0)
    ax.set_xlabel(f"slot (= position) of the KV memory, {max_len} slots")
    L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.key_size
    per = 2 * L * K * H * jnp.dtype(dtype).itemsize
    ax.set_title(
        title
        or "after each call: dark = the slots it wrote, light = written before, white = empty; "
        "red frame = slot step, the next to write\n"
        f"one slot = 2 (k, v) × {L} layers × {K} KV heads × {H} = {2 * L * K * H:,} values "
        f"= {format_bytes(per)} in {jnp.dtype(dtype).name}",
        fontsize=9,
    )
    return fig
