"""Concept pictures for notebook 04: the router and the experts: top-2 routing, one GeGLU
expert, sort → pad → tile dispatch, and how much work dense and sparse dispatch do.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from grok_flax.viz.figures import _expert_colors

__all__ = ["dispatch_work", "geglu_expert", "sparse_dispatch", "top_k_routing"]

_GREY = "#c8c8c8"


def _example_probs(num_experts: int) -> np.ndarray:
    """A fixed, plausible router distribution (one clear favourite, one runner-up)."""
    logits = np.random.default_rng(4).normal(0.0, 0.3, num_experts)
    logits[min(2, num_experts - 1)] += 1.5
    logits[0] += 1.0
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _box(ax, x, y, w, h, text, *, fill="#fde3c8", fontsize=9, bold=False):
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=fill,
            edgecolor="#555555",
            lw=1.0,
        )
    )
    ax.text(
        x + w / 2,
        y + h / 2,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        fontweight="bold" if bold else "normal",
    )


def _arrow(ax, a, b, text=None, *, fontsize=8, offset=(0.0, 0.12)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color="#444444"))
    if text:
        mx, my = (a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=fontsize, color="#333333")


# ------------------------------------------------------------------------------ top-k routing
def top_k_routing(cfg, probs=None, *, token: str | None = None) -> Figure:
    """One token through the router, left to right: the softmax over all E experts (fp32),
    the top k picked, and the gates those k probabilities become — as Grok-1 uses them (not
    renormalised) next to what renormalising would give.

    ``cfg``: a ``GrokConfig`` (E, k and the width D come from it). ``probs`` [E]: the token's
    router probabilities (default: a fixed example distribution); ``token``: its label."""
    E, k, D = cfg.num_experts, cfg.num_selected_experts, cfg.emb_size
    p = _example_probs(E) if probs is None else np.asarray(probs, np.float64).reshape(-1)
    if p.size != E:
        raise ValueError(f"probs must hold one probability per expert ({E}), got {p.size}")
    if (p < 0).any() or abs(p.sum() - 1) > 1e-3:
        raise ValueError(f"probs must be a probability distribution (sum {p.sum():.4f})")
    chosen = np.argsort(-p, kind="stable")[:k]
    gates = p[chosen]
    total = float(gates.sum())
    cmap = _expert_colors(E)

    fig = Figure(figsize=(10.5, 3.7), layout="constrained")
    ax, gx, cx = fig.subplots(1, 3, width_ratios=[1.5, 1.0, 1.25])
    colors = [cmap(e) if e in chosen else _GREY for e in range(E)]
    ax.bar(range(E), p, color=colors, edgecolor="black", lw=0.6)
    for rank, e in enumerate(chosen):
        ax.text(e, p[e] + 0.01, f"#{rank + 1}\n{p[e]:.2f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(1 / E, color="black", ls=":", lw=1)
    ax.text(E - 0.5, 1 / E, f"uniform 1/{E}", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(E))
    ax.set_xlabel("expert", fontsize=9)
    ax.set_ylabel("router probability", fontsize=9)
    ax.set_ylim(0, min(1.0, p.max() * 1.35 + 0.06))
    who = f"token {token!r}: " if token is not None else ""
    ax.set_title(
        f"1. {who}p = softmax(x · W_r), W_r [{D} × {E}]\nfp32, over all {E} experts; "
        f"top {k} picked",
        fontsize=9,
    )

    # 2. the gates: raw (Grok-1) and renormalised, as stacked bars
    for col, (vals, name) in enumerate(((gates, "Grok-1:\nraw"), (gates / total, "renormalised"))):
        bottom = 0.0
        for e, v in zip(chosen, vals, strict=True):
            gx.bar(col, v, bottom=bottom, color=cmap(e), edgecolor="black", lw=0.6, width=0.6)
            gx.text(col, bottom + v / 2, f"e{e}: {v:.2f}", ha="center", va="center", fontsize=8)
            bottom += v
        gx.text(col, bottom + 0.02, f"Σ = {bottom:.2f}", ha="center", va="bottom", fontsize=9)
        gx.text(col, -0.04, name, ha="center", va="top", fontsize=8)
    gx.axhline(1.0, color="black", ls=":", lw=1)
    gx.set_xlim(-0.6, 1.6)
    gx.set_ylim(-0.2, 1.2)
    gx.set_xticks([])
    gx.set_yticks([0, 0.5, 1.0])
    gx.set_ylabel("gate", fontsize=9)
    gx.set_title(
        f"2. gates = the top-{k} probabilities\n(Grok-1 does not rescale them)", fontsize=9
    )

    # 3. the combine, as a formula with this token's numbers
    cx.axis("off")
    terms = " + ".join(f"{g:.2f}·expert{e}(x)" for g, e in zip(gates, chosen, strict=True))
    idle = E - k
    lines = [
        "3. the MoE output of this token:",
        "",
        f"y = {terms}",
        "",
        f"the gates sum to {total:.2f}, not 1:",
        f"so y is scaled by {total:.2f} overall",
        "",
        f"{idle} of {E} experts are not run",
        f"for this token ({k / E:.0%} of the expert work)",
    ]
    cx.text(0.0, 0.95, "\n".join(lines), ha="left", va="top", fontsize=9, wrap=True)
    fig.suptitle(f"Top-{k} routing over {E} experts", fontsize=11)
    return fig


# ------------------------------------------------------------------------------- GeGLU expert
def geglu_expert(cfg) -> Figure:
    """One expert, a GeGLU feed-forward block, with the release's weight names and the sizes
    of ``cfg``: two projections up to F, gelu on one, their product, one projection back to D;
    below, the parameter count per expert, per layer and over all layers."""
    D, F, E, L = cfg.emb_size, cfg.ffn_size, cfg.num_experts, cfg.num_layers
    per = 3 * D * F
    fig = Figure(figsize=(10, 3.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3.4)
    ax.axis("off")
    _box(ax, 0.1, 1.55, 1.2, 0.6, f"x\n[T, {D}]", fill="#f2f2f2")
    _box(ax, 2.0, 2.25, 2.0, 0.7, f"linear  W\n[{D} × {F}]")
    _box(ax, 2.0, 0.75, 2.0, 0.7, f"linear_v  V\n[{D} × {F}]")
    _box(ax, 4.7, 2.3, 1.1, 0.6, "gelu\n(tanh)", fill="#e6e6e6")
    ax.add_patch(Rectangle((6.25, 1.6), 0.5, 0.5, facecolor="#ffffff", edgecolor="#555555"))
    ax.text(6.5, 1.85, "⊙", ha="center", va="center", fontsize=14)
    _box(ax, 7.15, 1.5, 1.6, 0.7, f"linear_1  W₁\n[{F} × {D}]")
    _box(ax, 9.0, 1.55, 0.95, 0.6, f"y\n[T, {D}]", fill="#f2f2f2")
    _arrow(ax, (1.3, 1.95), (2.0, 2.55))
    _arrow(ax, (1.3, 1.75), (2.0, 1.1))
    _arrow(ax, (4.0, 2.6), (4.7, 2.6), f"[T, {F}]", offset=(0, 0.06))
    _arrow(ax, (5.8, 2.6), (6.45, 2.1))
    _arrow(ax, (4.0, 1.1), (6.45, 1.6), f"[T, {F}]", offset=(0.3, -0.3))
    _arrow(ax, (6.75, 1.85), (7.15, 1.85))
    _arrow(ax, (8.75, 1.85), (9.0, 1.85))
    ax.text(
        5.0,
        0.3,
        f"3 × {D} × {F} = {per:,} parameters per expert;  × {E} experts = {E * per:,} "
        f"per layer;  × {L} layers = {L * E * per / 1e9:,.1f} B",
        ha="center",
        va="center",
        fontsize=9,
    )
    ax.text(
        5.0,
        3.2,
        f"One expert: y = (gelu(x W) ⊙ x V) W₁ — F = {F:,} is {F / D:.2f} × D = {D:,}",
        ha="center",
        va="center",
        fontsize=11,
    )
    return fig


# ------------------------------------------------------------------------- sort → pad → tile
def sparse_dispatch(experts, num_experts: int, tile: int, *, cfg=None) -> Figure:
    """Tiled (sparse) dispatch of a small batch, in three columns: the (token, slot) pairs in
    token order, coloured by their expert; the same pairs sorted by expert (stable); each
    expert's group padded to whole tiles of ``tile`` rows, every tile one matmul with one
    expert's weights. ``experts`` [N, k]: the chosen experts of N tokens (at most 40 pairs,
    to stay legible); ``cfg``: a ``GrokConfig`` whose D and F label the matmuls."""
    e = np.asarray(experts)
    if e.ndim != 2 or e.size == 0:
        raise ValueError(f"experts must be [N tokens, k choices], got shape {e.shape}")
    if not np.issubdtype(e.dtype, np.integer) or e.min() < 0 or e.max() >= num_experts:
        raise ValueError(f"experts must be integer expert ids in 0..{num_experts - 1}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1 row, got {tile}")
    N, k = e.shape
    A = N * k
    if A > 40:
        raise ValueError(f"{A} (token, expert) pairs are too many to draw legibly (at most 40)")
    flat = e.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=num_experts)
    tiles = -(-counts // tile)
    rows = int(tiles.sum() * tile)
    D, F = (cfg.emb_size, cfg.ffn_size) if cfg is not None else ("D", "F")
    cmap = _expert_colors(num_experts)

    fig = Figure(figsize=(10, 0.26 * max(A, rows) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.2, 10.2)
    ax.set_ylim(max(A, rows) + 0.3, -1.4)
    ax.axis("off")
    x_cols = (0.3, 3.3, 6.3)
    heads = ("pairs in token order", "sorted by expert", f"padded to tiles of {tile}")
    for x0, head in zip(x_cols, heads, strict=True):
        ax.text(x0 + 0.7, -0.8, head, ha="center", va="center", fontsize=9, fontweight="bold")

    def cell(x0, r, pair):
        n, slot, ex = pair // k, pair % k, flat[pair]
        ax.add_patch(Rectangle((x0, r), 1.4, 0.9, facecolor=cmap(ex), edgecolor="white"))
        ax.text(x0 + 0.7, r + 0.45, f"t{n}·{slot} → e{ex}", ha="center", va="center", fontsize=8)

    for r in range(A):
        cell(x_cols[0], r, r)
        cell(x_cols[1], r, int(order[r]))
    r, start = 0, 0
    tile_no = 0
    for ex in range(num_experts):
        group = order[start : start + counts[ex]]
        start += counts[ex]
        for t in range(tiles[ex]):
            for j in range(tile):
                i = t * tile + j
                if i < len(group):
                    cell(x_cols[2], r + j, int(group[i]))
                else:
                    ax.add_patch(
                        Rectangle((x_cols[2], r + j), 1.4, 0.9, facecolor="#f4f4f4", ec="#999999")
                    )
                    ax.text(x_cols[2] + 0.7, r + j + 0.45, "pad (0)", ha="center", va="center",
                            fontsize=8, color="#777777")  # fmt: skip
            ax.add_patch(
                Rectangle((x_cols[2] - 0.05, r - 0.05), 1.5, tile, fill=False, ec="black", lw=1.4)
            )
            ax.text(
                x_cols[2] + 1.65,
                r + tile / 2 - 0.05,
                f"tile {tile_no} → expert {ex}: [{tile} × {D}] @ [{D} × {F}]",
                ha="left",
                va="center",
                fontsize=8,
            )
            r += tile
            tile_no += 1
    for x0 in x_cols[:2]:
        _arrow(ax, (x0 + 1.6, A / 2), (x0 + 2.8, A / 2))
    idle = int((counts == 0).sum())
    fig.suptitle(
        f"{N} tokens × top-{k} = {A} pairs → {tile_no} tiles of {tile} rows "
        f"({rows - A} padding rows; {idle} expert(s) got no pair and run nothing). "
        f"Dense would run all {num_experts} experts on all {A} pairs: {num_experts * A} rows.",
        fontsize=9,
        wrap=True,
    )
    return fig


# ------------------------------------------------------------------ dense vs sparse: the work
def dispatch_work(cfg, batches: Sequence[int] = (1, 2, 4, 8, 16)) -> Figure:
    """What dense (the reference) and sparse dispatch cost in one MoE layer of ``cfg``.

    Left, arithmetic per token: dense runs every routed copy through all E experts, sparse
    only through its own — E× fewer FLOPs, whatever the batch. Right, the int8 expert
    weights one decode step reads, against the batch B: dense reads all E experts once;
    gather reads k experts per token (k·B copies), so it reads less only while k·B < E."""
    E, k, D, F = cfg.num_experts, cfg.num_selected_experts, cfg.emb_size, cfg.ffn_size
    b = np.asarray(sorted(set(int(x) for x in batches)))
    if b.size == 0 or b.min() < 1:
        raise ValueError(f"batches must be positive batch sizes, got {list(batches)!r}")
    per = 3 * D * F  # parameters (= int8 bytes) of one expert
    flops_sparse = 2 * per * k  # per token: k experts, 2 FLOPs per multiply-add
    flops_dense = E * flops_sparse
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[0.8, 1.2])
    bars = ax.bar([0, 1], [flops_dense / 1e9, flops_sparse / 1e9], color=["#9e9e9e", "#e377c2"])
    for bar, v in zip(bars, (flops_dense, flops_sparse), strict=True):
        ax.text(bar.get_x() + 0.4, v / 1e9, f"{v / 1e9:,.1f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], [f"dense:\nall {E} experts", f"sparse:\nthe {k} chosen"], fontsize=9)
    ax.set_ylabel("expert GFLOP per token, one layer", fontsize=9)
    ax.set_ylim(0, flops_dense / 1e9 * 1.2)
    ax.set_title(f"Arithmetic: dense does {E}× the work\n(at every batch size)", fontsize=10)

    dense_b = np.full(b.shape, E * per / 1e9)
    gather_b = k * b * per / 1e9
    bx.plot(b, dense_b, "s-", color="#9e9e9e", label=f"dense: all {E} experts, once")
    bx.plot(b, gather_b, "o-", color="#e377c2", label=f"gather: {k} experts per token ({k}·B)")
    cross = E / k
    bx.axvline(cross, color="black", ls=":", lw=1)
    bx.text(cross, bx.get_ylim()[1] * 0.97, f" B = {E}/{k} = {cross:g}: equal", fontsize=8,
            va="top")  # fmt: skip
    for bb in (1, 8):
        if bb in b:
            ratio = (E * per) / (k * bb * per)
            word = f"{ratio:g}× fewer" if ratio > 1 else f"{1 / ratio:g}× more"
            bx.annotate(f"B={bb}: gather reads {word}", (bb, k * bb * per / 1e9),
                        xytext=(8, 8 if ratio > 1 else -4), textcoords="offset points",
                        fontsize=8)  # fmt: skip
    bx.set_xscale("log", base=2)
    bx.set_xticks(b, [str(x) for x in b])
    bx.set_xlabel("tokens decoded together (batch B)", fontsize=9)
    bx.set_ylabel("int8 expert GB read per step", fontsize=9)
    bx.legend(fontsize=8, loc="upper left")
    bx.set_title("Bytes in a decode step: gather wins only while k·B < E", fontsize=10)
    fig.suptitle(
        f"One MoE layer, D = {D:,}, F = {F:,}, {E} experts, top-{k}: "
        f"{per / 1e9:.2f} G parameters (int8 bytes) per expert",
        fontsize=10,
    )
    return fig
