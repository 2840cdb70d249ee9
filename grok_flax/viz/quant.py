"""Concept pictures for notebook 05: int8 weights: the block-scale layout.

- ``quantize_block``: a few numbers of one scale block through quantize → dequantize;
- ``block_scale_layout``: a weight ``[in, out]`` cut into G scale blocks along its input axis,
  each block's int8 values times one bf16 scale per output column;
- ``grok1_quant_shapes``: the int8 weights of one decoder layer, drawn to scale, with G;
- ``scale_blocks_on_mesh``: why ``linear_1`` has 8 blocks — one per device of the 1×8 mesh.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from grok_flax.viz.figures import config_or_grok1

__all__ = ["block_scale_layout", "grok1_quant_shapes", "quantize_block", "scale_blocks_on_mesh"]

_BLOCK_FILLS = ("#dbe9f6", "#fde3c8", "#dff0d8", "#eadcf2", "#f9f3d2", "#f6d5d5")


def _int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {value!r}")
    return int(value)


def _fmt(x: float) -> str:
    """A float in at most 4 significant digits, without exponent for ordinary weights."""
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def quantize_block(values, *, title: str | None = None) -> Figure:
    """One scale block of one output column — the ``values`` that share a scale — through
    ``grok_flax.quantize``: the float weights, w / s, the int8 codes, q × s and the error.

    ``values``: 2 to 16 finite numbers (drawn left to right; in the weight they are
    consecutive input rows of one column)."""
    import jax.numpy as jnp

    from grok_flax.quant import quantize

    w = np.asarray(values, dtype=np.float64).ravel()
    if not 2 <= w.size <= 16:
        raise ValueError(f"quantize_block: give 2 to 16 values, got {w.size}")
    if not np.all(np.isfinite(w)):
        raise ValueError("quantize_block: the values must be finite")
    w32 = w.astype(np.float32)
    q = quantize(w32[:, None], 1)
    s = float(np.asarray(q.scales, np.float32)[0, 0])
    codes = np.asarray(q.weight)[:, 0].astype(int)
    deq = np.asarray(q.dequantize(jnp.float32))[:, 0].astype(np.float64)
    err = deq - w32
    n = w.size
    big = int(np.argmax(np.abs(w32)))
    fig = Figure(figsize=(min(12.0, 2.6 + 1.0 * n), 3.9))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-2.4, n)
    ax.set_ylim(-0.9, 5.9)
    ax.axis("off")
    rows = [
        ("w (float32)", [_fmt(v) for v in w32], "#ffffff"),
        ("w / s", [f"{v:.2f}" for v in w32 / s], "#f2f2f2"),
        ("q = round(w / s)\n(int8, stored)", [str(c) for c in codes], "#dbe9f6"),
        ("q × s", [_fmt(v) for v in deq], "#ffffff"),
        ("error q×s − w\n(in steps s)", [f"{e / s:+.2f}" for e in err], "#dff0d8"),
    ]
    for r, (label, texts, face) in enumerate(rows):
        y = 4.6 - 1.05 * r
        ax.text(-2.3, y, label, ha="left", va="center", fontsize=9, fontweight="bold")
        for i, t in enumerate(texts):
            edge, lw = ("tab:red", 2.0) if i == big else ("#777777", 0.8)
            ax.add_patch(Rectangle((i, y - 0.4), 0.94, 0.8, facecolor=face, edgecolor=edge, lw=lw))
            ax.text(i + 0.47, y, t, ha="center", va="center", fontsize=9)
    ax.text(
        -2.3,
        -0.55,
        f"s = max|w| / 127 × (1 + 2⁻⁷), stored in bf16 = {s:.6g}.   "
        f"Red: the largest |w| → {codes[big]:+d}, never past ±127.   "
        f"Every error is within ±½ step.",
        ha="left",
        va="center",
        fontsize=9,
    )
    ax.text(
        -2.3,
        5.6,
        title or f"One scale block: {n} weights of one output column share one bf16 scale",
        ha="left",
        va="center",
        fontsize=11,
    )
    return fig


def block_scale_layout(rows: int, cols: int, blocks: int, *, name: str = "w") -> Figure:
    """A weight ``[rows, cols]`` (in × out) stored as int8 of the same shape plus bf16 scales
    ``[blocks, cols]``: the input axis is cut into ``blocks`` equal blocks, and each (block,
    output column) has one scale. One such pair is marked in red. Schematic, not to scale;
    the numbers are the real ones."""
    rows, cols, G = _int("rows", rows), _int("cols", cols), _int("blocks", blocks)
    if rows % G:
        raise ValueError(f"block_scale_layout: {G} blocks do not divide {rows} input rows")
    per = rows // G
    fig = Figure(figsize=(11, 5.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 110)
    ax.set_ylim(-9, 60)
    ax.axis("off")
    x0, x1, top, h = 25, 58, 50, 44  # the weight's box
    band = h / G
    col_frac = 0.62  # where the marked column sits
    mark_g = min(1, G - 1)
    labelled = set(range(G)) if G <= 12 else {0, 1, G - 1}
    for g in range(G):
        y = top - (g + 1) * band
        ax.add_patch(
            Rectangle(
                (x0, y),
                x1 - x0,
                band,
                facecolor=_BLOCK_FILLS[g % len(_BLOCK_FILLS)],
                edgecolor="#444444",
                lw=0.8,
            )
        )
        if g in labelled:
            ax.text(
                x0 - 0.8,
                y + band / 2,
                f"block {g}: rows {g * per:,}–{(g + 1) * per - 1:,}",
                ha="right",
                va="center",
                fontsize=8,
            )
        elif g == 2:
            ax.text(x0 - 0.8, y + band / 2, "⋮", ha="right", va="center", fontsize=9)
    cx = x0 + col_frac * (x1 - x0)
    cy = top - (mark_g + 1) * band
    ax.add_patch(Rectangle((cx, cy), 1.2, band, facecolor="tab:red", edgecolor="tab:red"))
    ax.text(
        (x0 + x1) / 2,
        top + 2.5,
        f"{name}: int8 [{rows:,}, {cols:,}]   (in × out)",
        ha="center",
        fontsize=10,
        fontweight="bold",
    )
    ax.text(
        x0 + 1.0,
        top - h - 2.5,
        f"out: {cols:,} columns →",
        ha="left",
        va="center",
        fontsize=9,
    )
    ax.annotate(
        "",
        xy=(x1 + 1.5, top - h),
        xytext=(x1 + 1.5, top),
        arrowprops=dict(arrowstyle="-|>", color="#444444"),
    )
    ax.text(
        x1 + 2.3,
        top - h / 2,
        f"in: {rows:,} rows\n(summed over\nin x @ w)",
        ha="left",
        va="center",
        fontsize=9,
    )
    # the scales [G, cols], one thin row per block
    sx0, sx1 = 79, 107
    s_h = min(band, 3.0)
    s_top = top - 6
    for g in range(G):
        y = s_top - (g + 1) * s_h
        ax.add_patch(
            Rectangle(
                (sx0, y),
                sx1 - sx0,
                s_h,
                facecolor=_BLOCK_FILLS[g % len(_BLOCK_FILLS)],
                edgecolor="#444444",
                lw=0.8,
            )
        )
    scx = sx0 + col_frac * (sx1 - sx0)
    scy = s_top - (mark_g + 1) * s_h
    ax.add_patch(Rectangle((scx, scy), 1.2, s_h, facecolor="tab:red", edgecolor="tab:red"))
    ax.text(
        (sx0 + sx1) / 2,
        s_top + 2.5,
        f"scales: bf16 [{G}, {cols:,}]",
        ha="center",
        fontsize=10,
        fontweight="bold",
    )
    ax.add_patch(
        FancyArrowPatch(
            (cx + 1.4, cy + band / 2),
            (scx - 0.3, scy + s_h / 2),
            arrowstyle="-|>",
            mutation_scale=12,
            color="tab:red",
            connectionstyle="arc3,rad=-0.15",
        )
    )
    ax.text(
        (sx0 + sx1) / 2,
        s_top - G * s_h - 3,
        f"one scale per (block, column):\n{per:,} int8 values share it",
        ha="center",
        va="top",
        fontsize=9,
        color="tab:red",
    )
    int8_bytes, scale_bytes = rows * cols, 2 * G * cols
    ax.text(
        2,
        -5.5,
        f"w[i, j] ≈ int8[i, j] × scales[i // {per:,}, j].   Bytes: int8 {int8_bytes:,} + "
        f"scales {scale_bytes:,} ({100 * scale_bytes / int8_bytes:.3g}% extra).",
        ha="left",
        va="center",
        fontsize=9,
    )
    return fig


def _layer_linears(cfg):
    """(name, part, experts, in, out, G) for the int8 weights of one decoder layer."""
    D, H, Nq, Nk = cfg.emb_size, cfg.key_size, cfg.num_q_heads, cfg.num_kv_heads
    E, F = cfg.num_experts, cfg.ffn_size
    return [
        ("attn.query", "attn", 0, D, Nq * H, 1),
        ("attn.key", "attn", 0, D, Nk * H, 1),
        ("attn.value", "attn", 0, D, Nk * H, 1),
        ("attn.linear", "attn", 0, Nq * H, D, cfg.attn_out_scale_blocks),
        ("moe.linear", "moe", E, D, F, 1),
        ("moe.linear_v", "moe", E, D, F, 1),
        ("moe.linear_1", "moe", E, F, D, cfg.moe_out_scale_blocks),
    ]


def grok1_quant_shapes(cfg=None) -> Figure:
    """The int8 weights of one decoder layer of ``cfg`` (Grok-1 by default), drawn to one
    scale (height = input rows, width = output columns; experts' weights: one expert of E),
    with their G scale blocks as lines across the input axis, and a table of the shapes."""

    cfg = config_or_grok1(cfg)
    if not getattr(cfg, "quantized", True):
        raise ValueError("grok1_quant_shapes: this config has float weights (quantized=False)")
    items = _layer_linears(cfg)
    max_in = max(it[3] for it in items)
    gap = 0.07 * max_in
    total = sum(it[4] for it in items) + gap * (len(items) - 1)
    draw_h = min(6.0, max(2.2, 11.5 * (max_in * 1.22) / (total * 1.006)))
    fig_h = draw_h + 2.9
    fig = Figure(figsize=(12, fig_h))
    ax = fig.add_axes((0.02, 2.3 / fig_h, 0.96, draw_h / fig_h))
    ax.set_xlim(-gap * 0.3, total + gap * 0.3)
    ax.set_ylim(-max_in * 1.04, max_in * 0.16)
    ax.set_aspect("equal")
    ax.axis("off")
    face = {"attn": "#dbe9f6", "moe": "#fde3c8"}
    x = 0.0
    for name, part, _, n_in, n_out, G in items:
        ax.add_patch(
            Rectangle((x, -n_in), n_out, n_in, facecolor=face[part], edgecolor="#333333", lw=0.9)
        )
        for g in range(1, G):
            yb = -n_in * g / G
            ax.plot([x, x + n_out], [yb, yb], color="tab:red", lw=1.0)
        narrow = n_out < 0.08 * total
        short = name.split(".")[1] if narrow else name
        ax.text(
            x + n_out / 2,
            max_in * 0.02,
            short,
            ha="center" if not narrow else "left",
            va="bottom",
            fontsize=9,
            rotation=0 if not narrow else 60,
            fontweight="bold",
        )
        if G > 1:
            ax.text(
                x + n_out / 2,
                -n_in - max_in * 0.01,
                f"G = {G}",
                ha="center",
                va="top",
                fontsize=9,
                color="tab:red",
            )
        x += n_out + gap
    fig.text(
        0.5,
        1 - 0.12 / fig_h,
        f"The int8 weights of one decoder layer (× {cfg.num_layers} layers), to scale: "
        "height = input rows, width = output columns;\nred lines: scale-block boundaries",
        ha="center",
        va="top",
        fontsize=10,
    )
    tx = fig.add_axes((0.02, 0.0, 0.96, 2.2 / fig_h))
    tx.axis("off")
    header = (
        f"{'weight':<14}{'int8 weight':<26}{'bf16 scales':<24}{'G':>3}   {'rows per block':>14}"
    )
    lines = [header]
    for name, _, E, n_in, n_out, G in items:
        lead = [E] if E else []
        wshape = str(lead + [n_in, n_out])
        sshape = str(lead + [G, n_out])
        lines.append(f"{name:<14}{wshape:<26}{sshape:<24}{G:>3}   {n_in // G:>14,}")
    tx.text(0.0, 0.97, "\n".join(lines), family="monospace", fontsize=9.5, va="top", ha="left")
    tx.text(
        0.0,
        0.04,
        "attention in blue, experts (one of E drawn) in orange. G > 1 only where the input axis "
        "is the one tensor parallelism splits (attn.linear, moe.linear_1).",
        fontsize=9,
        va="bottom",
        ha="left",
    )
    return fig


def scale_blocks_on_mesh(cfg=None, *, devices: int = 8, weight: str = "moe.linear_1") -> Figure:
    """One expert's ``linear_1`` (or attention's output ``linear``) as the release's mesh holds
    it: its input rows split over ``devices`` devices of the ``model`` axis (the reference
    shards int8 and scales alike: ``P(None, "model", None)``; ``P("model", "data")`` for
    attention), against the config's G scale blocks. With G = devices every device's slice is
    exactly one block: its scales depend on its rows only."""

    cfg = config_or_grok1(cfg)
    S = _int("devices", devices)
    if weight == "moe.linear_1":
        rows, G, spec = cfg.ffn_size, cfg.moe_out_scale_blocks, 'P(None, "model", None)'
    elif weight == "attn.linear":
        rows, G = cfg.num_q_heads * cfg.key_size, cfg.attn_out_scale_blocks
        spec = 'P("model", "data")'
    else:
        raise ValueError(
            f"scale_blocks_on_mesh: weight must be 'moe.linear_1' or 'attn.linear', got {weight!r}"
        )
    cols = cfg.emb_size
    if rows % S:
        raise ValueError(f"scale_blocks_on_mesh: {S} devices do not divide {rows} input rows")
    from matplotlib import colormaps

    cmap = colormaps["tab10" if S <= 10 else "tab20"]
    per_dev, per_block = rows // S, rows // G
    fig = Figure(figsize=(11, 6.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 110)
    ax.set_ylim(-14, 62)
    ax.axis("off")
    x0, x1, top, h = 22, 40, 54, 52
    for d in range(S):
        y = top - (d + 1) * h / S
        ax.add_patch(
            Rectangle((x0, y), x1 - x0, h / S, facecolor=cmap(d % cmap.N), alpha=0.55, lw=0)
        )
    for g in range(G + 1):
        yb = top - g * h / G
        ax.plot(
            [x0 - 1.2, x1 + 1.2], [yb, yb], color="black", lw=1.6, ls="--" if 0 < g < G else "-"
        )
    ax.plot([x0, x0], [top, top - h], color="black", lw=1.6)
    ax.plot([x1, x1], [top, top - h], color="black", lw=1.6)
    ax.text(
        (x0 + x1) / 2,
        top + 3.5,
        f"{weight} (one expert)\nint8 [{rows:,}, {cols:,}]"
        if weight == "moe.linear_1"
        else f"{weight}\nint8 [{rows:,}, {cols:,}]",
        ha="center",
        fontsize=9.5,
        fontweight="bold",
    )
    ax.text(
        x0 - 1.5,
        top - h / 2,
        f"{G} scale blocks\n(dashed) of\n{per_block:,} rows",
        ha="right",
        va="center",
        fontsize=8.5,
    )
    if G == S:
        verdict = (
            f"G = {G} = {S} devices: each device's {per_dev:,} rows are exactly one block, so its "
            f"scale row was computed from its own rows\nand it dequantizes its slice alone "
            f"(int8 × scales inside shard_map in the reference): no other device's rows or "
            f"scales needed."
        )
        held = f"scales [1, {cols:,}]"
    elif G % S == 0:
        verdict = (
            f"G = {G} on {S} devices: each device holds {G // S} whole blocks of the "
            f"{per_block:,} rows each — still self-contained."
        )
        held = f"scales [{G // S}, {cols:,}]"
    else:
        verdict = (
            f"G = {G} on {S} devices: blocks of {per_block:,} rows do not line up with slices of "
            f"{per_dev:,} rows — a block's scale depends on rows\nanother device holds, and "
            f"the reference's shard_map cannot split [{G}, {cols:,}] scales {S} ways."
        )
        held = f"1 scale row shared by {S // G} devices" if S % G == 0 else "parts of blocks"
    # the devices, one box each, linked to their slice
    bx0, bx1 = 58, 106
    step = h / S
    for d in range(S):
        ys = top - (d + 0.5) * h / S
        yb = top - (d + 0.5) * step
        ax.add_patch(
            Rectangle(
                (bx0, yb - 0.42 * step),
                bx1 - bx0,
                0.84 * step,
                facecolor=cmap(d % cmap.N),
                alpha=0.55,
                edgecolor="#333333",
                lw=0.8,
            )
        )
        if S <= 16 or d in (0, S - 1):
            ax.text(
                bx0 + 1,
                yb,
                f"device {d}:  int8 [{per_dev:,}, {cols:,}]  + {held}",
                ha="left",
                va="center",
                fontsize=8.5 if S <= 8 else 8,
            )
        ax.plot([x1 + 1.4, bx0 - 0.4], [ys, yb], color="#888888", lw=0.7)
    ax.text(
        (bx0 + bx1) / 2,
        top + 3.5,
        f"the model axis of a 1×{S} mesh: rows split {S} ways\n"
        f"(the reference: {spec} for int8 and scales)",
        ha="center",
        fontsize=9.5,
    )
    ax.text(2, -7, verdict, ha="left", va="center", fontsize=9)
    return fig
