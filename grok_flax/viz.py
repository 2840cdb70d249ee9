"""Figures for the walkthrough: routing, expert load, attention, RoPE, quantisation, memory.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure
state, nothing shown, safe on the Agg backend and in tests); a notebook displays it as the
cell's value, a script saves it with ``fig.savefig(path)``.

What the model can show is asked for with ``capture``::

    logits, cap = model(tokens, capture=True)
    # cap["router_probs"] [L, B, T, E]   cap["experts"], cap["gates"] [L, B, T, k]
    # cap["attention"]    [L, B, K, G, T, S]   (K kv-heads × G query heads each)
    viz.routing_heatmap(cap["experts"], labels, gates=cap["gates"])
    viz.expert_load(cap["experts"], num_experts=cfg.num_experts)
    viz.attention_maps(cap["attention"], labels, layer=0, kv_head=0)

``token_labels(tokenizer, ids)`` turns token ids into short, printable tick labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

__all__ = [
    "attention_maps", "expert_load", "format_bytes", "growth_plot", "kv_memory_growth",
    "param_breakdown", "parity_scatter", "quantization_error", "rope_frequencies",
    "rope_relative", "routing_heatmap", "sharding_map", "token_labels",
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
    return (piece.replace("\u2581", "·").replace(" ", "·").replace("\n", "\\n")
            .replace("\t", "\\t") or "∅")


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
        raise ValueError(f"expected an array [L, B, ...] or [L, ...] with {ndim_unbatched} "
                         f"axes after the batch, got shape {a.shape}")
    return a


def _fit(n: int, per: float, lo: float, hi: float, extra: float = 0.0) -> float:
    return float(min(hi, max(lo, extra + per * n)))


# --------------------------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------------------------
def routing_heatmap(experts, labels: Sequence[str] | None = None, *, gates=None, row: int = 0,
                    num_experts: int | None = None, title: str | None = None,
                    annotate: bool | None = None) -> Figure:
    """Which expert each token goes to, in every layer: tokens (rows) × layers (columns).

    ``experts`` [L, B, T, k] (or [L, T, k]) from ``capture``; each cell is coloured by the
    token's first choice and, when there is room, shows all k choices (and with ``gates``
    their gate values in %).
    """
    e = _select_row(experts, row, 3).astype(int)  # [L, T, k]
    g = None if gates is None else _select_row(gates, row, 3)
    L, T, k = e.shape
    E = int(num_experts or (e.max() + 1))
    labels = list(labels) if labels is not None else [str(t) for t in range(T)]
    if len(labels) != T:
        raise ValueError(f"{len(labels)} labels for {T} tokens")
    annotate = (T * L <= 1200) if annotate is None else annotate
    cell_w = 0.62 if (annotate and g is not None) else 0.42
    fig = Figure(figsize=(_fit(L, cell_w, 4.5, 16, 2.6), _fit(T, 0.24, 3.0, 40, 1.4)),
                 layout="constrained")
    ax = fig.add_subplot()
    cmap = _expert_colors(E)
    norm = mcolors.BoundaryNorm(np.arange(E + 1) - 0.5, E)
    im = ax.imshow(e[..., 0].T, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    if annotate:
        for layer in range(L):
            for t in range(T):
                if g is None:
                    text = "·".join(str(x) for x in e[layer, t])
                else:
                    text = " ".join(f"{x}:{100 * p:.0f}" for x, p in zip(e[layer, t],
                                                                         g[layer, t],
                                                                         strict=True))
                ax.text(layer, t, text, ha="center", va="center", fontsize=6.5, color="white",
                        fontweight="bold")
    ax.set_yticks(range(T), labels, fontsize=8, fontfamily="monospace")
    ax.set_xticks(range(L), [str(i) for i in range(L)], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("token")
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    what = "expert:gate%" if g is not None else "experts"
    ax.set_title(title or f"Routing: cell colour = 1st-choice expert, text = top-{k} {what}",
                 fontsize=10)
    cb = fig.colorbar(im, ax=ax, ticks=range(E), shrink=min(1.0, 8 / max(T, 1) + 0.3))
    cb.set_label("1st-choice expert")
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
    fig = Figure(figsize=(_fit(E, 0.9, 9, 18, 4.5), _fit(L, 0.32, 3.2, 14, 1.6)),
                 layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[1.1, 1])
    im = ax.imshow(frac, cmap="viridis", vmin=0, vmax=max(frac.max(), 1e-9), aspect="auto")
    if L * E <= 600:
        for i in range(L):
            for j in range(E):
                ax.text(j, i, f"{100 * frac[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] < 0.6 * frac.max() else "black")
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
        bx.bar(np.arange(L) + (j - (E - 1) / 2) * width, frac[:, j], width=width,
               color=cmap(j), label=f"expert {j}")
    bx.axhline(1 / E, color="black", ls="--", lw=1, label=f"uniform 1/{E}")
    bx.set_xticks(range(L))
    bx.set_xlabel("layer")
    bx.set_ylabel("share of routed tokens")
    bx.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    bx.set_title("load per layer", fontsize=10)
    bx.legend(fontsize=7, ncol=1 if E <= 10 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    fig.suptitle(title or f"Expert load ({flat.shape[1]:,} routed pairs per layer)",
                 fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------
def attention_maps(attention, labels: Sequence[str] | None = None, *, layer: int = 0,
                   row: int = 0, kv_head: int = 0, q_heads: int | Sequence[int] | str |
                   None = None, key_labels: Sequence[str] | None = None,
                   title: str | None = None, max_cols: int = 2, gamma: float = 0.5) -> Figure:
    """Attention weights (query tokens × key tokens) of one layer and one KV group.

    ``attention`` [L, B, K, G, T, S] from ``capture`` (or [K, G, T, S] for one layer/row).
    ``q_heads``: None = each of the G query heads sharing ``kv_head`` in its own panel;
    an int or list = those heads; ``"mean"`` = their average in one panel. Colours follow
    weight^``gamma`` (½: small weights stay visible); keys a query cannot see are grey.
    """
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim == 6:
        a = a[layer, row]
    if a.ndim != 4:
        raise ValueError(f"attention must be [L, B, K, G, T, S] or [K, G, T, S], got {a.shape}")
    K, G, T, S = a.shape
    group = a[kv_head]  # [G, T, S]
    if isinstance(q_heads, str):
        if q_heads != "mean":
            raise ValueError(f"q_heads must be None, an int, a list or 'mean', got {q_heads!r}")
        panels = [("mean of query heads " + f"{kv_head * G}–{kv_head * G + G - 1}",
                   group.mean(0))]
    else:
        heads = range(G) if q_heads is None else ([q_heads] if isinstance(q_heads, int)
                                                   else list(q_heads))
        panels = [(f"query head {kv_head * G + h} (group {kv_head}.{h})", group[h])
                  for h in heads]
    n = len(panels)
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    side = _fit(max(T, S), 0.13, 3.0, 6.0, 1.4)
    fig = Figure(figsize=(cols * side + 1.2, rows * side + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    q_lab = list(labels) if labels is not None else [str(i) for i in range(T)]
    k_lab = list(key_labels) if key_labels is not None else (
        q_lab if len(q_lab) == S else [str(i) for i in range(S)])
    vmax = max(float(max(p.max() for _, p in panels)), 1e-9)
    im = None
    from matplotlib import colormaps

    cmap = colormaps["magma"].with_extremes(bad="#d9d9d9")
    norm = mcolors.PowerNorm(gamma, vmin=0, vmax=vmax)
    for ax, (name, w) in zip(axes, panels, strict=False):
        # exactly-zero weights are masked keys (future tokens, padding): shown grey
        im = ax.imshow(np.ma.masked_equal(w, 0.0), cmap=cmap, norm=norm,
                       interpolation="nearest")
        ax.set_title(name, fontsize=9)
        fs = 7 if max(T, S) <= 48 else 5
        ax.set_yticks(range(T), q_lab if max(T, S) <= 96 else [""] * T, fontsize=fs,
                      fontfamily="monospace")
        ax.set_xticks(range(S), k_lab if max(T, S) <= 96 else [""] * S, fontsize=fs,
                      fontfamily="monospace", rotation=90)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes[:n].tolist(), shrink=0.8,
                 label=f"attention weight (colour ∝ weight^{gamma:g}; grey = not visible)")
    fig.suptitle(title or f"Attention, layer {layer}, KV head {kv_head} "
                 f"({G} query heads share it)", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# rotary embeddings
# --------------------------------------------------------------------------------------------
def _inv_freq(key_size: int, base: float) -> np.ndarray:
    from grok_flax.rope import inverse_frequencies

    return np.asarray(inverse_frequencies(key_size, base), np.float64)


def rope_frequencies(key_size: int = 128, base: float = 10000.0,
                     max_position: int = 8192, *, title: str | None = None) -> Figure:
    """RoPE's H/2 rotation frequencies: each pair's wavelength against the context, and the
    rotation cos(position · θ_i) of every pair over positions 0 … ``max_position``."""
    theta = _inv_freq(key_size, base)
    wavelength = 2 * np.pi / theta
    pairs = np.arange(len(theta))
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax, bx, cx = fig.subplots(1, 3, width_ratios=[1, 1, 1.25])
    slow = wavelength > max_position
    ax.semilogy(pairs[~slow], wavelength[~slow], "o", ms=3.5, color="tab:blue",
                label="≥ 1 full turn within the context")
    ax.semilogy(pairs[slow], wavelength[slow], "o", ms=3.5, color="tab:orange",
                label="less than one turn")
    ax.axhline(max_position, color="black", ls="--", lw=1)
    ax.text(0, max_position * 1.25, f"context = {max_position:,} positions", fontsize=8)
    ax.set_xlabel(f"frequency pair i (features i and i + {key_size // 2})")
    ax.set_ylabel("wavelength 2π/θᵢ (positions per turn)")
    ax.set_title(f"θᵢ = {base:g}^(−2i/{key_size})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    near = np.arange(0, 129)
    kw = dict(aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower",
              interpolation="nearest")
    bx.imshow(np.cos(near[None, :] * theta[:, None]), extent=(-0.5, near[-1] + 0.5, -0.5,
                                                               len(theta) - 0.5), **kw)
    bx.set_xlabel("position")
    bx.set_ylabel("frequency pair i")
    bx.set_title(f"cos(position · θᵢ), positions 0–{near[-1]}", fontsize=10)
    stride = max(1, max_position // 512)
    far = np.arange(0, max_position + 1, stride)
    rot = np.cos(far[None, :] * theta[:, None])
    # pairs turning faster than 4 samples per turn would alias at this stride: grey them
    rot = np.ma.masked_where(np.broadcast_to((wavelength < 4 * stride)[:, None], rot.shape),
                             rot)
    from matplotlib import colormaps

    im = cx.imshow(rot, extent=(far[0], far[-1], -0.5, len(theta) - 0.5),
                   **{**kw, "cmap": colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")})
    cx.set_xlabel("position")
    cx.set_ylabel("frequency pair i")
    cx.set_title(f"… out to {max_position:,} (grey: too fast to draw)", fontsize=10)
    fig.colorbar(im, ax=[bx, cx], label="cos(angle)")
    fig.suptitle(title or f"Rotary embedding frequencies (key size {key_size}, base {base:g})",
                 fontsize=11)
    return fig


def rope_relative(key_size: int = 128, base: float = 10000.0, max_distance: int = 8192, *,
                  samples: int = 256, seed: int = 0, title: str | None = None) -> Figure:
    """How a rotated query and key interact as a function of their distance m − n only.

    The line is the expected ⟨R_m q, R_n q⟩ / |q|² for a random q — Σᵢ cos((m−n)θᵢ) / (H/2) —
    and the dots are measured on ``samples`` random pairs (m, n) at many absolute positions:
    they fall on the same curve whatever m and n are.
    """
    theta = _inv_freq(key_size, base)
    dist = np.unique(np.concatenate([np.arange(0, 64), np.geomspace(64, max_distance, 400)
                                     .astype(int)]))
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
    ax.plot(dist + 1, measured_curve, color="tab:blue", lw=0.8, alpha=0.7,
            label="one q: ⟨R_d q, q⟩ / |q|²")
    ax.scatter(np.abs(m - n) + 1, measured / (q @ q), s=10, color="tab:red", zorder=3,
               label="same q at random (m, n): depends on |m − n| only")
    ax.set_xscale("log")
    ax.set_xlabel("distance |m − n| + 1 (log)")
    ax.set_ylabel("⟨R_m q, R_n q⟩ / |q|²")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or f"RoPE sees relative position (key size {key_size}, base {base:g})",
                 fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# quantisation
# --------------------------------------------------------------------------------------------
def quantization_error(w, q=None, *, blocks: int = 1, title: str | None = None,
                       bins: int = 101) -> Figure:
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
    ax.text(0.02, 0.97, f"{w.size:,} weights\nmedian step {np.median(step):.3g}\n"
            f"(step = max|w| of its\nblock / 127)", transform=ax.transAxes, va="top",
            fontsize=8)
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
    cx.text(0.5, 0.97, f"max |err|/step = {np.abs(ratio).max():.3f}   relative RMS error "
            f"{100 * rms:.2f}%", transform=cx.transAxes, va="top", ha="center", fontsize=8,
            bbox=dict(facecolor="white", alpha=0.9, edgecolor="none"))
    fig.suptitle(title or f"int8 quantisation with {q.blocks} scale block(s) per column",
                 fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# memory and cost curves
# --------------------------------------------------------------------------------------------
def kv_memory_growth(cfg, batch_sizes: Sequence[int] = (1, 8, 32), *,
                     max_tokens: int | None = None, dtype="bfloat16",
                     device_bytes: float | None = None, device_name: str = "device",
                     title: str | None = None) -> Figure:
    """KV-memory bytes against tokens held, one line per batch size, for a ``GrokConfig``
    (2 × layers × kv-heads × key size × dtype bytes per token and row)."""
    import jax.numpy as jnp

    from grok_flax.kv_memory import kv_bytes_per_token

    per_token = kv_bytes_per_token(cfg, jnp.dtype(dtype))
    max_tokens = int(max_tokens or cfg.sequence_len)
    tokens = np.linspace(0, max_tokens, 200)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for b in batch_sizes:
        y = tokens * per_token * b
        ax.plot(tokens, y, lw=2, label=f"batch {b}: {format_bytes(y[-1])} at {max_tokens:,}")
    top = max(batch_sizes) * per_token * max_tokens
    if device_bytes:
        ax.axhline(device_bytes, color="black", ls="--", lw=1)
        ax.text(tokens[2], device_bytes * 0.97, f"{device_name}: {format_bytes(device_bytes)}",
                fontsize=8, va="top")
        top = max(top, device_bytes)
    from matplotlib.ticker import MultipleLocator

    ax.yaxis.set_major_locator(MultipleLocator(2.0 ** math.ceil(math.log2(top / 7))))
    ax.yaxis.set_major_formatter(_bytes_formatter)
    ax.set_ylim(0, top * 1.05)
    ax.set_xlim(0, max_tokens)
    ax.set_xlabel("tokens in the KV memory (per row)")
    ax.set_ylabel("KV memory")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.9 if device_bytes else 1.0))
    ax.set_title(title or f"KV memory: {format_bytes(per_token)} per token per row "
                 f"({cfg.num_layers} layers × 2 × {cfg.num_kv_heads} kv-heads × "
                 f"{cfg.key_size} × {jnp.dtype(dtype).itemsize} B)", fontsize=10)
    return fig


def growth_plot(x, series: Mapping[str, Sequence[float]], *, xlabel: str = "tokens",
                ylabel: str = "bytes", title: str = "", logx: bool = True, logy: bool = True,
                as_bytes: bool = True, styles: Mapping[str, str] | None = None) -> Figure:
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


def param_breakdown(counts: Mapping[str, int], *, active: Mapping[str, int] | None = None,
                    title: str | None = None) -> Figure:
    """Where the parameters live: one horizontal bar per group (count and share), and
    optionally the parameters one token actually uses (``active``) beside them."""
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
        ax.barh(y + h / 2, act, height=h, color="tab:orange",
                label=f"used per token ({100 * act.sum() / total:.1f}% of all)")
    for i, v in enumerate(vals):
        ax.text(v, i - (h / 2 if active else 0), f"  {_count(v)} ({100 * v / total:.2g}%)",
                va="center", fontsize=8)
        if active and act[i] != v:
            ax.text(act[i], i + h / 2, f"  {_count(act[i])}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (log)")
    ax.set_xlim(right=vals.max() * 30)
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


def parity_scatter(got, want, valid=None, *, title: str | None = None,
                   step: float | None = None) -> Figure:
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
    ax.set_title(f"{want.size:,} logits, correlation {np.corrcoef(got, want)[0, 1]:.6f}",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lo, hi = float(diff.min()), float(diff.max())
    pad = max(hi - lo, abs(hi), 1e-6) * 0.05
    bx.hist(diff, bins=101, range=(lo - pad, hi + pad), color="tab:green")
    bx.set_yscale("log")
    bx.set_xlabel("grok_flax − original")
    bx.set_ylabel("count (log)")
    bx.set_title(f"max |diff| {np.abs(diff).max():.4f}, mean {np.abs(diff).mean():.5f}",
                 fontsize=10)
    if step:
        for x in (-step, step):
            bx.axvline(x, color="black", ls="--", lw=1)
        bx.text(step, bx.get_ylim()[1] * 0.5, f" one bf16 step\n ({step:.4f})", fontsize=8)
    fig.suptitle(title or "Parity with the original Grok-1 code", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------
# sharding
# --------------------------------------------------------------------------------------------
def sharding_map(arrays: Mapping[str, object], *, title: str | None = None,
                 max_cols: int = 3) -> Figure:
    """Which device holds which block of each array (its last two axes).

    ``arrays`` maps a name to a sharded ``jax.Array`` / ``ShapeDtypeStruct`` with a
    sharding, or to a ``(shape, sharding)`` pair. Blocks held by several devices
    (replication) list all of them.
    """
    from matplotlib import colormaps

    items = []
    for name, a in arrays.items():
        shape, sharding = (a if isinstance(a, tuple) else (a.shape, a.sharding))
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
            key = tuple((s.start or 0, shape2[i] if s.stop is None else s.stop)
                        for i, s in enumerate(idx))
            blocks.setdefault(key, []).append(dev.id)
        for (rr, cc), devs in sorted(blocks.items()):
            color = cmap(min(devs) % 10)
            alpha = 0.85 if len(devs) == 1 else 0.45
            ax.add_patch(Rectangle((cc[0], rr[0]), cc[1] - cc[0], rr[1] - rr[0],
                                   facecolor=color, alpha=alpha, edgecolor="black", lw=1))
            devs = sorted(devs)
            label = ("dev " + ",".join(map(str, devs)) if len(devs) <= 4 else
                     f"dev {devs[0]}–{devs[-1]}" if devs == list(range(devs[0], devs[-1] + 1))
                     else f"{len(devs)} devices")
            ax.text((cc[0] + cc[1]) / 2, (rr[0] + rr[1]) / 2, label, ha="center",
                    va="center", fontsize=8 if len(blocks) <= 8 else 6,
                    rotation=90 if (cc[1] - cc[0]) / shape2[1] < 0.2 else 0)
        ax.set_xlim(0, shape2[1])
        ax.set_ylim(shape2[0], 0)
        spec = getattr(sharding, "spec", "")
        ax.set_title(f"{name}\n{list(shape)}  {spec}", fontsize=9)
        ax.set_xlabel(f"axis {len(shape) - 1} ({shape2[1]:,})", fontsize=8)
        ax.set_ylabel(f"axis {len(shape) - 2} ({shape2[0]:,})" if len(shape) >= 2 else "",
                      fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    mesh = getattr(items[0][2], "mesh", None)
    mesh_txt = (" on mesh " + " × ".join(f"{k}={v}" for k, v in mesh.shape.items())
                if mesh is not None else "")
    fig.suptitle(title or f"Which device holds which block{mesh_txt}", fontsize=11)
    return fig
