"""Concept pictures for notebook 06: the decoder layer: sandwich norms, the residual stream, layers
stacked and scanned.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from grok_flax.viz.figures import config_or_grok1

__all__ = ["residual_stream", "sandwich_norms", "scan_vs_loop"]

_FILL = {
    "norm": "#e6e6e6",
    "attn": "#dbe9f6",
    "moe": "#fde3c8",
    "embed": "#dff0d8",
    "layers": "#eadcf2",
    "io": "#f2f2f2",
}
_INK = "#222222"
_SHAPE = "#1a4a7a"  # activation shapes, as in viz.architecture


def _canvas(width: float, height: float, xmax: float = 100, ymax: float = 100):
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, ymax)
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, text, kind, fontsize=9.0, bold=False, edge="#555555", lw=1.0):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            facecolor=_FILL[kind],
            edgecolor=edge,
            lw=lw,
            zorder=2,
            boxstyle="round,pad=0,rounding_size=1.0",
        )
    )
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        color=_INK,
        zorder=3,
        fontweight="bold" if bold else "normal",
    )


def _arrow(ax, p, q, lw=1.2, color="#333333"):
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(
        FancyArrowPatch(
            p, q, arrowstyle="-|>", mutation_scale=10, lw=lw, color=color, shrinkA=0, shrinkB=0
        )
    )


def _plus(ax, x, y, r=1.4):
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor="#333333", lw=1.2, zorder=3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=11, zorder=4)


# --------------------------------------------------------------------------------------------
# sandwich norms
# --------------------------------------------------------------------------------------------
def sandwich_norms(cfg=None) -> Figure:
    """One decoder layer twice, side by side: the usual pre-norm layer (a norm before each
    block only) and Grok-1's sandwich (a norm before AND after attention and the MoE, the
    normalised output added to the residual stream). Sizes and counts come from ``cfg``
    (a ``GrokConfig``; Grok-1 by default)."""
    cfg = config_or_grok1(cfg)
    L, D, E, k = cfg.num_layers, cfg.emb_size, cfg.num_experts, cfg.num_selected_experts
    Nq, Nk = cfg.num_q_heads, cfg.num_kv_heads
    act = f"[B, T, {D}]"
    fig, ax = _canvas(10.5, 6.0)
    ax.set_ylim(8, 100)

    def column(rx, bx, bw, title, blocks, note):
        """blocks: per block, a list of (text, kind) boxes from top to bottom."""
        ax.text(rx - 2, 97, title, fontsize=11, fontweight="bold", va="center")
        ax.plot([rx, rx], [90, 34], color="#333333", lw=2.2, zorder=1)
        _arrow(ax, (rx, 35), (rx, 31), lw=2.2)
        ax.text(rx + 1, 91.5, f"h {act} in", fontsize=8, family="monospace", color=_SHAPE)
        ax.text(rx + 1, 29, f"h {act} out", fontsize=8, family="monospace", color=_SHAPE)
        ax.text(rx - 1.9, 62, "residual stream", rotation=90, fontsize=8.5, ha="right", va="center")
        for y, boxes in zip((85.0, 59.5), blocks, strict=True):
            left = bx - bw / 2
            ax.plot([rx, left - 2], [y, y], color="#333333", lw=1.2, zorder=1)
            _arrow(ax, (left - 2, y), (left, y))
            for i, (text, kind) in enumerate(boxes):
                if i:
                    _arrow(ax, (bx, y + 6.5 - 2.2), (bx, y + 2.2))
                new = text.startswith("post-")  # what a pre-norm layer lacks
                edge, lw = ("#d62728", 2.2) if new else ("#555555", 1.0)
                _box(ax, bx, y, bw, 4.4, text, kind, fontsize=8.5, bold=new, edge=edge, lw=lw)
                y -= 6.5
            y += 6.5  # the last box
            yo = y - 6.0
            ax.plot([left, left - 2.5, left - 2.5], [y, y, yo], color="#333333", lw=1.2, zorder=1)
            _arrow(ax, (left - 2.5, yo), (rx + 1.4, yo))
            _plus(ax, rx, yo)
        ax.text(rx - 2, 23, note, fontsize=8.5, va="top", linespacing=1.45, color=_INK)

    usual = [
        [("RMSNorm (or LayerNorm)", "norm"), ("attention", "attn")],
        [("RMSNorm (or LayerNorm)", "norm"), ("MLP (feed-forward)", "moe")],
    ]
    column(
        4,
        25,
        26,
        "the usual pre-norm layer",
        usual,
        "2 norms per layer, both BEFORE a block.\n"
        "What is added to h is the block's raw output:\n"
        "its size is whatever the block's weights make it.",
    )
    grok = [
        [
            ("pre-attention RMSNorm  (rms_norm)", "norm"),
            (f"attention: {Nq} q / {Nk} kv heads", "attn"),
            ("post-attention RMSNorm  (rms_norm_1)", "norm"),
        ],
        [
            ("pre-MoE RMSNorm  (rms_norm_2)", "norm"),
            (f"router + {E} experts (top-{k})", "moe"),
            ("post-MoE RMSNorm  (rms_norm_3)", "norm"),
        ],
    ]
    n_norms = 4 * L + 1
    column(
        52,
        77,
        38,
        "Grok-1: the sandwich",
        grok,
        f"4 norms per layer: before AND after each block.\n"
        f"What is added to h is post_norm(block(pre_norm(h))):\n"
        f"RMS = its scale [{D}] (1 at init), whatever the weights.\n"
        f"{L} layers × 4 + the final norm = {n_norms} scales of [{D}]\n"
        f"= {n_norms * D:,} parameters. (Red: the norms the usual layer lacks.)",
    )
    ax.plot([48, 48], [9, 99], color="#bbbbbb", lw=1, ls=":")
    return fig


# --------------------------------------------------------------------------------------------
# the residual stream
# --------------------------------------------------------------------------------------------
def _sub(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def _check_rms(values, n: int, what: str, L: int) -> np.ndarray:
    a = np.asarray(values, dtype=float).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(
            f"residual_stream({what}=...): {a.shape[0]} numbers for a {L}-layer model; give "
            f"one per term, 2L + 1 = {n} (x₀, a₀, m₀, a₁, …)"
        )
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"residual_stream({what}=...): RMS values must be finite and ≥ 0")
    return a


def residual_stream(
    cfg=None,
    term_rms: Sequence[float] | None = None,
    stream_rms: Sequence[float] | None = None,
) -> Figure:
    """The residual stream as a sum: the embedding x₀, then every layer adds two terms (its
    attention update aₗ and its MoE update mₗ), so after L layers h is a sum of 2L + 1 terms
    of shape [B, T, D]. Sizes come from ``cfg`` (Grok-1 by default); a long stack is drawn
    with its middle elided.

    ``term_rms``: optionally the measured RMS (over D) of each term, in the order x₀, a₀, m₀,
    a₁ … (2L + 1 numbers), drawn below as bars; ``stream_rms``: the RMS of the running sum h
    after each term (2L + 1 numbers), drawn over them as a line."""
    cfg = config_or_grok1(cfg)
    L, D = cfg.num_layers, cfg.emb_size
    n = 2 * L + 1
    if stream_rms is not None and term_rms is None:
        raise ValueError("residual_stream(stream_rms=...) needs term_rms too")
    names = ["x₀"] + [f"{b}{_sub(i)}" for i in range(L) for b in ("a", "m")]
    shown = list(range(n)) if n <= 9 else [0, 1, 2, 3, 4, -1, n - 2, n - 1]

    fig = Figure(figsize=(10.5, 3.4 if term_rms is None else 7.0))
    top = fig.add_axes((0, 0.5, 1, 0.5) if term_rms is not None else (0, 0, 1, 1))
    top.set_xlim(0, 100)
    top.set_ylim(0, 50)
    top.axis("off")
    top.text(
        50,
        46,
        f"h after {L} layers = x₀ + Σₗ (aₗ + mₗ),  l = 0 … {L - 1}:  {n} terms, each [B, T, {D}]",
        ha="center",
        fontsize=11,
        fontweight="bold",
    )
    y_line, x0, x1 = 14, 3, 84
    top.plot([x0, x1], [y_line, y_line], color="#333333", lw=2.4, zorder=1)
    _arrow(top, (x1, y_line), (x1 + 2.5, y_line), lw=2.4)
    top.text(x1 + 3, y_line, "final RMSNorm,\nun-embedding", fontsize=8, va="center")
    step = (x1 - x0 - 8) / (len(shown) - 1)
    for j, t in enumerate(shown):
        x = x0 + 4 + j * step
        if t == -1:
            top.text(
                x,
                32,
                f"… {n - 7} more terms\n({L - 3} layers) …",
                ha="center",
                va="center",
                fontsize=8.5,
                color="#555555",
            )
            continue
        if t == 0:
            kind, label = "embed", f"x₀ = embed[ids]\n× {cfg.embedding_multiplier_scale:.4g}"
        else:
            block = "attention" if names[t][0] == "a" else "MoE"
            kind = "attn" if block == "attention" else "moe"
            label = f"{names[t]}: layer {(t - 1) // 2}\n{block} block"
        _box(top, x, 32, min(step - 1.2, 12.5), 11, label, kind, fontsize=8)
        if t == 0:
            _arrow(top, (x, 26.5), (x, y_line + 0.2))
        else:
            _arrow(top, (x, 26.5), (x, y_line + 1.4))
            _plus(top, x, y_line)
    top.text(
        50,
        4,
        "Every block reads the whole sum so far (through its pre-norm) and adds one term to it; "
        "nothing is overwritten.",
        ha="center",
        fontsize=9,
        color="#444444",
    )
    if term_rms is None:
        return fig

    terms = _check_rms(term_rms, n, "term_rms", L)
    ax = fig.add_axes((0.08, 0.08, 0.89, 0.36))
    xs = np.arange(n)
    colors = ["#9bd08f"] + ["#7fb0dd", "#f5b06b"] * L
    ax.bar(xs, terms, color=colors, edgecolor="#555555", lw=0.6, label="RMS of the term added")
    if stream_rms is not None:
        stream = _check_rms(stream_rms, n, "stream_rms", L)
        ax.plot(xs, stream, "k.-", lw=1.2, ms=7, label="RMS of h after adding it")
    ax.set_xticks(xs)
    ax.set_xticklabels(names if n <= 41 else [s if i % 8 == 0 else "" for i, s in enumerate(names)])
    ax.tick_params(labelsize=8.5)
    ax.set_ylabel("RMS over D", fontsize=9)
    ax.set_ylim(0, 1.3 * max(terms.max(), 0 if stream_rms is None else stream.max(), 1e-9))
    ax.legend(fontsize=8.5, loc="upper center", ncol=2, frameon=False)
    ax.set_title("measured: how big each term is, and the running sum", fontsize=9.5)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# --------------------------------------------------------------------------------------------
# stacked and scanned
# --------------------------------------------------------------------------------------------
def _layer_shapes(cfg) -> list[tuple[str, str]]:
    L, D, H = cfg.num_layers, cfg.emb_size, cfg.key_size
    Nq, Nk, E, F = cfg.num_q_heads, cfg.num_kv_heads, cfg.num_experts, cfg.ffn_size
    return [
        ("attn.query", f"[{L}, {D}, {Nq * H}]"),
        ("attn.key, attn.value", f"[{L}, {D}, {Nk * H}]"),
        ("attn.linear", f"[{L}, {Nq * H}, {D}]"),
        ("router.w", f"[{L}, {D}, {E}]"),
        ("moe.linear, moe.linear_v", f"[{L}, {E}, {D}, {F}]"),
        ("moe.linear_1", f"[{L}, {E}, {F}, {D}]"),
        ("4 norms' scale", f"[{L}, {D}]"),
    ]


def scan_vs_loop(cfg=None) -> Figure:
    """The layers' weights stacked on a leading axis [L, …] (one ``DecoderLayer`` built by
    ``nnx.vmap``), and two ways to run them: ``jax.lax.scan`` compiles one layer body and
    runs it L times; a Python loop puts L copies of the layer in the compiled program. Shapes
    come from ``cfg`` (Grok-1 by default)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

    cfg = config_or_grok1(cfg)
    L, D = cfg.num_layers, cfg.emb_size
    act = f"h [B, T, {D}]"
    fig, ax = _canvas(11, 5.6)

    # ---- left: the stack ----
    ax.text(
        1,
        96,
        f"self.layers: ONE DecoderLayer, every weight [{L}, …]",
        fontsize=10.5,
        fontweight="bold",
        va="center",
    )
    deck = min(L, 6)
    for j in reversed(range(deck)):
        ax.add_patch(
            Rectangle(
                (3 + 1.6 * j, 50 - 2.6 * j),
                30,
                36,
                facecolor=_FILL["layers"],
                edgecolor="#7a5a94",
                lw=1,
                zorder=2 + deck - j,
            )
        )
    ax.text(
        3 + 1.6 * (deck - 1) + 30,
        50 - 2.6 * (deck - 1) - 1,
        f"back: layer {L - 1}",
        fontsize=8,
        va="top",
        ha="right",
    )
    ax.text(
        4,
        84,
        "front: layer 0 = weights[0]",
        fontsize=8.5,
        fontweight="bold",
        va="center",
        zorder=3 + deck,
    )
    ax.text(
        32,
        84,
        "stacked shape",
        fontsize=8,
        va="center",
        ha="right",
        color="#555555",
        zorder=3 + deck,
    )
    for i, (name, shape) in enumerate(_layer_shapes(cfg)):
        ax.text(4, 79 - 4.2 * i, name, fontsize=8, va="center", zorder=3 + deck)
        ax.text(
            32,
            79 - 4.2 * i,
            shape,
            fontsize=8,
            va="center",
            ha="right",
            family="monospace",
            color=_SHAPE,
            zorder=3 + deck,
        )
    ax.text(
        1,
        28,
        f"built once by nnx.vmap over {L} random keys\n(nnx.split_rngs): "
        f"{L} layers' weights,\none Python object",
        fontsize=8.5,
        va="top",
    )

    def program(x, w, title, note):
        ax.add_patch(
            FancyBboxPatch(
                (x, 6),
                w,
                80,
                facecolor="#fbf8fd",
                edgecolor="#9467bd",
                lw=1.2,
                ls="--",
                boxstyle="round,pad=0,rounding_size=1.5",
            )
        )
        ax.text(x + w / 2, 96, title, ha="center", fontsize=10.5, fontweight="bold", va="center")
        ax.text(x + w / 2, 90, note, ha="center", fontsize=8.5, va="center", color="#444444")

    # ---- middle: scan ----
    program(44, 26, "jax.lax.scan", "scan_layers=True (the default)")
    _box(ax, 57, 52, 18, 12, "layer body\n(compiled once)", "layers", fontsize=9, bold=True)
    ax.add_patch(
        FancyArrowPatch(
            (66, 56),
            (66, 48),
            connectionstyle="arc3,rad=-1.6",
            arrowstyle="-|>",
            mutation_scale=12,
            lw=1.4,
            color="#7a5a94",
        )
    )
    ax.text(
        57,
        34,
        f"runs {L} times: step i takes\nweights[i] (xs) and carries\n{act}",
        ha="center",
        fontsize=8.5,
        va="center",
    )
    _arrow(ax, (57, 78), (57, 58.2))
    ax.text(58, 76, "x₀ = the embedding", fontsize=8, va="center")
    _arrow(ax, (57, 45.8), (57, 41))
    ax.text(
        57,
        14,
        "program size: 1 layer,\nwhatever L is",
        ha="center",
        fontsize=9,
        fontweight="bold",
        va="center",
        color="#2a7a2a",
    )

    # ---- right: Python loop ----
    program(73, 26, "Python loop", "scan_layers=False (unrolled)")
    rows = list(range(L)) if L <= 5 else [0, 1, 2, -1, L - 1]
    for j, i in enumerate(rows):
        y = 78 - j * 11
        if i == -1:
            ax.text(86, y, f"… {L - 4} more copies …", ha="center", va="center", fontsize=8.5)
        else:
            _box(ax, 86, y, 18, 7, f"layer {i} (a copy)", "layers", fontsize=8.5)
        if j + 1 < len(rows):
            _arrow(ax, (86, y - 3.5 if i != -1 else y - 2.5), (86, y - 7.5))
    ax.text(
        86,
        14,
        f"program size: {L} layers;\ncompile time grows with L",
        ha="center",
        fontsize=9,
        fontweight="bold",
        va="center",
        color="#b03030",
    )
    return fig
