"""Concept pictures for notebook 09: long context: chunked prefill, attention cost as the context
grows.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

from grok_flax.viz.figures import config_or_grok1, format_bytes

__all__ = ["attention_tiles", "chunked_prefill", "context_growth"]

_DONE = "#9ecae1"  # computed / already in the KV memory
_NOW = "#fd8d3c"  # the chunk being worked on
_SKIP = "#f0f0f0"  # skipped / empty


def _positive(**values) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _spans(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def attention_tiles(cfg=None, *, context: int | None = None, chunk: int | None = None) -> Figure:
    """``attend_chunked``'s work for one head: the T × T causal score matrix cut into
    [chunk × chunk] tiles (queries down, keys across). Tiles under the diagonal are computed
    whole, tiles on it are half masked, tiles above it are skipped; one query chunk's row is
    swept left to right by the online softmax, which carries only (m, l, acc) from tile to tile.
    The side text counts the tiles and compares one tile's fp32 bytes with the whole matrix's.
    ``context`` and ``chunk`` default to ``cfg.sequence_len`` and ``cfg.attention_chunk``
    (Grok-1: 8,192 and 512)."""
    cfg = config_or_grok1(cfg)
    T = int(context if context is not None else cfg.sequence_len)
    c = int(chunk if chunk is not None else cfg.attention_chunk)
    _positive(context=T, chunk=c)
    spans = _spans(T, c)
    n = len(spans)
    if n > 64:
        raise ValueError(f"{n} chunks per side is too many tiles to draw: use a larger chunk")
    computed = n * (n + 1) // 2
    fig = Figure(figsize=(9.5, 5.6), layout="constrained")
    ax, side = fig.subplots(1, 2, width_ratios=(1.15, 1))
    for qi, (q0, q1) in enumerate(spans):
        for ki, (k0, k1) in enumerate(spans):
            if ki < qi:
                ax.add_patch(Rectangle((k0, q0), k1 - k0, q1 - q0, fc=_DONE, ec="white", lw=1))
            elif ki == qi:  # the diagonal tile: only keys at or before each query
                ax.add_patch(Rectangle((k0, q0), k1 - k0, q1 - q0, fc="white", ec="white"))
                tri = [(k0, q0), (k0, q1), (k1, q1)]
                ax.add_patch(Polygon(tri, closed=True, fc=_DONE, ec="none"))
                ax.add_patch(Rectangle((k0, q0), k1 - k0, q1 - q0, fill=False, ec="#555555"))
            else:
                ax.add_patch(
                    Rectangle((k0, q0), k1 - k0, q1 - q0, fc=_SKIP, ec="white", hatch="//", lw=1)
                )
    row = (3 * n) // 4 if n > 1 else 0
    q0, q1 = spans[row]
    ax.add_patch(Rectangle((0, q0), q1, q1 - q0, fill=False, ec=_NOW, lw=3))
    y = (q0 + q1) / 2
    arrow = FancyArrowPatch((0, y), (q1, y), arrowstyle="-|>", mutation_scale=18, color="black")
    ax.add_patch(arrow)
    ax.text(
        q1 / 2,
        q0 - 0.01 * T,
        f"query chunk {row}: the sweep over key chunks 0…{row}",
        ha="center",
        va="bottom",
        fontsize=9,
        bbox=dict(fc="white", ec="none", alpha=0.85, pad=1),
    )
    ax.set_xlim(0, T)
    ax.set_ylim(T, 0)
    ax.set_aspect("equal")
    ticks = [s for s, _ in spans][:: max(1, n // 4)] + [T]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=8)
    ax.set_yticks(ticks, [f"{t:,}" for t in ticks], fontsize=8)
    ax.set_xlabel("key position (chunks of the KV memory)", fontsize=9)
    ax.set_ylabel("query position (chunks of the prompt)", fontsize=9)
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    tile = c * c * 4
    whole = T * T * 4
    side.axis("off")
    lines = [
        (f"T = {T:,} tokens, chunk = {c:,}", "bold"),
        (f"{n} × {n} tiles; computed: {computed:,} of {n * n:,}", "normal"),
        ("   (blue; the diagonal ones half masked,", "normal"),
        ("    hatched ones above it skipped)", "normal"),
        ("", "normal"),
        ("Online softmax along one row (orange):", "bold"),
        ("   per query it carries only a running max m,", "normal"),
        ("   a running sum l and acc = Σ e^(s−m)·v,", "normal"),
        ("   rescaled by e^(m−m′) when the max grows.", "normal"),
        ("", "normal"),
        ("fp32 scores held at once, per head:", "bold"),
        (f"   chunked: one {c:,} × {c:,} tile = {format_bytes(tile)}", "normal"),
        (f"   naive:   all {T:,} × {T:,} = {format_bytes(whole)}", "normal"),
        (f"   × {cfg.num_q_heads} query heads: {format_bytes(cfg.num_q_heads * tile)}", "normal"),
        (f"   against {format_bytes(cfg.num_q_heads * whole)} per layer", "normal"),
    ]
    for i, (text, weight) in enumerate(lines):
        side.text(0.0, 1 - i * 0.066, text, fontsize=9.5, fontweight=weight, va="top")
    fig.suptitle(
        "Chunked attention: the causal score matrix in tiles, one tile at a time", fontsize=11
    )
    return fig


def chunked_prefill(
    cfg=None, *, prompt: int | None = None, chunk: int = 512, memory: int | None = None
) -> Figure:
    """The prompt going into the KV memory chunk by chunk, as ``Generator`` prefills it: one
    row per prefill step, each the whole ``memory`` (default ``cfg.sequence_len``) slots.
    Step c writes the keys and values of chunk c (orange) and its queries read every slot
    written so far (blue, plus its own chunk causally); the slots after it are still empty.
    The filled part grows as a staircase: the triangle of ``attention_tiles`` seen from the
    memory. ``prompt`` defaults to about a third of the memory."""
    cfg = config_or_grok1(cfg)
    S = int(memory if memory is not None else cfg.sequence_len)
    P = int(prompt if prompt is not None else max(1, (S * 35) // 100))
    _positive(prompt=P, chunk=int(chunk), memory=S)
    if P > S:
        raise ValueError(f"a prompt of {P:,} tokens does not fit a KV memory of {S:,} slots")
    c = min(int(chunk), P)
    spans = _spans(P, c)
    n = len(spans)
    if n > 40:
        raise ValueError(f"{n} prefill steps are too many rows to draw: use a larger chunk")
    fig = Figure(figsize=(9.5, 1.4 + 0.5 * n), layout="constrained")
    ax = fig.add_subplot()
    for i, (a, b) in enumerate(spans):
        ax.add_patch(Rectangle((0, i + 0.1), S, 0.8, fc="white", ec="#999999", lw=0.8))
        if a:
            ax.add_patch(Rectangle((0, i + 0.1), a, 0.8, fc=_DONE, ec="none"))
        ax.add_patch(Rectangle((a, i + 0.1), b - a, 0.8, fc=_NOW, ec="none"))
        room = b < 0.5 * S  # the note goes in the empty part, else over the written part
        ax.text(
            b + 0.01 * S if room else 0.01 * S,
            i + 0.5,
            f"writes {a:,}…{b - 1:,}; its queries read slots 0…{b - 1:,}",
            va="center",
            fontsize=9,
            bbox=None if room else dict(fc="white", ec="none", alpha=0.85, pad=1),
        )
    ax.set_xlim(0, S)
    ax.set_ylim(n, 0)
    ax.set_yticks([i + 0.5 for i in range(n)], [f"step {i}" for i in range(n)], fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_xlabel(f"KV memory slot (0 … {S - 1:,}); white: not written yet", fontsize=9)
    ax.set_title(
        f"Chunked prefill: a {P:,}-token prompt in chunks of {c:,} "
        f"(orange: written at this step; blue: written before, read again)",
        fontsize=10,
    )
    return fig


def context_growth(cfg=None, contexts: Sequence[int] = (2048, 4096, 8192)) -> Figure:
    """What doubling the context does, for one sequence, drawn to scale: the causal T × T
    score matrix (one layer, all query heads, fp32: what naive attention materializes) grows
    ×4, the KV memory (all layers, bf16) ×2, and the [chunk × chunk] tile chunked attention
    holds not at all. One column per context; sizes from ``cfg`` (Grok-1 by default)."""
    from grok_flax.kv_memory import kv_bytes_per_token

    cfg = config_or_grok1(cfg)
    contexts = [int(t) for t in contexts]
    if not contexts or min(contexts) < 1:
        raise ValueError(f"contexts must be positive integers, got {contexts}")
    big = max(contexts)
    c = cfg.attention_chunk
    heads = cfg.num_q_heads
    fig = Figure(figsize=(3.3 * len(contexts), 4.6), layout="constrained")
    axes = fig.subplots(1, len(contexts), squeeze=False)[0]
    for ax, T in zip(axes, contexts, strict=True):
        s = T / big  # side of the score square, to scale
        ax.add_patch(Rectangle((0, 1 - s), s, s, fc="white", ec="#d62728", lw=1.5))
        # queries down, keys across: a query sees the keys at or before it (lower left)
        ax.add_patch(Polygon([(0, 1), (0, 1 - s), (s, 1 - s)], fc="#f4a6a6", ec="none"))
        t = min(c, T) / big
        ax.add_patch(Rectangle((0, 1 - t), t, t, fc="#2ca02c", ec="none"))
        ax.add_patch(Rectangle((0, -0.22), s, 0.07, fc="#1f77b4", ec="none"))
        scores = heads * T * T * 4
        kv = kv_bytes_per_token(cfg) * T
        tile = heads * min(c, T) ** 2 * 4
        ax.text(0, 1.04, f"T = {T:,}", fontsize=11, fontweight="bold")
        ax.text(0.02, -0.05, f"scores: {format_bytes(scores)}", fontsize=9, color="#d62728")
        ax.text(0.02, -0.12, f"tile: {format_bytes(tile)}", fontsize=9, color="#2ca02c")
        ax.text(0.02, -0.3, f"KV memory: {format_bytes(kv)}", fontsize=9, color="#1f77b4")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.35, 1.12)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(
        f"Doubling the context: red = the T × T scores naive attention holds for one layer "
        f"({heads} heads, fp32; shaded: the causal half) ×4;\nblue = the KV memory "
        f"({cfg.num_layers} layers, bf16) ×2; green = chunked attention's {c}×{c} tile per "
        "head ×1",
        fontsize=10,
    )
    return fig
