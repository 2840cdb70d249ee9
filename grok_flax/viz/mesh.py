"""Concept pictures for notebook 07: meshes: column- then row-split matmuls, their all-reduces,
expert parallelism.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot:

- ``tensor_parallel_block``: one feed-forward block split Megatron-style over the ``model``
  axis — the first weight by columns, the second by rows, one all-reduce at the end;
- ``mesh_2d``: a ``data × model`` mesh, what every device holds (its rows of the batch, its
  block of each big matrix) and which block of two weights each device owns;
- ``expert_parallelism``: the experts' two layouts side by side — split inside every expert
  (this library, the release) against one expert per device with two all-to-alls.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from grok_flax.viz.figures import config_or_grok1

__all__ = ["expert_parallelism", "mesh_2d", "tensor_parallel_block"]

_MAX_DEVICES = 16  # beyond this the per-device labels no longer fit at a readable size


def _count(name: str, value, lo: int = 1, hi: int = _MAX_DEVICES) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)


def _divides(what: str, size: int, n: int, axis: str) -> None:
    if size % n:
        raise ValueError(f"{what} = {size:,} is not divisible by the {axis} axis size {n}")


def _color(i: int):
    return colormaps["tab20" if i >= 10 else "tab10"](i % 10 if i < 10 else (i - 10) * 2 + 1)


def _arrow(ax, p, q, text=None, color="0.25", lw=1.4, fontsize=8, offset=(0, 1.2)):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=11, lw=lw, color=color))
    if text:
        ax.text(
            (p[0] + q[0]) / 2 + offset[0],
            (p[1] + q[1]) / 2 + offset[1],
            text,
            ha="center",
            va="bottom",
            fontsize=fontsize,
            color=color,
        )


def _blank(ax, w, h):
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_aspect("equal")
    ax.axis("off")


# --------------------------------------------------------------------------------------------
# tensor parallelism: column split, then row split, then one all-reduce
# --------------------------------------------------------------------------------------------
def tensor_parallel_block(cfg=None, model: int = 8) -> Figure:
    """One expert's feed-forward block ``y = (gelu(x W) ⊙ x V) W₁`` split over ``model`` devices the
    Megatron-LM way: ``W`` and ``V [D, F]`` by columns (``P(None, "model")``), ``W₁ [F, D]`` by rows
    (``P("model", None)``); each device's slice of the hidden activation is exactly the input
    its rows of ``W₁`` need, and the partial outputs are added by one all-reduce. D and F come
    from ``cfg`` (Grok-1 by default)."""
    cfg = config_or_grok1(cfg)
    n = _count("model", model)
    D, F = cfg.emb_size, cfg.ffn_size
    _divides("the expert width F", F, n, "model")
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    W, H = 128.0, 46.0
    _blank(ax, W, H)

    # x [B, D]: whole on every device
    ax.add_patch(Rectangle((1, 22), 10, 6, fc="0.85", ec="black"))
    ax.text(6, 25, "x", ha="center", va="center", fontsize=11)
    ax.text(6, 20.5, f"x [B, {D:,}]\nwhole on\nevery device", ha="center", va="top", fontsize=8)

    # W [D, F] split by columns
    x0, y0, w, h = 17, 17, 30, 16
    for i in range(n):
        ax.add_patch(Rectangle((x0 + i * w / n, y0), w / n, h, fc=_color(i), ec="black", lw=0.6))
        if n <= 8:
            ax.text(
                x0 + (i + 0.5) * w / n, y0 + h / 2, f"{i}", ha="center", va="center", fontsize=8
            )
    ax.text(
        x0 + w / 2, y0 + h + 1, f"W, V [{D:,}, {F:,}]  P(None, 'model')", ha="center", fontsize=9
    )
    ax.text(
        x0 + w / 2,
        y0 - 1.2,
        f"split by columns: device i holds\n[{D:,}, {F // n:,}] (F / {n}) of each",
        ha="center",
        va="top",
        fontsize=8,
    )
    _arrow(ax, (11.2, 25), (16.8, 25))

    # h [B, F]: each device its own slice, no communication
    hx, hy, hw, hh = 53, 22, 20, 6
    for i in range(n):
        ax.add_patch(Rectangle((hx + i * hw / n, hy), hw / n, hh, fc=_color(i), ec="black", lw=0.6))
    ax.text(hx + hw / 2, hy + hh + 1, "h = gelu(x W) ⊙ (x V)", ha="center", fontsize=9)
    ax.text(
        hx + hw / 2,
        hy - 1.2,
        f"device i: its [B, {F // n:,}] slice\nno communication",
        ha="center",
        va="top",
        fontsize=8,
    )
    _arrow(ax, (47.2, 25), (52.8, 25))

    # W1 [F, D] split by rows
    wx, wy, ww, wh = 79, 9, 12, 32
    for i in range(n):
        top = wy + wh - (i + 1) * wh / n
        ax.add_patch(Rectangle((wx, top), ww, wh / n, fc=_color(i), ec="black", lw=0.6))
        if n <= 8:
            ax.text(wx + ww / 2, top + wh / (2 * n), f"{i}", ha="center", va="center", fontsize=8)
    ax.text(
        wx + ww / 2, wy + wh + 1, f"W₁ [{F:,}, {D:,}]\nP('model', None)", ha="center", fontsize=9
    )
    ax.text(
        wx + ww / 2,
        wy - 1.2,
        f"split by rows: device i\nholds [{F // n:,}, {D:,}]",
        ha="center",
        va="top",
        fontsize=8,
    )
    _arrow(ax, (73.2, 25), (78.8, 25))

    # partial sums -> all-reduce -> y
    ax.text(
        101,
        40,
        f"device i: h_i W₁_i =\na partial y [B, {D:,}]",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    px = 96
    for i in range(min(n, 8)):
        ax.add_patch(
            Rectangle((px + i * 0.6, 31 + i * 0.6), 10, 4, fc=_color(i), ec="black", lw=0.5)
        )
    _arrow(ax, (91.2, 30), (95.8, 32))
    _arrow(ax, (101, 30.5), (101, 21.2), color="darkred")
    ax.text(
        103,
        26,
        f"all-reduce\n(psum over 'model'):\nadd the {n} partial sums",
        ha="left",
        va="center",
        fontsize=8,
        color="darkred",
        fontweight="bold",
    )
    ax.add_patch(Rectangle((96, 15), 10, 6, fc="0.85", ec="black"))
    ax.text(101, 18, "y", ha="center", va="center", fontsize=11)
    ax.text(
        101, 13.8, f"y [B, {D:,}]\nwhole on every\ndevice again", ha="center", va="top", fontsize=8
    )

    ax.text(
        W / 2,
        2.5,
        f"per device: 1/{n} of both weights; communication: ONE all-reduce of [B, {D:,}] per "
        f"block (attention is the same: q, k, v split by heads, its output projection by rows)",
        ha="center",
        fontsize=9,
    )
    fig.suptitle(
        f"Tensor parallelism over model = {n}: column split, row split, one all-reduce "
        f"(D = {D:,}, F = {F:,})",
        fontsize=11,
    )
    return fig


# --------------------------------------------------------------------------------------------
# the 2-D mesh: data × model, and what each device holds
# --------------------------------------------------------------------------------------------
def mesh_2d(cfg=None, data: int = 2, model: int = 4) -> Figure:
    """A ``data × model`` mesh of devices, numbered as ``make_mesh`` lays them out (row by
    row), with what each device holds under the library's rules: its share of the batch rows,
    its block of attention's query weight ``[D, heads·H]`` (``P("data", "model")``) and of an
    expert's ``linear_1 [F, D]`` (``P("model", "data")``). Below, the two weights cut into
    blocks, each block labelled with its device. Sizes come from ``cfg`` (Grok-1 by
    default)."""
    cfg = config_or_grok1(cfg)
    d = _count("data", data)
    m = _count("model", model)
    if d * m > _MAX_DEVICES:
        raise ValueError(f"data × model = {d * m} devices; this picture draws at most 16")
    D, F, Q = cfg.emb_size, cfg.ffn_size, cfg.num_q_heads * cfg.key_size
    _divides("the model width D", D, d, "data")
    _divides("the query width heads × H", Q, m, "model")
    _divides("the expert width F", F, m, "model")

    fig = Figure(figsize=(11.5, 0.5 + 1.55 * d + 3.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[0.5 + 1.55 * d, 3.0])
    ax = top.add_subplot()
    cw, ch = 10.0, 7.0
    _blank(ax, m * cw + 6, d * ch + 1.5)
    for r in range(d):
        for c in range(m):
            dev = r * m + c
            x, y = 5 + c * cw, (d - 1 - r) * ch
            ax.add_patch(
                Rectangle(
                    (x + 0.2, y + 0.2), cw - 0.4, ch - 0.4, fc=_color(dev), alpha=0.35, ec="k"
                )
            )
            lines = [
                f"device {dev}",
                f"batch part {r + 1}/{d}",
                f"query [{D // d:,}, {Q // m:,}]",
                f"W₁ [{F // m:,}, {D // d:,}]",
            ]
            ax.text(x + cw / 2, y + ch / 2, "\n".join(lines), ha="center", va="center", fontsize=8)
    for r in range(d):
        ax.text(4.5, (d - 1 - r) * ch + ch / 2, f"data {r}", ha="right", va="center", fontsize=9)
    for c in range(m):
        ax.text(5 + c * cw + cw / 2, d * ch + 0.3, f"model {c}", ha="center", fontsize=9)
    top.suptitle(
        f"A data={d} × model={m} mesh: each device holds 1/{d * m} of every big matrix "
        f"and 1/{d} of the batch",
        fontsize=11,
    )

    axes = bottom.subplots(1, 2)
    for a, (name, rows, cols, row_axis, col_axis) in zip(
        axes,
        [
            (f"attention query [D={D:,}, {Q:,}]  P('data', 'model')", D, Q, d, m),
            (f"expert linear_1 W₁ [F={F:,}, D={D:,}]  P('model', 'data')", F, D, m, d),
        ],
        strict=True,
    ):
        for i in range(row_axis):
            for j in range(col_axis):
                dev = i * m + j if row_axis == d else j * m + i
                a.add_patch(
                    Rectangle(
                        (j / col_axis, 1 - (i + 1) / row_axis),
                        1 / col_axis,
                        1 / row_axis,
                        fc=_color(dev),
                        alpha=0.6,
                        ec="black",
                    )
                )
                a.text(
                    (j + 0.5) / col_axis,
                    1 - (i + 0.5) / row_axis,
                    f"{dev}",
                    ha="center",
                    va="center",
                    fontsize=8,
                )
        a.set_xlim(0, 1)
        a.set_ylim(0, 1)
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(name, fontsize=9)
        a.set_xlabel(f"{cols:,} columns, cut {col_axis} ways", fontsize=8)
        a.set_ylabel(f"{rows:,} rows, cut {row_axis} ways", fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# the experts: split inside every expert, or one expert per device (all-to-all)
# --------------------------------------------------------------------------------------------
def expert_parallelism(
    cfg=None, devices: int | None = None, tokens_per_device: int = 3, seed: int = 0
) -> Figure:
    """The two layouts of a mixture of experts over ``devices`` (default: one per expert).

    Left, this library's (and the release's): every device holds a 1/devices slice of the
    expert width F of *every* expert; each token stays where it is, every device does its
    slice of the token's chosen experts, one all-reduce adds the slices. Right, expert
    parallelism: device j holds whole experts; each token copy is *sent* to the device of its
    chosen expert (an all-to-all), processed, and sent back (a second all-to-all). The routing
    drawn is a seeded random top-k choice (``cfg.num_selected_experts``), so the right panel's
    loads are uneven the way real routing is."""
    cfg = config_or_grok1(cfg)
    E, k = cfg.num_experts, cfg.num_selected_experts
    n = _count("devices", E if devices is None else devices)
    t = _count("tokens_per_device", tokens_per_device, 1, 6)
    if E % n:
        raise ValueError(f"{E} experts cannot be spread evenly over {n} devices")
    per = E // n
    F = cfg.ffn_size
    _divides("the expert width F", F, n, "devices")
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(E, 1.5))  # some experts more popular, as in practice
    choice = np.stack([rng.choice(E, size=k, replace=False, p=popularity) for _ in range(n * t)])
    home = choice // per  # the device that holds each chosen expert, [n·t, k]
    load = np.bincount(home.ravel(), minlength=n)

    fig = Figure(figsize=(11.5, 1.3 + 0.62 * n + 1.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    rows = n * 1.0

    # left: tensor-parallel experts
    _blank(left, 10.5, rows + 2.1)
    left.set_aspect("auto")
    for j in range(n):
        y = rows - 1 - j + 1.5
        left.text(0.1, y + 0.4, f"dev {j}", ha="left", va="center", fontsize=8)
        shown = min(E, 8)
        for e in range(shown):
            left.add_patch(
                Rectangle(
                    (1.6 + e * 0.75, y + 0.1), 0.65, 0.6, fc=_color(e), alpha=0.55, ec="k", lw=0.5
                )
            )
        left.text(
            1.6 + shown * 0.75 + 0.1,
            y + 0.4,
            f"{n * t * k} × 1/{n}",
            ha="left",
            va="center",
            fontsize=8,
        )
    left.text(
        1.6 + 0.75 * min(E, 8) / 2,
        rows + 1.4,
        f"slices of the {E} experts (colours), F/{n} = {F // n:,} of each",
        ha="center",
        fontsize=8,
    )
    left.text(
        5.2,
        0.6,
        f"every device: all {n * t} tokens × {k} experts = {n * t * k} copies,\n"
        f"1/{n} of the width each "
        "→ equal work whatever the router picks;\nONE all-reduce",
        ha="center",
        va="center",
        fontsize=8,
    )
    left.set_title(
        "this library (and the release): experts split by F\n(experts → None, ffn → model)",
        fontsize=9,
    )

    # right: expert parallelism, tokens sent by an all-to-all
    _blank(right, 13.5, rows + 2.1)
    right.set_aspect("auto")
    for j in range(n):
        y = rows - 1 - j + 1.5
        right.text(0.0, y + 0.4, f"dev {j}", ha="left", va="center", fontsize=8)
        for s in range(t):
            tok = j * t + s
            right.add_patch(
                Rectangle((1.3 + s * 0.55, y + 0.15), 0.45, 0.5, fc="0.8", ec="k", lw=0.5)
            )
            for e, dst in zip(choice[tok], home[tok], strict=True):
                yd = rows - 1 - dst + 1.5 + 0.4
                right.plot(
                    [1.3 + t * 0.55, 7.2], [y + 0.4, yd], color=_color(int(e)), lw=0.8, alpha=0.6
                )
        experts = ", ".join(str(e) for e in range(j * per, (j + 1) * per))
        right.add_patch(
            Rectangle((7.2, y + 0.05), 1.5, 0.7, fc=_color(j * per), alpha=0.55, ec="k")
        )
        right.text(
            7.95,
            y + 0.4,
            f"E{experts}" if per == 1 else experts,
            ha="center",
            va="center",
            fontsize=8,
        )
        busiest = load[j] == load.max()
        right.text(
            8.9,
            y + 0.4,
            f"{load[j]} cop{'y' if load[j] == 1 else 'ies'}" + (" ← busiest" if busiest else ""),
            ha="left",
            va="center",
            fontsize=8,
            color="darkred" if busiest else "black",
            fontweight="bold" if busiest else "normal",
        )
    right.text(1.3, rows + 1.4, f"{t} tokens each", ha="left", fontsize=8)
    right.text(
        4.9, rows + 1.4, "all-to-all →\n(and back ←)", ha="center", fontsize=8, color="darkred"
    )
    right.text(7.95, rows + 1.4, "whole experts", ha="center", fontsize=8)
    right.text(
        6,
        0.5,
        f"{n * t * k} copies over {n} devices: mean {n * t * k / n:g}, busiest {load.max()}\n"
        "TWO all-to-alls (send, return) instead of the all-reduce",
        ha="center",
        va="center",
        fontsize=8,
    )
    right.set_title(
        f"expert parallelism: {per} whole expert{'s' if per > 1 else ''} per "
        f"device, top-{k} routing",
        fontsize=9,
    )
    fig.suptitle(f"Two layouts for {E} experts on {n} devices", fontsize=11)
    return fig
