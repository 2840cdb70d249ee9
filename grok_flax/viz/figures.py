"""The model's own figures: its architecture, and what it computes — routing, expert load,
attention, RoPE, quantisation error, memory, sharding (``grok_flax.viz`` re-exports them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

__all__ = [
    "ARCHITECTURE_PARTS",
    "RoutingExplorer",
    "architecture",
    "attention_maps",
    "expert_load",
    "format_bytes",
    "growth_plot",
    "kv_memory_growth",
    "param_breakdown",
    "parity_scatter",
    "quantization_error",
    "rope_frequencies",
    "rope_relative",
    "router_probabilities",
    "routing_heatmap",
    "sharding_map",
    "token_labels",
]

_GIB = 1024**3


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as memory is sold to programs."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


_bytes_formatter = FuncFormatter(lambda v, _: format_bytes(v) if v > 0 else "0")


def _readable_piece(piece: str) -> str:
    """A tokenizer piece as a tick label: spaces as '·', newlines/tabs escaped."""
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
        byte = int(piece[3:5], 16)
        piece = chr(byte) if 32 <= byte < 127 else piece
    return (
        piece.replace("\u2581", "·").replace(" ", "·").replace("\n", "\\n").replace("\t", "\\t")
        or "∅"
    )


def token_labels(tokenizer, ids=None, max_chars: int = 12) -> list[str]:
    """Tick labels for tokens: ``token_labels(tokenizer, ids)`` or ``token_labels(pieces)``.

    ``tokenizer`` is anything with ``piece(id)`` (``grok_flax.running.tokenizer.Tokenizer``) or
    ``id_to_piece(id)`` (SentencePiece); without one, ids are shown as numbers.
    """
    if ids is None:
        pieces = [str(p) for p in tokenizer]
    else:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if tokenizer is None:
            return [str(i) for i in ids]
        get = getattr(tokenizer, "piece", None) or tokenizer.id_to_piece
        pieces = [get(i) for i in ids]
    out = [_readable_piece(p) for p in pieces]
    return [p if len(p) <= max_chars else p[: max_chars - 1] + "…" for p in out]


def _expert_colors(num_experts: int):
    base = "tab10" if num_experts <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[base]
    return mcolors.ListedColormap([cmap(i % cmap.N) for i in range(num_experts)])


def _select_row(a, row: int, ndim_unbatched: int) -> np.ndarray:
    """Drop the batch axis (axis 1) of a captured [L, B, ...] array, if present."""
    a = np.asarray(a)
    if a.ndim == ndim_unbatched + 1:
        a = a[:, row]
    if a.ndim != ndim_unbatched:
        raise ValueError(
            f"expected an array [L, B, ...] or [L, ...] with {ndim_unbatched} "
            f"axes after the batch, got shape {a.shape}"
        )
    return a


def _fit(n: int, per: float, lo: float, hi: float, extra: float = 0.0) -> float:
    return float(min(hi, max(lo, extra + per * n)))


def config_or_grok1(cfg=None):
    """The config a figure draws: ``cfg``, or Grok-1's when None. Anything but a
    ``GrokConfig`` raises ``ValueError`` (every concept picture's first line)."""
    from grok_flax.config import GrokConfig

    if cfg is None:
        return GrokConfig.grok_1()
    if not isinstance(cfg, GrokConfig):
        raise ValueError(f"expected a GrokConfig (or None for Grok-1), got {type(cfg).__name__}")
    return cfg


# --------------------------------------------------------------------------------------------
# the whole model
# --------------------------------------------------------------------------------------------
_NB_COLORS = {
    "02": "#1f77b4",
    "03": "#d62728",
    "04": "#e377c2",
    "05": "#8c564b",
    "06": "#2ca02c",
    "07": "#9467bd",
    "08": "#7f7f7f",
    "09": "#17becf",
    "10": "#bcbd22",
}


def _equals(value: float, target: float) -> bool:
    return math.isclose(value, target, rel_tol=1e-9)


ARCHITECTURE_PARTS = {
    "io": "token ids in, logits out",
    "embed": "the embedding and the tied un-embedding",
    "layers": "the stack of decoder layers",
    "norm": "the RMSNorms",
    "attn": "grouped-query attention",
    "rope": "RoPE, inside attention",
    "kv": "the KV memory",
    "router": "the router",
    "experts": "the experts",
    "quant": "the int8 weights (attention and experts)",
    "mesh": "sharding over a mesh (nb 07)",
    "running": "loading and generating (nb 08)",
    "long": "long context (nb 09)",
    "training": "training (nb 10)",
}


def architecture(
    cfg=None, *, title: str | None = None, highlight: str | Sequence[str] | None = None
) -> Figure:
    """The whole model on one page: token ids to logits (left) and one decoder layer opened
    up (right). Every size comes from ``cfg`` (a ``GrokConfig``; Grok-1 by default), the
    activation shapes are written on the arrows, and each box carries the number of the
    walkthrough notebook that builds it ("nb 03").

    ``highlight`` names the parts a notebook is about (keys of ``ARCHITECTURE_PARTS``, e.g.
    ``"rope"`` or ``("router", "experts")``): those get a red frame and bold text, everything
    else is greyed out — the course's "you are here"."""
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    from grok_flax.config import GrokConfig

    cfg = config_or_grok1(cfg)
    lit = {highlight} if isinstance(highlight, str) else set(highlight or ())
    unknown = lit - set(ARCHITECTURE_PARTS)
    if unknown:
        raise ValueError(
            f"architecture(highlight=...): unknown part(s) {sorted(unknown)}; "
            f"the parts are {sorted(ARCHITECTURE_PARTS)}"
        )

    def on(*parts) -> bool:  # drawn in full: nothing highlighted, or one of these is
        return not lit or bool(lit & set(parts))

    L, D, H = cfg.num_layers, cfg.emb_size, cfg.key_size
    Nq, Nk, E, k = cfg.num_q_heads, cfg.num_kv_heads, cfg.num_experts, cfg.num_selected_experts
    F, V, cap = cfg.ffn_size, cfg.vocab_size, cfg.attn_logit_cap
    act = f"[B, T, {D}]"
    fig = Figure(figsize=(11, 9.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 120)
    ax.set_ylim(-4, 100)
    ax.axis("off")
    fill = {
        "io": "#f2f2f2",
        "embed": "#dff0d8",
        "norm": "#e6e6e6",
        "attn": "#dbe9f6",
        "moe": "#fde3c8",
        "layers": "#eadcf2",
        "kv": "#f9f3d2",
    }
    row_h = 2.05  # one line of box text, in axis units

    def badge(x, y, nb, ha="right"):
        ax.text(
            x,
            y,
            f"nb {nb}",
            ha=ha,
            va="center",
            fontsize=7.5,
            color="white",
            fontweight="bold",
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.22", facecolor=_NB_COLORS[nb], edgecolor="none"),
        )

    def box(x, y, w, h, rows, kind, nb=None, fontsize=9.0, parts=(), strong=()):
        """rows: lines of text, each a string or (string, notebook) for a badge on the line.
        parts: the ARCHITECTURE_PARTS this box belongs to; strong: rows (by text) set in bold
        when one of ``lit`` is among their parts, as {text: parts}."""
        shown, framed = on(*parts), bool(lit) and on(*parts)
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                facecolor=fill[kind],
                edgecolor="#d62728" if framed else "#555555",
                lw=3 if framed else 1,
                alpha=1.0 if shown else 0.3,
                zorder=2,
                boxstyle="round,pad=0,rounding_size=1.2",
            )
        )
        rows = [r if isinstance(r, tuple) else (r, None) for r in rows]
        top = y + (len(rows) - 1) * row_h / 2
        for i, (text, row_nb) in enumerate(rows):
            bold = bool(lit) and text in dict(strong) and on(*dict(strong)[text])
            ax.text(
                x,
                top - i * row_h,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                zorder=3,
                color="#222222" if shown else "#aaaaaa",
                fontweight="bold" if bold else "normal",
            )
            if row_nb:
                badge(x + w / 2 - 0.6, top - i * row_h, row_nb)
        if nb:
            badge(x + w / 2 - 0.6, y + h / 2, nb)

    def arrow(p, q, label=None, both=False, lw=1.2):
        ax.add_patch(
            FancyArrowPatch(
                p,
                q,
                arrowstyle="<|-|>" if both else "-|>",
                mutation_scale=11,
                lw=lw,
                color="#333333",
                shrinkA=0,
                shrinkB=0,
                zorder=1,
            )
        )
        if label:
            ax.text(
                (p[0] + q[0]) / 2 + 0.8,
                (p[1] + q[1]) / 2,
                label,
                fontsize=8,
                fontfamily="monospace",
                color="#1a4a7a",
                ha="left",
                va="center",
            )

    def line(xs, ys):
        ax.plot(xs, ys, color="#333333", lw=1.2, zorder=1, solid_capstyle="butt")

    def multiplier(value, name, target):
        return f"{value:.4g}" + (f" (= {name})" if _equals(value, target) else "")

    # ---- left: token ids -> embedding -> L layers -> final norm -> un-embedding -> logits ----
    cx, w = 16.5, 29
    box(cx, 87, w, 6, ["token ids [B, T]", f"(integers 0 … {V - 1:,})"], "io", parts=["io"])
    arrow((cx, 84), (cx, 80.5))
    box(
        cx,
        75,
        w,
        11,
        [
            "embedding lookup",
            f"embed [{V}, {D}]",
            "× embedding multiplier",
            multiplier(cfg.embedding_multiplier_scale, f"√{D}", math.sqrt(D)),
        ],
        "embed",
        "06",
        parts=["embed"],
    )
    arrow((cx, 69.5), (cx, 63.5), act)
    box(
        cx,
        52,
        w,
        23,
        [
            f"{L} × decoder layer",
            "(opened on the right)",
            "",
            f"weights stacked [{L}, …]",
            "(built by nnx.vmap),",
            *(
                ["run by jax.lax.scan:", "one layer compiled,", f"used {L} times"]
                if cfg.scan_layers
                else ["run by a Python loop", "(scan_layers=False)"]
            ),
        ],
        "layers",
        "06",
        parts=["layers"],
    )
    arrow((cx, 40.5), (cx, 34.5), act)
    box(cx, 31.5, w, 6, ["final RMSNorm", f"(scale [{D}])"], "norm", "06", parts=["norm"])
    arrow((cx, 28.5), (cx, 25))
    box(
        cx,
        19.5,
        w,
        11,
        [
            "un-embedding (tied):",
            f"x @ embedᵀ [{D}, {V}]",
            "× output multiplier",
            multiplier(cfg.output_multiplier_scale, "1/√3", 1 / math.sqrt(3)),
        ],
        "embed",
        "06",
        parts=["embed"],
    )
    arrow((cx, 14), (cx, 8.5), f"[B, T, {V}]")
    box(cx, 5.5, w, 6, [f"logits [B, T, {V}]", "(one score per token id)"], "io", parts=["io"])

    # ---- right: one decoder layer ----
    x0, x1, y0, y1 = 34.5, 119, 0, 95.5
    ax.add_patch(
        FancyBboxPatch(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            facecolor="#fbf8fd",
            edgecolor="#9467bd",
            lw=1.2,
            ls="--",
            zorder=0,
            boxstyle="round,pad=0,rounding_size=1.5",
        )
    )
    ax.text(
        x0 + 1.5,
        y1 - 2.2,
        f"one decoder layer (× {L})",
        fontsize=10.5,
        fontweight="bold",
        va="center",
    )
    ax.plot([cx + w / 2, x0], [63.5, y1], color="#9467bd", lw=0.8, ls=":", zorder=0)
    ax.plot([cx + w / 2, x0], [40.5, y0], color="#9467bd", lw=0.8, ls=":", zorder=0)
    rx = 39.5  # the residual stream
    arrow((rx, 90.5), (rx, 2.5), lw=2.2)
    ax.text(
        rx + 0.9,
        90.8,
        f"h {act} in",
        fontsize=8,
        fontfamily="monospace",
        color="#1a4a7a",
        va="center",
    )
    ax.text(
        rx + 0.9,
        2.0,
        f"h {act} out",
        fontsize=8,
        fontfamily="monospace",
        color="#1a4a7a",
        va="center",
    )
    ax.text(
        rx - 0.9,
        70,
        "residual stream",
        rotation=90,
        fontsize=8.5,
        ha="right",
        va="center",
        color="#444444",
    )
    bx, bw = 68.5, 49  # the blocks' column
    left = bx - bw / 2

    def block_in(y):  # residual -> the block's first norm
        line([rx, left - 3], [y, y])
        arrow((left - 3, y), (left, y))

    def block_out(y_from, y):  # the block's last norm -> ⊕ on the residual
        ax.add_patch(Circle((rx, y), 1.5, facecolor="white", edgecolor="#333333", lw=1.2, zorder=3))
        ax.text(rx, y, "+", ha="center", va="center", fontsize=12, zorder=4)
        line([left, left - 2.5, left - 2.5], [y_from, y_from, y])
        arrow((left - 2.5, y), (rx + 1.5, y))

    int8 = [("int8 weights + scales", "05")] if cfg.quantized else []
    int8_strong = {"int8 weights + scales": ["quant"]}
    # attention block
    block_in(87)
    box(bx, 87, bw, 4.5, ["pre-attention RMSNorm"], "norm", "06", parts=["norm"])
    arrow((bx, 84.75), (bx, 81.5), act)
    att_rows = [
        "grouped-query attention",
        f"q [B, T, {Nq}, {H}];  k, v [B, T, {Nk}, {H}]",
        f"({cfg.q_per_kv} query heads share each kv head)",
        (f"RoPE on q and k (base {cfg.rope_base:g})", "02"),
        f"logits × {multiplier(cfg.attn_output_multiplier, f'1/√{H}', H**-0.5)}",
        f"then the cap {cap:g}·tanh(x / {cap:g})",
        f"causal softmax; out-projection [{Nq * H} → {D}]",
        *int8,
    ]
    att_h = len(att_rows) * row_h + 2
    att_y = 81.5 - att_h / 2
    rope_row = f"RoPE on q and k (base {cfg.rope_base:g})"
    box(
        bx,
        att_y,
        bw,
        att_h,
        att_rows,
        "attn",
        "03",
        parts=["attn", "rope", "quant"],
        strong={rope_row: ["rope"], **int8_strong},
    )
    box(
        107.5,
        att_y,
        20,
        15,
        ["KV memory", "(when decoding)", f"k, v [{L}, B, S,", f"{Nk}, {H}], step [B]", "nnx.Cache"],
        "kv",
        "03",
        fontsize=8.5,
        parts=["kv", "long"],
    )
    arrow((bx + bw / 2, att_y), (97.5, att_y), both=True)
    y = att_y - att_h / 2
    arrow((bx, y), (bx, y - 3.25), act)
    post_attn = y - 5.5
    box(bx, post_attn, bw, 4.5, ["post-attention RMSNorm"], "norm", "06", parts=["norm"])
    block_out(post_attn, post_attn - 4)
    # mixture-of-experts block
    pre_moe = post_attn - 9
    block_in(pre_moe)
    box(bx, pre_moe, bw, 4.5, ["pre-MoE RMSNorm"], "norm", "06", parts=["norm"])
    arrow((bx, pre_moe - 2.25), (bx, pre_moe - 5.5), act)
    router_y = pre_moe - 5.5 - 4.1
    box(
        bx,
        router_y,
        bw,
        8.2,
        [
            f"router [{D} → {E}], fp32 softmax over {E}",
            f"top-{k}: gates = those {k} probabilities",
            "(not renormalised)",
        ],
        "moe",
        "04",
        parts=["router"],
    )
    arrow((bx, router_y - 4.1), (bx, router_y - 7.6), f"gates, experts [B, T, {k}]")
    exp_rows = [
        "",
        "",
        f"{E} GeGLU experts; a token uses its top {k} (filled)",
        "(gelu(x·W) ⊙ x·V) · W₁",
        f"W, V [{D}, {F}];  W₁ [{F}, {D}]",
        "output = Σ gate × expert(x)",
        *int8,
    ]
    exp_h = len(exp_rows) * row_h + 1.5
    exp_y = router_y - 7.6 - exp_h / 2
    box(bx, exp_y, bw, exp_h, exp_rows, "moe", "04", parts=["experts", "quant"], strong=int8_strong)
    n_draw = min(E, 16)
    sw = min(3.6, (bw - 8) / n_draw - 0.6)
    xs = bx - (n_draw - 1) * (sw + 0.6) / 2 + np.arange(n_draw) * (sw + 0.6)
    sq_y = exp_y + exp_h / 2 - 0.75 - row_h
    for j, xj in enumerate(xs):
        ax.add_patch(
            Rectangle(
                (xj - sw / 2, sq_y - 1.6),
                sw,
                3.2,
                zorder=3,
                lw=0.9,
                facecolor="#ff7f0e" if j < k else "white",
                edgecolor="#8a4b08",
                alpha=1.0 if on("experts", "quant") else 0.3,
            )
        )
        ax.text(
            xj,
            sq_y,
            str(j) if (n_draw == E or j < n_draw - 1) else "…",
            ha="center",
            va="center",
            fontsize=7.5,
            zorder=4,
        )
    y = exp_y - exp_h / 2
    arrow((bx, y), (bx, y - 3.25), act)
    post_moe = y - 5.5
    box(bx, post_moe, bw, 4.5, ["post-MoE RMSNorm"], "norm", "06", parts=["norm"])
    block_out(post_moe, post_moe - 4)

    # the rest of the course, below the layer
    ax.text(96, 12.5, "around the model:", fontsize=8.5, va="center", color="#444444")
    around = (
        ("07", "sharded over a mesh", "mesh"),
        ("08", "loaded, generating", "running"),
        ("09", "long context", "long"),
        ("10", "trained from scratch", "training"),
    )
    for i, (nb, text, part) in enumerate(around, 1):
        badge(95, 12.5 - 2.5 * i, nb, ha="left")
        framed = bool(lit) and on(part)
        ax.text(
            101,
            12.5 - 2.5 * i,
            text,
            fontsize=9 if framed else 8.5,
            va="center",
            color="#d62728" if framed else "#444444",
            fontweight="bold" if framed else "normal",
        )
    presets = {
        "Grok-1": GrokConfig.grok_1(),
        "GrokConfig.small()": GrokConfig.small(),
        "GrokConfig.tiny()": GrokConfig.tiny(),
    }
    name = next((n for n, c in presets.items() if c == cfg), "GrokConfig")
    ax.text(
        60,
        97.8,
        title
        or f"{name}: {L} layers, D = {D}, {Nq} q / {Nk} kv heads × {H}, "
        f"{E} experts top-{k}, F = {F}, vocabulary {V:,}",
        ha="center",
        va="center",
        fontsize=11,
        fontweight="bold",
    )
    return fig


# --------------------------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------------------------
def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit a figure ``width_in`` inches wide: constrained
    layout makes room for a title's lines but never wraps one, and a figure drawn into a
    widget (no ``bbox_inches="tight"``) would cut a long line off."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.6 * fontsize)) - 4)  # ~0.6 em per character
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False))


def _routing_caption(k: int, *, annotate: bool, gates: bool) -> str:
    """What a routing heatmap's stripes and cell text stand for, with k choices per token
    (the router's ``top_k`` order: highest probability first)."""
    if k == 1:
        what = "each cell = the expert a token is sent to in that layer"
    else:
        what = (
            f"each cell = the {k} experts a token is sent to in that layer, "
            "1st choice (highest router probability) on the left"
        )
    if not annotate:
        return what + "."
    if gates:
        return (
            f"{what}. Text e5 43% = expert 5 with gate 43%: its router probability, "
            "the weight of its output in the sum."
        )
    return f"{what}. Text e5 = expert 5."


def _ink(rgba) -> str:
    """Black or white, whichever reads better on a fill colour."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.6 else "white"


def routing_heatmap(
    experts,
    labels: Sequence[str] | None = None,
    *,
    gates=None,
    row: int = 0,
    num_experts: int | None = None,
    title: str | None = None,
    annotate: bool | None = None,
) -> Figure:
    """Which experts each token goes to, in every layer: tokens (rows) × layers (columns).

    ``experts`` [L, B, T, k] (or [L, T, k]) from ``capture``, each token's k experts in the
    router's order (``top_k``: highest probability first). Each cell is split into k stripes,
    one per choice, coloured by that choice's expert (1st choice on the left; the image under
    them, ``ax.images[0]``, is the 1st choice); when there is room (``annotate``, default: up
    to 12 layers) each stripe names its expert, with ``gates`` as ``e:g`` (expert e, gate g
    in %). A caption under the title always says what the stripes and the text mean, and a
    legend names the expert colours, so a custom ``title`` cannot lose that.
    """
    from matplotlib.patches import Patch

    e = _select_row(experts, row, 3).astype(int)  # [L, T, k]
    g = None if gates is None else _select_row(gates, row, 3)
    L, T, k = e.shape
    E = int(num_experts or (e.max() + 1))
    labels = list(labels) if labels is not None else [str(t) for t in range(T)]
    if len(labels) != T:
        raise ValueError(f"{len(labels)} labels for {T} tokens")
    annotate = (L <= 12 and T <= 120) if annotate is None else annotate
    per_choice = (0.62 if g is not None else 0.34) if annotate else 0.14
    width = _fit(L, per_choice * k, 5.0, 14, 2.8)
    fig = Figure(figsize=(width, _fit(T, 0.27, 3.2, 40, 2.0)), layout="constrained")
    ax = fig.add_subplot()
    cmap = _expert_colors(E)
    norm = mcolors.BoundaryNorm(np.arange(E + 1) - 0.5, E)
    ax.imshow(e[..., 0].T, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    w = 1.0 / k
    for layer in range(L):
        for t in range(T):
            for j in range(k):
                x0 = layer - 0.5 + j * w
                if j:  # the 1st choice is the image under the stripes
                    ax.add_patch(
                        Rectangle((x0, t - 0.5), w, 1, color=cmap(norm(e[layer, t, j])), lw=0)
                    )
                if annotate:
                    text = f"e{e[layer, t, j]}"
                    if g is not None:
                        text += f" {100 * g[layer, t, j]:.0f}%"
                    ax.text(
                        x0 + w / 2,
                        t,
                        text,
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=_ink(cmap(norm(e[layer, t, j]))),
                        fontweight="bold",
                    )
    for x in np.arange(L + 1) - 0.5:  # white rules between layers
        ax.axvline(x, color="white", lw=2.5)
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_ylim(T - 0.5, -0.5)
    ax.set_yticks(range(T), labels, fontsize=9, fontfamily="monospace")
    step = max(1, math.ceil(L / 16))
    ax.set_xticks(range(0, L, step), [str(i) for i in range(0, L, step)], fontsize=9)
    ax.tick_params(length=0)
    ax.set_xlabel("layer", fontsize=9)
    ax.set_ylabel("token", fontsize=9)
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    fig.suptitle(title or "Routing: the experts each token is sent to, per layer", fontsize=11)
    caption = _routing_caption(k, annotate=annotate, gates=g is not None)
    ax.set_title(_wrap(caption, 0.8 * fig.get_figwidth(), 9), fontsize=9, color="#333333")
    handles = [Patch(color=cmap(norm(i)), label=f"e{i}") for i in range(E)]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(E, 10),
        fontsize=9,
        title="colour = expert",
        title_fontsize=9,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.0,
    )
    return fig


def expert_load(experts, num_experts: int | None = None, *, title: str | None = None) -> Figure:
    """Fraction of routed (token, choice) pairs each expert receives, per layer.

    Left: layers × experts heatmap (percent in each cell); right: every layer's load as
    bars against the uniform share 1/E. ``experts`` [L, B, T, k] or [L, T, k].
    """
    e = np.asarray(experts).astype(int)
    L = e.shape[0]
    E = int(num_experts or (e.max() + 1))
    flat = e.reshape(L, -1)
    frac = np.stack([np.bincount(f, minlength=E)[:E] / max(f.size, 1) for f in flat])  # [L,E]
    fig = Figure(
        figsize=(_fit(E, 0.9, 9, 18, 4.5), _fit(L, 0.32, 3.2, 14, 1.6)), layout="constrained"
    )
    ax, bx = fig.subplots(1, 2, width_ratios=[1.1, 1])
    im = ax.imshow(frac, cmap="viridis", vmin=0, vmax=max(frac.max(), 1e-9), aspect="auto")
    if L * E <= 600:
        for i in range(L):
            for j in range(E):
                ax.text(
                    j,
                    i,
                    f"{100 * frac[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] < 0.6 * frac.max() else "black",
                )
    ax.set_xticks(range(E))
    ax.set_yticks(range(L))
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("share of routed tokens (%)", fontsize=10)
    cb = fig.colorbar(im, ax=ax, format=FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    cb.set_label("share")
    cmap = _expert_colors(E)
    width = 0.8 / E
    for j in range(E):
        bx.bar(
            np.arange(L) + (j - (E - 1) / 2) * width,
            frac[:, j],
            width=width,
            color=cmap(j),
            label=f"expert {j}",
        )
    bx.axhline(1 / E, color="black", ls="--", lw=1, label=f"uniform 1/{E}")
    bx.set_xticks(range(L))
    bx.set_xlabel("layer")
    bx.set_ylabel("share of routed tokens")
    bx.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    bx.set_title("load per layer", fontsize=10)
    bx.legend(
        fontsize=7,
        ncol=1 if E <= 10 else 2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
    )
    fig.suptitle(title or f"Expert load ({flat.shape[1]:,} routed pairs per layer)", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------
def attention_maps(
    attention,
    labels: Sequence[str] | None = None,
    *,
    layer: int = 0,
    row: int = 0,
    kv_head: int = 0,
    q_heads: int | Sequence[int] | str | None = None,
    key_labels: Sequence[str] | None = None,
    title: str | None = None,
    max_cols: int = 2,
    gamma: float = 0.5,
) -> Figure:
    """Attention weights (query tokens × key tokens) of one layer and one KV group.

    ``attention`` [L, B, K, R, T, S] from ``capture`` (or [K, R, T, S] for one layer/row).
    ``q_heads``: None = each of the R query heads sharing ``kv_head`` in its own panel;
    an int or list = those heads; ``"mean"`` = their average in one panel. Colours follow
    weight^``gamma`` (½: small weights stay visible); keys a query cannot see are grey.
    """
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim == 6:
        a = a[layer, row]
    if a.ndim != 4:
        raise ValueError(f"attention must be [L, B, K, R, T, S] or [K, R, T, S], got {a.shape}")
    K, R, T, S = a.shape
    group = a[kv_head]  # [R, T, S]
    if isinstance(q_heads, str):
        if q_heads != "mean":
            raise ValueError(f"q_heads must be None, an int, a list or 'mean', got {q_heads!r}")
        panels = [("mean of query heads " + f"{kv_head * R}–{kv_head * R + R - 1}", group.mean(0))]
    else:
        heads = (
            range(R)
            if q_heads is None
            else ([q_heads] if isinstance(q_heads, int) else list(q_heads))
        )
        # query head q = kv_head·R + h reads KV head q // R (the model's [K, R] head order)
        panels = [
            (f"query head {kv_head * R + h} (reads KV head {kv_head})", group[h]) for h in heads
        ]
    n = len(panels)
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    side = _fit(max(T, S), 0.13, 3.0, 6.0, 1.4)
    fig = Figure(figsize=(cols * side + 1.2, rows * side + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    q_lab = list(labels) if labels is not None else [str(i) for i in range(T)]
    k_lab = (
        list(key_labels)
        if key_labels is not None
        else (q_lab if len(q_lab) == S else [str(i) for i in range(S)])
    )
    vmax = max(float(max(p.max() for _, p in panels)), 1e-9)
    im = None
    from matplotlib import colormaps

    cmap = colormaps["magma"].with_extremes(bad="#d9d9d9")
    norm = mcolors.PowerNorm(gamma, vmin=0, vmax=vmax)
    for ax, (name, w) in zip(axes, panels, strict=False):
        # exactly-zero weights are masked keys (future tokens, padding): shown grey
        im = ax.imshow(np.ma.masked_equal(w, 0.0), cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        fs = 7 if max(T, S) <= 48 else 5
        ax.set_yticks(
            range(T), q_lab if max(T, S) <= 96 else [""] * T, fontsize=fs, fontfamily="monospace"
        )
        ax.set_xticks(
            range(S),
            k_lab if max(T, S) <= 96 else [""] * S,
            fontsize=fs,
            fontfamily="monospace",
            rotation=90,
        )
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.colorbar(
        im,
        ax=axes[:n].tolist(),
        shrink=0.8,
        label=f"attention weight (colour ∝ weight^{gamma:g}; grey = not visible)",
    )
    fig.suptitle(
        title or f"Attention, layer {layer}, KV head {kv_head} ({R} query heads share it)",
        fontsize=11,
    )
    return fig


# --------------------------------------------------------------------------------------------
# rotary embeddings
# --------------------------------------------------------------------------------------------
def _inv_freq(key_size: int, base: float) -> np.ndarray:
    from grok_flax.rope import inverse_frequencies

    return np.asarray(inverse_frequencies(key_size, base), np.float64)


def rope_frequencies(
    key_size: int = 128,
    base: float = 10000.0,
    max_position: int = 8192,
    *,
    title: str | None = None,
) -> Figure:
    """RoPE's H/2 rotation frequencies: each pair's wavelength against the context, and the
    rotation cos(position · θ_i) of every pair over positions 0 … ``max_position``."""
    theta = _inv_freq(key_size, base)
    wavelength = 2 * np.pi / theta
    pairs = np.arange(len(theta))
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax, bx, cx = fig.subplots(1, 3, width_ratios=[1, 1, 1.25])
    slow = wavelength > max_position
    ax.semilogy(
        pairs[~slow],
        wavelength[~slow],
        "o",
        ms=3.5,
        color="tab:blue",
        label="≥ 1 full turn within the context",
    )
    ax.semilogy(
        pairs[slow], wavelength[slow], "o", ms=3.5, color="tab:orange", label="less than one turn"
    )
    ax.axhline(max_position, color="black", ls="--", lw=1)
    ax.text(0, max_position * 1.25, f"context = {max_position:,} positions", fontsize=8)
    ax.set_xlabel(f"frequency pair i (features i and i + {key_size // 2})")
    ax.set_ylabel("wavelength 2π/θᵢ (positions per turn)")
    ax.set_title(f"θᵢ = {base:g}^(−2i/{key_size})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    near = np.arange(0, 129)
    kw = dict(
        aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", interpolation="nearest"
    )
    bx.imshow(
        np.cos(near[None, :] * theta[:, None]),
        extent=(-0.5, near[-1] + 0.5, -0.5, len(theta) - 0.5),
        **kw,
    )
    bx.set_xlabel("position")
    bx.set_ylabel("frequency pair i")
    bx.set_title(f"cos(position · θᵢ), positions 0–{near[-1]}", fontsize=10)
    stride = max(1, max_position // 512)
    far = np.arange(0, max_position + 1, stride)
    rot = np.cos(far[None, :] * theta[:, None])
    # pairs turning faster than 4 samples per turn would alias at this stride: grey them
    rot = np.ma.masked_where(np.broadcast_to((wavelength < 4 * stride)[:, None], rot.shape), rot)
    from matplotlib import colormaps

    im = cx.imshow(
        rot,
        extent=(far[0], far[-1], -0.5, len(theta) - 0.5),
        **{**kw, "cmap": colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")},
    )
    cx.set_xlabel("position")
    cx.set_ylabel("frequency pair i")
    cx.set_title(f"… out to {max_position:,} (grey: too fast to draw)", fontsize=10)
    fig.colorbar(im, ax=[bx, cx], label="cos(angle)")
    fig.suptitle(
        title or f"Rotary embedding frequencies (key size {key_size}, base {base:g})", fontsize=11
    )
    return fig


def rope_relative(
    key_size: int = 128,
    base: float = 10000.0,
    max_distance: int = 8192,
    *,
    samples: int = 256,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """How a rotated query and key interact as a function of their distance m − n only.

    The line is the expected ⟨R(m)·q, R(n)·q⟩ / ‖q‖² for a random q — Σᵢ cos((m−n)θᵢ) / (H/2) —
    and the dots are measured on ``samples`` random pairs (m, n) at many absolute positions:
    they fall on the same curve whatever m and n are.
    """
    theta = _inv_freq(key_size, base)
    dist = np.unique(
        np.concatenate([np.arange(0, 64), np.geomspace(64, max_distance, 400).astype(int)])
    )
    expected = np.cos(dist[:, None] * theta[None]).mean(1)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(key_size)
    m = rng.integers(0, max_distance, samples)
    n = rng.integers(0, max_distance, samples)

    def rotated(x, positions):  # x [H] at each position -> [N, H], by the library's RoPE
        import jax.numpy as jnp

        from grok_flax.rope import apply_rope

        xs = jnp.broadcast_to(jnp.asarray(x, jnp.float32), (1, len(positions), 1, key_size))
        out = apply_rope(xs, jnp.asarray(positions, jnp.int32)[None], base)
        return np.asarray(out[0, :, 0], np.float64)

    measured = np.sum(rotated(q, m) * rotated(q, n), axis=1)
    measured_curve = rotated(q, dist) @ q / (q @ q)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(dist + 1, expected, color="black", lw=1.5, label="expected over random q")
    ax.plot(
        dist + 1,
        measured_curve,
        color="tab:blue",
        lw=0.8,
        alpha=0.7,
        label="one q: ⟨R_d q, q⟩ / |q|²",
    )
    ax.scatter(
        np.abs(m - n) + 1,
        measured / (q @ q),
        s=10,
        color="tab:red",
        zorder=3,
        label="same q at random (m, n): depends on |m − n| only",
    )
    ax.set_xscale("log")
    ax.set_xlabel("distance |m − n| + 1 (log)")
    ax.set_ylabel("⟨R_m q, R_n q⟩ / |q|²")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(
        title or f"RoPE sees relative position (key size {key_size}, base {base:g})", fontsize=11
    )
    return fig


# --------------------------------------------------------------------------------------------
# quantisation
# --------------------------------------------------------------------------------------------
def quantization_error(
    w, q=None, *, blocks: int = 1, title: str | None = None, bins: int = 101
) -> Figure:
    """int8 + block scales: the weights with their quantisation step, and the error in steps.

    ``w`` [..., in, out] float weights; ``q`` their ``QArray`` (made with ``blocks`` scale
    blocks if not given). Right panel: (dequantized − w) / step, which stays within ±½.
    """
    import jax.numpy as jnp

    from grok_flax.quant import expand_scales, quantize

    w = np.asarray(w, np.float32)
    q = quantize(w, blocks) if q is None else q
    rows = w.shape[-2]
    step = np.asarray(expand_scales(q.scales, rows, jnp.float32))
    deq = np.asarray(q.dequantize(jnp.float32))
    err = deq - w
    ratio = (err / step).ravel()
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax, bx, cx = fig.subplots(1, 3)
    ax.hist(w.ravel(), bins=bins, color="tab:blue", alpha=0.8)
    ax.set_title("weights", fontsize=10)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.text(
        0.02,
        0.97,
        f"{w.size:,} weights\nmedian step {np.median(step):.3g}\n"
        f"(step = max|w| of its\nblock / 127)",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
    )
    # rounding to the grid: near zero, w/step against (int8 × scale)/step is a staircase
    x, y = (w / step).ravel(), (deq / step).ravel()
    near = np.abs(x) < 4.5
    x, y = x[near][:400], y[near][:400]
    order = np.argsort(x)
    bx.plot(x[order], y[order], ".", ms=4, color="tab:red", label="int8 × scale")
    bx.plot([-4.5, 4.5], [-4.5, 4.5], color="grey", lw=0.8, ls=":", label="no rounding")
    bx.set_xticks(range(-4, 5))
    bx.set_yticks(range(-4, 5))
    bx.grid(alpha=0.3)
    bx.set_title("rounding to the int8 grid (weights near 0)", fontsize=10)
    bx.set_xlabel("w / step")
    bx.set_ylabel("(int8 × scale) / step = the int8 value")
    bx.legend(fontsize=8, loc="upper left")
    cx.hist(ratio, bins=np.linspace(-0.6, 0.6, bins), color="tab:green", alpha=0.85)
    for x in (-0.5, 0.5):
        cx.axvline(x, color="black", ls="--", lw=1)
    cx.set_title("error / step (bounded by ±½)", fontsize=10)
    cx.set_xlabel("(int8 × scale − w) / step")
    cx.set_ylabel("count")
    rms = float(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(w**2)))
    cx.set_ylim(top=cx.get_ylim()[1] * 1.3)
    cx.text(
        0.5,
        0.97,
        f"max |err|/step = {np.abs(ratio).max():.3f}   relative RMS error {100 * rms:.2f}%",
        transform=cx.transAxes,
        va="top",
        ha="center",
        fontsize=8,
        bbox=dict(facecolor="white", alpha=0.9, edgecolor="none"),
    )
    fig.suptitle(
        title or f"int8 quantisation with {q.blocks} scale block(s) per column", fontsize=11
    )
    return fig


# --------------------------------------------------------------------------------------------
# memory and cost curves
# --------------------------------------------------------------------------------------------
def kv_memory_growth(
    cfg,
    batch_sizes: Sequence[int] = (1, 8, 32),
    *,
    max_tokens: int | None = None,
    dtype="bfloat16",
    device_bytes: float | None = None,
    device_name: str = "device",
    title: str | None = None,
) -> Figure:
    """KV-memory bytes against tokens held, one line per batch size, for a ``GrokConfig``
    (2 × layers × kv-heads × key size × dtype bytes per token and row).

    Both axes are logarithmic (base 2), so every batch size is a visible straight line (a
    batch 128 times larger sits 7 doublings higher, not 128 times higher on a linear axis
    that flattens batch 1 onto zero); markers sit at each doubling of the tokens and each
    line is labelled at its end with its size at ``max_tokens``. With ``device_bytes`` a
    dashed line marks the memory available, and a line that crosses it is marked where it
    does (the tokens at which that batch runs out of memory)."""
    import jax.numpy as jnp

    from grok_flax.kv_memory import kv_bytes_per_token

    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be positive integers, got {batch_sizes}")
    per_token = kv_bytes_per_token(cfg, jnp.dtype(dtype))
    max_tokens = int(max_tokens or cfg.sequence_len)
    lo = max(1, max_tokens // 64)
    tokens = np.unique(np.r_[lo * 2.0 ** np.arange(7), max_tokens])
    tokens = tokens[tokens <= max_tokens]
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(len(batch_sizes))]
    for b, c in zip(batch_sizes, colours, strict=True):
        y = tokens * per_token * b
        ax.plot(tokens, y, "o-", color=c, lw=2, ms=4, label=f"batch {b}")
        ax.annotate(
            f"batch {b}: {format_bytes(y[-1])}",
            (tokens[-1], y[-1]),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            color=c,
            fontweight="bold",
        )
        if device_bytes and y[-1] > device_bytes:
            full = device_bytes / (per_token * b)
            ax.plot([full], [device_bytes], "X", color=c, ms=10, mec="black")
            ax.annotate(
                f"full at {full:,.0f} tokens",
                (full, device_bytes),
                xytext=(-10, 5),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=9,
                color=c,
            )
    top = max(batch_sizes) * per_token * max_tokens
    bottom = min(batch_sizes) * per_token * tokens[0]
    if device_bytes:
        ax.axhline(device_bytes, color="black", ls="--", lw=1)
        ax.text(
            tokens[0],
            device_bytes * 1.15,
            f"{device_name}: {format_bytes(device_bytes)}",
            fontsize=9,
            va="bottom",
        )
        top = max(top, device_bytes)
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xticks(tokens)
    ax.yaxis.set_major_locator(LogLocator(base=4, numticks=20))
    ax.yaxis.set_minor_locator(LogLocator(base=2, subs=(), numticks=40))
    ax.yaxis.set_major_formatter(_bytes_formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom / 1.5, top * 3)
    ax.set_xlim(tokens[0] / 1.2, max_tokens * 3.2)  # room for the end labels
    ax.tick_params(labelsize=9)
    ax.set_xlabel("tokens in the KV memory (per row, log scale)", fontsize=9)
    ax.set_ylabel("KV memory (log scale)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(
        title
        or f"KV memory: {format_bytes(per_token)} per token per row "
        f"({cfg.num_layers} layers × 2 × {cfg.num_kv_heads} kv-heads × "
        f"{cfg.key_size} × {jnp.dtype(dtype).itemsize} B)",
        fontsize=10,
    )
    return fig


def growth_plot(
    x,
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "tokens",
    ylabel: str = "bytes",
    title: str = "",
    logx: bool = True,
    logy: bool = True,
    as_bytes: bool = True,
    styles: Mapping[str, str] | None = None,
) -> Figure:
    """Several quantities against one x (log–log by default): measured costs and their
    extrapolations. ``series`` maps a legend label to values (NaN = not measured);
    ``styles`` optionally maps a label to a matplotlib format string ('o-', '--' …)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.asarray(x, dtype=np.float64)
    for label, y in series.items():
        y = np.asarray(y, dtype=np.float64)
        xs = x if len(y) == len(x) else np.asarray(y[0], np.float64)
        ys = y if len(y) == len(x) else np.asarray(y[1], np.float64)
        ax.plot(xs, ys, (styles or {}).get(label, "o-"), label=label, lw=1.8, ms=5)
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if logy:
        ax.set_yscale("log", base=2 if as_bytes else 10)
        if as_bytes:
            from matplotlib.ticker import LogLocator

            ax.yaxis.set_major_locator(LogLocator(base=2, numticks=12))
            ax.yaxis.set_minor_locator(LogLocator(base=2, subs=(), numticks=12))
    if as_bytes:
        ax.yaxis.set_major_formatter(_bytes_formatter)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    return fig


def param_breakdown(
    counts: Mapping[str, int],
    *,
    active: Mapping[str, int] | None = None,
    title: str | None = None,
    log: bool = True,
) -> Figure:
    """Where the parameters live: one horizontal bar per group (count and share), and
    optionally the parameters one token actually uses (``active``) beside them. ``log``:
    a logarithmic count axis (default), so groups a thousand times smaller stay visible."""
    names = list(counts)
    total = sum(counts.values())
    vals = np.array([counts[n] for n in names], dtype=np.float64)
    fig = Figure(figsize=(10, 0.55 * len(names) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))
    h = 0.38 if active else 0.7
    ax.barh(y - (h / 2 if active else 0), vals, height=h, color="tab:blue", label="stored")
    if active:
        act = np.array([active.get(n, 0) for n in names], dtype=np.float64)
        ax.barh(
            y + h / 2,
            act,
            height=h,
            color="tab:orange",
            label=f"used per token ({100 * act.sum() / total:.1f}% of all)",
        )
    for i, v in enumerate(vals):
        ax.text(
            v,
            i - (h / 2 if active else 0),
            f"  {_count(v)} ({100 * v / total:.2g}%)",
            va="center",
            fontsize=8,
        )
        if active and act[i] != v:
            ax.text(act[i], i + h / 2, f"  {_count(act[i])}", va="center", fontsize=8)
    if log:
        ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (log scale)" if log else "parameters")
    ax.set_xlim(right=vals.max() * (30 if log else 1.25))
    ax.grid(alpha=0.3, axis="x", which="both")
    if active:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"Where the {total:,} parameters live", fontsize=11)
    return fig


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def parity_scatter(
    got, want, valid=None, *, title: str | None = None, step: float | None = None
) -> Figure:
    """This implementation's logits against the original code's, and their differences.

    ``valid`` (bool, broadcastable to the leading axes) selects the positions that count;
    ``step`` (e.g. one bf16 step at the largest logit) is drawn on the difference histogram.
    """
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if valid is not None:
        m = np.broadcast_to(np.asarray(valid, bool)[..., None], got.shape)
        got, want = got[m], want[m]
    got, want = got.ravel(), want.ravel()
    diff = got - want
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    ax.plot(want, got, ".", ms=2, color="tab:blue", alpha=0.4)
    lim = [min(want.min(), got.min()), max(want.max(), got.max())]
    ax.plot(lim, lim, color="black", lw=0.8, label="y = x")
    ax.set_xlabel("original code's logits")
    ax.set_ylabel("grok_flax logits")
    ax.set_title(
        f"{want.size:,} logits, correlation {np.corrcoef(got, want)[0, 1]:.6f}", fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lo, hi = float(diff.min()), float(diff.max())
    pad = max(hi - lo, abs(hi), 1e-6) * 0.05
    bx.hist(diff, bins=101, range=(lo - pad, hi + pad), color="tab:green")
    bx.set_yscale("log")
    bx.set_xlabel("grok_flax − original")
    bx.set_ylabel("count (log)")
    bx.set_title(
        f"max |diff| {np.abs(diff).max():.3g}, mean {np.abs(diff).mean():.3g}", fontsize=10
    )
    if step:
        for x in (-step, step):
            bx.axvline(x, color="black", ls="--", lw=1)
        bx.text(step, bx.get_ylim()[1] * 0.5, f" one bf16 step\n ({step:.4f})", fontsize=8)
    fig.suptitle(title or "Parity with the original Grok-1 code", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# sharding
# --------------------------------------------------------------------------------------------
def sharding_map(
    arrays: Mapping[str, object], *, title: str | None = None, max_cols: int = 3
) -> Figure:
    """Which device holds which block of each array (its last two axes).

    ``arrays`` maps a name to a sharded ``jax.Array`` / ``ShapeDtypeStruct`` with a
    sharding, or to a ``(shape, sharding)`` pair. Blocks held by several devices
    (replication) list all of them.
    """
    from matplotlib import colormaps

    items = []
    for name, a in arrays.items():
        shape, sharding = a if isinstance(a, tuple) else (a.shape, a.sharding)
        items.append((name, tuple(shape), sharding))
    n = len(items)
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    cmap = colormaps["tab10"]
    for ax, (name, shape, sharding) in zip(axes, items, strict=False):
        shape2 = shape[-2:] if len(shape) >= 2 else (1,) + tuple(shape)
        blocks: dict[tuple, list[int]] = {}
        for dev, idx in sharding.devices_indices_map(shape).items():
            idx = tuple(idx)[-2:] if len(shape) >= 2 else (slice(0, 1),) + tuple(idx)
            key = tuple(
                (s.start or 0, shape2[i] if s.stop is None else s.stop) for i, s in enumerate(idx)
            )
            blocks.setdefault(key, []).append(dev.id)
        for (rr, cc), devs in sorted(blocks.items()):
            color = cmap(min(devs) % 10)
            alpha = 0.85 if len(devs) == 1 else 0.45
            ax.add_patch(
                Rectangle(
                    (cc[0], rr[0]),
                    cc[1] - cc[0],
                    rr[1] - rr[0],
                    facecolor=color,
                    alpha=alpha,
                    edgecolor="black",
                    lw=1,
                )
            )
            devs = sorted(devs)
            label = (
                "dev " + ",".join(map(str, devs))
                if len(devs) <= 4
                else f"dev {devs[0]}–{devs[-1]}"
                if devs == list(range(devs[0], devs[-1] + 1))
                else f"{len(devs)} devices"
            )
            ax.text(
                (cc[0] + cc[1]) / 2,
                (rr[0] + rr[1]) / 2,
                label,
                ha="center",
                va="center",
                fontsize=8 if len(blocks) <= 8 else 6,
                rotation=90 if (cc[1] - cc[0]) / shape2[1] < 0.2 else 0,
            )
        ax.set_xlim(0, shape2[1])
        ax.set_ylim(shape2[0], 0)
        spec = getattr(sharding, "spec", "")
        ax.set_title(f"{name}\n{list(shape)}  {spec}", fontsize=9)
        ax.set_xlabel(f"axis {len(shape) - 1} ({shape2[1]:,})", fontsize=8)
        ax.set_ylabel(
            f"axis {len(shape) - 2} ({shape2[0]:,})" if len(shape) >= 2 else "", fontsize=8
        )
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    mesh = getattr(items[0][2], "mesh", None)
    mesh_txt = (
        " on mesh " + " × ".join(f"{k}={v}" for k, v in mesh.shape.items())
        if mesh is not None
        else ""
    )
    fig.suptitle(title or f"Which device holds which block{mesh_txt}", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# interactive routing explorer (ipywidgets)
# --------------------------------------------------------------------------------------------
def router_probabilities(
    probs,
    k: int = 2,
    *,
    experts=None,
    token: str | None = None,
    layer: int | None = None,
    title: str | None = None,
) -> Figure:
    """One token's router probabilities over the E experts, the top-k highlighted.

    ``probs`` [E] (float32 softmax of the router logits); ``experts`` [k]: the experts the
    model chose (from ``capture``; default: the k largest of ``probs``). The chosen experts'
    bars are drawn in their expert colour with their gate; the text says how much of the
    probability mass they hold — Grok-1 uses those raw probabilities as gates, without
    renormalising.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    E = p.size
    if not 1 <= k <= E:
        raise ValueError(f"k must be in 1..{E} (the number of experts), got {k}")
    chosen = (
        np.argsort(-p, kind="stable")[:k]
        if experts is None
        else np.asarray(experts, dtype=int).reshape(-1)
    )
    if len(chosen) != k or not all(0 <= e < E for e in chosen):
        raise ValueError(f"experts must be {k} expert ids in 0..{E - 1}, got {experts!r}")
    cmap = _expert_colors(E)
    colors = [cmap(e) if e in chosen else "#c8c8c8" for e in range(E)]
    fig = Figure(figsize=(4.6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(E), p, color=colors, edgecolor="black", lw=0.6)
    for rank, e in enumerate(chosen):
        ax.text(e, p[e], f"#{rank + 1}\n{100 * p[e]:.0f}%", ha="center", va="bottom", fontsize=8)
    ax.axhline(1 / E, color="black", ls=":", lw=1, label=f"uniform 1/{E}")
    ax.set_xticks(range(E))
    ax.set_xlabel("expert")
    ax.set_ylabel("router probability")
    ax.set_ylim(0, min(1.0, p.max() * 1.3 + 0.05))
    ax.legend(fontsize=7, loc="upper right")
    where = " ".join(
        x
        for x in (
            f"layer {layer}" if layer is not None else "",
            f"token {token!r}" if token is not None else "",
        )
        if x
    )
    ax.set_title(
        title
        or f"Router, {where}\ntop-{k} gates hold {100 * p[chosen].sum():.0f}% (not renormalised)",
        fontsize=9,
    )
    return fig


_PNG_DPI = 90  # the explorer's figures are shown at this many CSS pixels per inch ...
_PNG_SCALE = 2  # ... and drawn with this many times as many pixels: sharp on HiDPI screens


def _png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_PNG_DPI * _PNG_SCALE)
    return buf.getvalue()


class RoutingExplorer:
    """Routing and attention of a model on a prompt, explored with widgets.

    ``RoutingExplorer(model, tokenizer, prompt)`` runs the prompt once with
    ``capture=True`` and keeps router probabilities, chosen experts, gates and attention
    weights. Displayed in a notebook it is a prompt box, a layer slider, a token picker and a
    query-head slider above three figures: the routing heatmap of every token and layer (the
    picked token framed), the picked token's router probabilities in the picked layer, and
    the attention map of the picked head in that layer (the picked token's row framed).

    ``figures(layer, token, head)`` returns the three figures without any widget, which is
    how the notebook keeps a static copy and how the tests check it.
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: str = "def fibonacci(n):\n",
        *,
        max_tokens: int = 48,
        bos: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_tokens = int(max_tokens)
        self.bos = bos
        cfg = model.cfg
        self.num_layers, self.num_experts = cfg.num_layers, cfg.num_experts
        self.k, self.num_heads = cfg.num_selected_experts, cfg.num_q_heads
        self.group = cfg.num_q_heads // cfg.num_kv_heads
        self._widget = None
        self._quiet = False  # True while the token list is replaced: no redraw per change
        self.set_prompt(prompt)

    # ---------------------------------------------------------------- data (no widgets)
    def set_prompt(self, prompt: str) -> None:
        """Tokenize ``prompt`` (at most ``max_tokens`` tokens) and run the model on it."""
        import jax.numpy as jnp

        if not isinstance(prompt, str) or not prompt:
            raise ValueError("the prompt must be a non-empty string")
        ids = self.tokenizer.encode(prompt, bos=self.bos)
        if len(ids) > self.max_tokens:
            ids = ids[: self.max_tokens]
        self.prompt, self.ids = prompt, ids
        self.labels = token_labels(self.tokenizer, ids)
        _, cap = self.model(jnp.asarray([ids]), capture=True)
        self.router_probs = np.asarray(cap["router_probs"], np.float32)[:, 0]  # [L, T, E]
        self.experts = np.asarray(cap["experts"])[:, 0]  # [L, T, k]
        self.gates = np.asarray(cap["gates"], np.float32)[:, 0]  # [L, T, k]
        self.attention = np.asarray(cap["attention"], np.float32)[:, 0]  # [L, K, R, T, S]

    def _check(self, layer: int, token: int, head: int) -> tuple[int, int, int]:
        T = len(self.ids)
        for name, v, n in (
            ("layer", layer, self.num_layers),
            ("token", token, T),
            ("head", head, self.num_heads),
        ):
            if not isinstance(v, (int, np.integer)) or not 0 <= v < n:
                raise ValueError(f"{name} must be an integer in 0..{n - 1}, got {v!r}")
        return int(layer), int(token), int(head)

    def figures(self, layer: int = 0, token: int = -1, head: int = 0) -> dict[str, Figure]:
        """{"routing", "router", "attention"}: the three figures for this choice
        (``token=-1``: the last token)."""
        if isinstance(token, (int, np.integer)) and token < 0:
            token = len(self.ids) + int(token)
        layer, token, head = self._check(layer, token, head)
        label = self.labels[token]
        routing = routing_heatmap(
            self.experts[:, None],
            self.labels,
            gates=self.gates[:, None],
            num_experts=self.num_experts,
            title=f"Routing of the prompt (framed: token {token} {label!r}, layer {layer})",
        )
        ax = routing.axes[0]
        ax.add_patch(
            Rectangle((layer - 0.5, token - 0.5), 1, 1, fill=False, lw=2.5, edgecolor="black")
        )
        router = router_probabilities(
            self.router_probs[layer, token],
            self.k,
            experts=self.experts[layer, token],
            token=label,
            layer=layer,
        )
        kv, q = divmod(head, self.group)
        attention = attention_maps(
            self.attention[layer],
            self.labels,
            kv_head=kv,
            q_heads=q,
            title=f"Attention, layer {layer}, query head {head}",
        )
        T = len(self.ids)
        attention.axes[0].add_patch(
            Rectangle((-0.5, token - 0.5), T, 1, fill=False, lw=1.5, edgecolor="#1f77b4")
        )
        return dict(routing=routing, router=router, attention=attention)

    # ------------------------------------------------------------------------- widgets
    @property
    def widget(self):
        """The ipywidgets box (built on first use)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self):
        import ipywidgets as w

        self.prompt_box = w.Textarea(
            value=self.prompt, description="prompt", layout=w.Layout(width="95%", height="4em")
        )
        self.run_button = w.Button(description="run", button_style="primary")
        self.layer_slider = w.IntSlider(
            value=0, min=0, max=self.num_layers - 1, description="layer", continuous_update=False
        )
        self.token_picker = w.Dropdown(description="token")
        self.head_slider = w.IntSlider(
            value=0,
            min=0,
            max=self.num_heads - 1,
            description="query head",
            continuous_update=False,
        )
        # each image is given its width only (render): its height follows from the PNG's own
        # aspect ratio. Without height "auto" and align_self, the flex row stretches the
        # shorter router figure to the attention figure's height, distorting it.
        self.images = {
            name: w.Image(
                format="png",
                layout=w.Layout(
                    height="auto", max_width="100%", align_self="flex-start", object_fit="contain"
                ),
            )
            for name in ("routing", "router", "attention")
        }
        self.status = w.HTML()
        for name, widget in (
            ("prompt", self.prompt_box),
            ("run", self.run_button),
            ("layer", self.layer_slider),
            ("token", self.token_picker),
            ("head", self.head_slider),
            ("status", self.status),
            *self.images.items(),
        ):
            widget.add_class(f"grok-explorer-{name}")
        self._set_token_options(len(self.ids) - 1)
        self.run_button.on_click(lambda _: self._rerun())
        for control in (self.layer_slider, self.token_picker, self.head_slider):
            control.observe(lambda _: self.render(), names="value")
        self.render()
        controls = w.VBox(
            [
                w.HBox([self.prompt_box, self.run_button]),
                w.HBox([self.layer_slider, self.token_picker, self.head_slider]),
                self.status,
            ]
        )
        figures = w.HBox(
            [self.images["router"], self.images["attention"]],
            layout=w.Layout(align_items="flex-start"),
        )
        box = w.VBox([controls, figures, self.images["routing"]])
        box.add_class("grok-explorer")
        return box

    def _set_token_options(self, value: int) -> None:
        self._quiet = True
        self.token_picker.options = [(f"{i}: {lab}", i) for i, lab in enumerate(self.labels)]
        self.token_picker.value = value
        self._quiet = False

    def _rerun(self) -> None:
        try:
            self.set_prompt(self.prompt_box.value)
        except ValueError as e:
            self.status.value = f"<b>cannot run:</b> {e}"
            return
        self._set_token_options(len(self.ids) - 1)
        self.render()

    def render(self) -> None:
        """Redraw the three figures for the widgets' current values."""
        if self._quiet:
            return
        token = self.token_picker.value
        figs = self.figures(self.layer_slider.value, token, self.head_slider.value)
        for name, fig in figs.items():
            self.images[name].value = _png(fig)
            # CSS pixels: the PNG has _PNG_SCALE times as many, for a sharp image
            self.images[name].width = str(round(fig.get_figwidth() * _PNG_DPI))
        head = self.head_slider.value
        self.status.value = (
            f"{len(self.ids)} tokens · layer {self.layer_slider.value} · token "
            f"{token} {self.labels[token]!r} · experts "
            f"{self.experts[self.layer_slider.value, token].tolist()} · "
            f"query head {head} (reads KV head {head // self.group})"
        )

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
