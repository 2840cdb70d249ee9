"""Concept pictures for notebook 02: RoPE: pairs of coordinates rotating with position.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Arc, FancyArrowPatch, Rectangle

from grok_flax.viz.figures import config_or_grok1

__all__: list[str] = [
    "rope_angle_error",
    "rope_pairing",
    "rope_relative_angle",
    "rope_rotating_pairs",
]


def _theta(key_size: int, base: float) -> np.ndarray:
    """θᵢ = base^(−2i/H) for the H/2 pairs, float64."""
    return base ** (-np.arange(0, key_size, 2, dtype=np.float64) / key_size)


def _default_pairs(half: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, half - 1, min(4, half))})


def _default_positions(context: int) -> list[int]:
    ps = [p for p in (0, 1, 2, 3) if p < context]
    ps += [10**k for k in range(1, 8) if 10**k < context - 1]
    return sorted({*ps, context - 1})


def _turns(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def rope_rotating_pairs(
    cfg=None,
    *,
    pairs: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
) -> Figure:
    """A few of RoPE's feature pairs as 2-D vectors, rotated by p·θᵢ at several positions p.

    One polar panel per pair (default: four pairs from the fastest, 0, to the slowest, H/2−1);
    each position is a dot at angle p·θᵢ, drawn on its own ring (ring k = the k-th position
    listed) only so that dots at the same angle stay visible: a rotation never changes a
    vector's length. Fast pairs spin many turns over the context, slow ones barely move."""
    cfg = config_or_grok1(cfg)
    H, base, context = cfg.key_size, float(cfg.rope_base), cfg.sequence_len
    half = H // 2
    pairs = _default_pairs(half) if pairs is None else [int(i) for i in pairs]
    positions = _default_positions(context) if positions is None else [int(p) for p in positions]
    if not pairs or any(not 0 <= i < half for i in pairs):
        raise ValueError(f"pairs must be in 0 … {half - 1} (key size {H}), got {pairs}")
    if not positions or any(p < 0 for p in positions):
        raise ValueError(f"positions must be ≥ 0 (and at least one), got {positions}")
    theta = _theta(H, base)
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(positions)))
    fig = Figure(figsize=(3.3 * len(pairs) + 1.6, 4.3), layout="constrained")
    for j, i in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), j + 1, projection="polar")
        for k, (p, c) in enumerate(zip(positions, colors, strict=True)):
            a = (p * theta[i]) % (2 * np.pi)
            ax.plot([a, a], [0, k + 1], color=c, lw=1.2)
            ax.plot([a], [k + 1], "o", color=c, ms=6, label=f"p = {p:,}" if j == 0 else None)
        ax.set_ylim(0, len(positions) + 0.6)
        ax.set_yticks([])
        ax.set_xticks(np.radians([0, 90, 180, 270]), ["0", "π/2", "π", "3π/2"], fontsize=8)
        ax.tick_params(axis="x", pad=1)
        wave = 2 * np.pi / theta[i]
        last = positions[-1] * theta[i] / (2 * np.pi)
        ax.set_title(
            f"pair {i} (features {i}, {i + half})\nθ = {theta[i]:.3g} rad/position\n"
            f"1 turn / {_turns(wave)} positions\n{_turns(last)} turns by p = {positions[-1]:,}",
            fontsize=9,
        )
    fig.get_layout_engine().set(wspace=0.1)
    fig.legend(loc="outside right center", fontsize=8, title="position", title_fontsize=8)
    fig.suptitle(
        f"RoPE rotates each feature pair by p·θᵢ, θᵢ = {base:g}^(−2i/{H}) "
        f"(ring = which position, not length)",
        fontsize=10,
    )
    return fig


def _box_row(ax, y, slots, colors, h=0.8):
    """Draw a row of feature boxes; slots: feature index or None (an ellipsis). Returns the x
    centre of every shown feature, {index: x}."""
    xs = {}
    for s, f in enumerate(slots):
        if f is None:
            ax.text(s + 0.5, y + h / 2, "…", ha="center", va="center", fontsize=11)
            continue
        ax.add_patch(Rectangle((s + 0.05, y), 0.9, h, facecolor=colors[f], edgecolor="black"))
        ax.text(s + 0.5, y + h / 2, str(f), ha="center", va="center", fontsize=8)
        xs[f] = s + 0.5
    return xs


def _link(ax, x0, x1, y, color, height):
    """An arc above a row from x0 to x1, its top ``height`` above y."""
    mid, w = (x0 + x1) / 2, abs(x1 - x0)
    ax.add_patch(Arc((mid, y), w, 2 * height, theta1=0, theta2=180, color=color, lw=1.6))


def rope_pairing(cfg=None) -> Figure:
    """Which features of a head RoPE rotates together: Grok-1's "rotate-half" layout (feature i
    with i + H/2) against the RoPE paper's neighbouring pairs (2i, 2i+1). Boxes of one colour
    form one pair and turn by the same angle p·θᵢ; a head wider than 16 features is shown with
    its middle elided."""
    cfg = config_or_grok1(cfg)
    H = cfg.key_size
    half = H // 2
    theta = _theta(H, float(cfg.rope_base))
    shown = list(range(half)) if H <= 16 else [0, 1, 2, 3, half - 1]
    palette = colormaps["tab10"].colors
    pair_color = {i: palette[n % 10] for n, i in enumerate(shown)}
    grey = "#eeeeee"
    half_color = {f: pair_color.get(f % half, grey) for f in range(H)}
    inter_color = {f: pair_color.get(f // 2, grey) for f in range(H)}
    if H <= 16:
        top, bottom = list(range(H)), list(range(H))
    else:
        top = [0, 1, 2, 3, None, half - 1, half, half + 1, half + 2, half + 3, None, H - 1]
        bottom = [0, 1, 2, 3, 4, 5, 6, 7, None, H - 2, H - 1]
    width = max(len(top), len(bottom))
    fig = Figure(figsize=(max(7.0, 0.62 * width + 2.4), 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-0.9, 6.2)
    ax.axis("off")
    xs = _box_row(ax, 3.2, top, half_color)
    split = top.index(half) if half in top else len(top) // 2
    for lo, hi, text in ((0, split, f"x₁ = x[:{half}]"), (split, len(top), f"x₂ = x[{half}:]")):
        ax.text((lo + hi) / 2, 2.85, text, ha="center", va="center", fontsize=8)
    for n, i in enumerate(shown):
        if i in xs and i + half in xs:
            _link(ax, xs[i], xs[i + half], 4.0, pair_color[i], 0.45 + 0.22 * n)
    ax.text(
        0,
        5.85,
        f"Grok-1's layout, rotate-half: pair i = features (i, i + {half})",
        fontsize=10,
        fontweight="bold",
    )
    xs = _box_row(ax, 0.4, bottom, inter_color)
    for i in shown:
        if 2 * i in xs and 2 * i + 1 in xs:
            _link(ax, xs[2 * i], xs[2 * i + 1], 1.2, pair_color[i], 0.35)
    ax.text(
        0,
        2.3,
        "RoPE paper (and Meta's original Llama code): pair i = features (2i, 2i + 1)",
        fontsize=10,
        fontweight="bold",
    )
    legend = "   ".join(f"pair {i}: θ = {theta[i]:.3g}" for i in shown)
    ax.text(0, -0.55, f"same colour = same pair, same angle p·θᵢ.   {legend}", fontsize=8)
    fig.suptitle(f"Which {H} features turn together (key size {H}, {half} pairs)", fontsize=11)
    return fig


def rope_relative_angle(cfg=None, *, pair: int | None = None, shift: int | None = None) -> Figure:
    """Why ⟨R_m q, R_n k⟩ depends on m − n only, in one pair's plane: q rotated by m·θᵢ and k by
    n·θᵢ. Shifting both by the same ``shift`` turns them together (the angle between them, so
    their dot product, is unchanged); changing the distance m − n changes it.

    ``pair`` defaults to the pair whose θᵢ is closest to 0.3 rad per position, so the turns
    are visible; ``shift`` defaults to about 2 rad worth of positions."""
    cfg = config_or_grok1(cfg)
    H, base = cfg.key_size, float(cfg.rope_base)
    theta = _theta(H, base)
    i = int(np.argmin(np.abs(theta - 0.3))) if pair is None else int(pair)
    if not 0 <= i < H // 2:
        raise ValueError(f"pair must be in 0 … {H // 2 - 1} (key size {H}), got {pair}")
    th = theta[i]
    s = max(1, int(round(2.0 / th))) if shift is None else int(shift)
    if s < 0:
        raise ValueError(f"shift must be ≥ 0, got {shift}")
    q0 = k0 = np.radians(20.0)  # q's and k's pair, the same direction at position 0
    rq, rk = 1.0, 0.8
    cases = [
        (5, 2, "q at m = 5, k at n = 2"),
        (5 + s, 2 + s, f"both shifted by {s:,}: m = {5 + s:,}, n = {2 + s:,}"),
    ]
    cases.append((9, 2, "distance changed: m = 9, n = 2"))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for j, (m, n, label) in enumerate(cases):
        ax = fig.add_subplot(1, 3, j + 1)
        aq, ak = q0 + m * th, k0 + n * th
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="#dddddd", lw=0.8)
        ax.plot([0, np.cos(q0)], [0, np.sin(q0)], color="grey", ls=":", lw=1)
        ax.text(1.05 * np.cos(q0), 1.05 * np.sin(q0), "p = 0", color="grey", fontsize=8)
        for a, r, c, name in ((aq, rq, "tab:red", "q"), (ak, rk, "tab:blue", "k")):
            tip = (r * np.cos(a), r * np.sin(a))
            ax.add_patch(
                FancyArrowPatch((0, 0), tip, arrowstyle="-|>", mutation_scale=14, color=c, lw=2)
            )
            ax.text(1.18 * tip[0], 1.18 * tip[1], name, color=c, fontsize=11, ha="center")
        lo, hi = sorted((np.degrees(aq), np.degrees(ak)))
        if hi - lo > 180:
            lo, hi = hi, lo + 360
        ax.add_patch(Arc((0, 0), 0.6, 0.6, theta1=lo, theta2=hi, color="black", lw=1.2))
        mid = np.radians((lo + hi) / 2)
        ax.text(0.62 * np.cos(mid), 0.62 * np.sin(mid), "(m−n)θ", fontsize=8, ha="center")
        dot = rq * rk * np.cos(aq - ak)
        gap = np.degrees(np.angle(np.exp(1j * (aq - ak))))
        ax.set_title(
            f"{label}\nm − n = {m - n}: angle q→k {abs(gap):.0f}°, q·k = {dot:+.3f}", fontsize=9
        )
        ax.set_xlim(-1.35, 1.35)
        ax.set_ylim(-1.35, 1.35)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"One pair's plane (pair {i}, θ = {th:.3g} rad/position): "
        f"q turns by m·θ, k by n·θ, and q·k sees only (m − n)·θ",
        fontsize=10,
    )
    return fig


def rope_angle_error(
    cfg=None, *, dtypes: Sequence[str] = ("float32",), samples: int = 128
) -> Figure:
    """How wrong the angles p·θᵢ are when the positions, the θᵢ and their product are held in
    ``dtypes`` (the library uses float32) instead of exactly: the worst pair's error, wrapped to
    [0, π] radians, at ``samples`` positions across the context (log scale)."""
    import ml_dtypes

    cfg = config_or_grok1(cfg)
    H, base, context = cfg.key_size, float(cfg.rope_base), cfg.sequence_len
    known = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
    bad = [d for d in dtypes if d not in known]
    if bad or not dtypes:
        raise ValueError(f"dtypes must be among {sorted(known)}, got {list(dtypes)}")
    if samples < 2:
        raise ValueError(f"samples must be ≥ 2, got {samples}")
    pos = np.unique(np.linspace(1, context - 1, samples).round().astype(np.int64))
    exact = pos[:, None] * _theta(H, base)[None]
    theta32 = _theta(H, base).astype(np.float32)  # the library's inverse_frequencies
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    ax = fig.add_subplot()
    worst = []
    for d in dtypes:
        t = known[d]
        angle = (pos.astype(t)[:, None] * theta32.astype(t)[None]).astype(np.float64)
        err = np.abs((angle - exact + np.pi) % (2 * np.pi) - np.pi).max(axis=1)
        ax.semilogy(pos, np.maximum(err, 1e-9), label=f"{d}: worst {err.max():.2g} rad")
        worst.append(err.max())
    ax.axhline(np.pi, color="grey", ls="--", lw=0.8)
    ax.text(pos[0], np.pi * 2.2, "π: the angle could be anything", fontsize=8, color="grey")
    ax.set_ylim(top=max(100.0, 30 * max(worst)))
    ax.set_xlabel("position p")
    ax.set_ylabel("angle error (rad), worst pair")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"p·θᵢ computed in {', '.join(dtypes)} vs exact, positions 1 … {context - 1:,} "
        f"(key size {H}, base {base:g})",
        fontsize=10,
    )
    return fig
