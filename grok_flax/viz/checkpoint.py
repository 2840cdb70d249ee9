"""Concept pictures for notebook 08: the release: its file layout and the streaming load.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot.

- ``release_layout(cfg)``: the ``ckpt-0/`` folder — one file per parameter, in the release's
  (sorted) order, int8 weights + bf16 scales or float32 arrays — and what one file holds;
- ``streaming_load(cfg, devices=8)``: what ``load_checkpoint`` holds on the host while it fills
  a mesh of accelerators, parameter by parameter;
- ``sampling_cutoffs(logits, ...)``: one next-token distribution, largest first, and what the
  temperature, top-k and the reference's nucleus (top-p) filter keep of it;
- ``prefill_decode(prompt_len, new_tokens)``: ``Generator``'s calls in time order and the KV
  memory slots each one writes;
- ``slice_memory(rows)``: what one chip of each accelerator slice holds — weights, KV memory,
  the largest program's temporaries — against the chip's memory (``plan``'s figures).

The file order, sizes and the loader's staging rule are re-derived here from the config (this
layer may not import ``grok_flax.checkpoint``); ``tests/test_viz_checkpoint.py`` checks them
against ``release_names``, ``inspect_checkpoint`` and the loader.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from grok_flax.viz.figures import config_or_grok1

__all__ = [
    "prefill_decode",
    "release_layout",
    "sampling_cutoffs",
    "slice_memory",
    "streaming_load",
]

_INT8, _SCALES, _FLOAT = "#f6b26b", "#f9d9b0", "#b6d7a8"
_BF16_BYTES = 2

# the 12 files of one decoder layer, in the release's order (sorted names), with short labels
_LAYER_FILES = (
    ("moe/linear/w", "moe/linear"),
    ("moe/linear_1/w", "moe/linear_1"),
    ("moe/linear_v/w", "moe/linear_v"),
    ("multi_head_attention/key/w", "attn key"),
    ("multi_head_attention/linear/w", "attn linear"),
    ("multi_head_attention/query/w", "attn query"),
    ("multi_head_attention/value/w", "attn value"),
    ("rms_norm/scale", "rms_norm"),
    ("rms_norm_1/scale", "rms_norm_1"),
    ("rms_norm_2/scale", "rms_norm_2"),
    ("rms_norm_3/scale", "rms_norm_3"),
    ("router/w", "router"),
)
_TOP_FILES = ("language_model/in_out_embed/embeddings", "language_model/rms_norm/scale")


def _gb(n: float) -> str:
    """Decimal bytes, short: 1.61 GB, 24.6 kB, 512 B."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _file_arrays(cfg, short: str) -> tuple[tuple[int, ...], tuple[int, ...] | None, int]:
    """One layer's file: (weight shape, scales shape or None, element bytes of the weight)."""
    D, E, F, H = cfg.emb_size, cfg.num_experts, cfg.ffn_size, cfg.key_size
    q, kv, fl = cfg.num_q_heads * H, cfg.num_kv_heads * H, np.dtype(cfg.param_dtype).itemsize
    shapes = {
        "moe/linear": ((E, D, F), (E, 1, F)),
        "moe/linear_v": ((E, D, F), (E, 1, F)),
        "moe/linear_1": ((E, F, D), (E, cfg.moe_out_scale_blocks, D)),
        "attn key": ((D, kv), (1, kv)),
        "attn value": ((D, kv), (1, kv)),
        "attn query": ((D, q), (1, q)),
        "attn linear": ((q, D), (cfg.attn_out_scale_blocks, D)),
    }
    if short in shapes:
        w, s = shapes[short]
        return (w, s, 1) if cfg.quantized else (w, None, fl)
    return ((D, E) if short == "router" else (D,)), None, fl


def _bytes(w, s, item) -> int:
    return math.prod(w) * item + (math.prod(s) * _BF16_BYTES if s else 0)


def _layer_order(num_layers: int) -> list[int]:
    """Layers in file order: sorted as names, so 0, 1, 10, 11, …, 19, 2, 20, …"""
    return sorted(range(num_layers), key=str)


def _release_files(cfg) -> list[tuple[str, tuple[int, ...], bool, int]]:
    """[(release name, weight shape, quantized, bytes)] in file order, from the config."""
    D, V, fl = cfg.emb_size, cfg.vocab_size, np.dtype(cfg.param_dtype).itemsize
    files = [(_TOP_FILES[0], (V, D), False, V * D * fl), (_TOP_FILES[1], (D,), False, D * fl)]
    for layer in _layer_order(cfg.num_layers):
        for name, short in _LAYER_FILES:
            w, s, item = _file_arrays(cfg, short)
            full = f"transformer/decoder_layer_{layer}/{name}"
            files.append((full, w, s is not None, _bytes(w, s, item)))
    return files


def release_layout(cfg=None, *, max_rows: int = 7) -> Figure:
    """The ``ckpt-0/`` folder of a config's checkpoint (Grok-1 by default): two top-level
    files, then 12 per decoder layer, layers in *sorted-name* order (0, 1, 10, 11, …); each
    cell is a file's index, coloured int8 + bf16 scales or float32, with one layer's bytes
    per file below. Right: what one expert file holds, opcodes around two raw payloads."""
    cfg = config_or_grok1(cfg)
    if max_rows < 3:
        raise ValueError(f"max_rows must be >= 3 (first layers, '⋮', last), got {max_rows}")
    L = cfg.num_layers
    order = _layer_order(L)
    shown = order if L <= max_rows else order[: max_rows - 2] + [None] + order[-1:]
    fig = Figure(figsize=(11.5, 6.2))
    ax = fig.add_axes((0.01, 0.02, 0.64, 0.86))
    ncol, nrow = len(_LAYER_FILES), len(shown)
    ax.set_xlim(-2.6, ncol + 0.1)
    ax.set_ylim(-(nrow + 5.2), 7.0)
    ax.axis("off")
    fl = np.dtype(cfg.param_dtype).itemsize
    top = (
        (0, _TOP_FILES[0], f"[{cfg.vocab_size}, {cfg.emb_size}]", cfg.vocab_size * cfg.emb_size),
        (1, _TOP_FILES[1], f"[{cfg.emb_size}]", cfg.emb_size),
    )
    for r, (i, name, shape, n) in enumerate(top):
        y = 6.3 - r * 1.0
        ax.add_patch(Rectangle((-2.5, y - 0.4), 1.0, 0.8, fc=_FLOAT, ec="black", lw=0.6))
        ax.text(-2.0, y, str(i), ha="center", va="center", fontsize=8.5)
        ax.text(
            -1.35,
            y,
            f"tensor{i:05d}_000  {name} {shape} {cfg.param_dtype}, {_gb(n * fl)}",
            va="center",
            fontsize=8.5,
        )
    for c, (_, short) in enumerate(_LAYER_FILES):
        ax.text(c + 0.5, 1.4, short, rotation=40, ha="left", va="bottom", fontsize=8)
    first = 2
    for r, layer in enumerate(shown):
        y = -r - 0.5 + 1.0
        if layer is None:
            ax.text(ncol / 2, y, "⋮", ha="center", va="center", fontsize=12)
            continue
        ax.text(-0.15, y, f"layer {layer}", ha="right", va="center", fontsize=8.5)
        base = first + order.index(layer) * ncol
        for c, (_, short) in enumerate(_LAYER_FILES):
            quant = _file_arrays(cfg, short)[1] is not None
            ax.add_patch(
                Rectangle(
                    (c + 0.04, y - 0.42),
                    0.92,
                    0.84,
                    fc=_INT8 if quant else _FLOAT,
                    ec="black",
                    lw=0.5,
                )
            )
            ax.text(c + 0.5, y, str(base + c), ha="center", va="center", fontsize=8)
    y = -nrow + 0.1
    ax.text(-0.15, y - 0.2, "bytes per file", ha="right", va="center", fontsize=8.5)
    for c, (_, short) in enumerate(_LAYER_FILES):
        n = _bytes(*_file_arrays(cfg, short))
        ax.text(c + 0.5, y, _gb(n), rotation=90, ha="center", va="top", fontsize=8)
    total = sum(f[3] for f in _release_files(cfg))
    ax.text(
        -2.5,
        -(nrow + 4.9),
        f"{2 + ncol * L} files in ckpt-0/ ({L} layers × {ncol} + 2), {_gb(total)} of array "
        f"data.\nOrange: int8 weight + bf16 scales (a QuantizedWeight8bit); green: "
        f"{cfg.param_dtype}. Cells: the file's index.",
        fontsize=8.5,
    )
    ax.set_title(
        "The release's ckpt-0/: one pickle file per parameter, in sorted-name order",
        fontsize=10.5,
        loc="left",
    )
    _anatomy(fig.add_axes((0.68, 0.06, 0.31, 0.8)), cfg)
    return fig


def _anatomy(ax, cfg) -> None:
    """Right panel of ``release_layout``: one expert file, top to bottom."""
    w, s, item = _file_arrays(cfg, "moe/linear")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title("inside tensor00002_000 (layer 0's moe/linear)", fontsize=10, loc="left")
    if s is None:
        blocks = [
            ("#e6e6e6", 0.18, "opcodes: numpy _reconstruct, dtype,\nshape (a few hundred bytes)"),
            (_FLOAT, 0.5, f"{cfg.param_dtype} payload {list(w)}\n{_gb(math.prod(w) * item)}"),
            ("#e6e6e6", 0.08, "BUILD, STOP"),
        ]
    else:
        blocks = [
            (
                "#e6e6e6",
                0.16,
                "opcodes: QuantizedWeight8bit, numpy\n_reconstruct, dtype int8, shape",
            ),
            (_INT8, 0.34, f"int8 weight payload {list(w)}\n{_gb(math.prod(w))}"),
            ("#e6e6e6", 0.1, "opcodes: dtype bfloat16, shape"),
            (_SCALES, 0.1, f"bf16 scales payload {list(s)}\n{_gb(math.prod(s) * _BF16_BYTES)}"),
            ("#e6e6e6", 0.08, "BUILD {weight, scales}, STOP"),
        ]
    y = 0.95
    for color, h, text in blocks:
        ax.add_patch(Rectangle((0.02, y - h), 0.96, h - 0.01, fc=color, ec="black", lw=0.6))
        ax.text(0.06, y - h / 2, text, va="center", fontsize=8.5)
        y -= h
    ax.text(
        0.02,
        y - 0.02,
        "Not to scale. The reader walks the opcodes (nothing\nis called), records where each "
        "payload starts,\nand memory-maps the bytes.",
        va="top",
        fontsize=8,
    )


def _load_units(cfg, devices: int):
    """The loader's steps on an accelerator mesh: [(label, host bytes staged)], the per-device
    bytes each adds, and the staging budget (the largest file, at least 64 MiB)."""
    files = _release_files(cfg)
    budget = max(64 << 20, max(f[3] for f in files))
    L, fl = cfg.num_layers, np.dtype(cfg.param_dtype).itemsize
    D, V = cfg.emb_size, cfg.vocab_size
    units = [("embeddings", V * D * fl, False), ("final norm", D * fl, False)]
    for _, short in _LAYER_FILES:
        w, s, item = _file_arrays(cfg, short)
        units.append((short, math.prod(w) * item * L, True))
        if s is not None:
            units.append((short + " scales", math.prod(s) * _BF16_BYTES * L, True))
    steps = []  # (group label, host bytes of this step, bytes added per device)
    for label, total, stacked in units:
        if stacked and total / devices > budget:  # too big to stage whole: one layer at a time
            steps += [(label, total / L, total / L / devices)] * L
        else:
            steps.append((label, total, total / devices))
    return steps, budget


def streaming_load(cfg=None, *, devices: int = 8) -> Figure:
    """What ``load_checkpoint`` holds on the host while it fills ``devices`` accelerators.

    One parameter at a time, in the order of the files: a parameter is read (all its layers'
    files) into host buffers and sent to the devices, unless one device's share of it is
    larger than the largest file of the checkpoint (at least 64 MiB) — then it goes one
    layer (one file) at a time into a device buffer. Top: host bytes staged at each step,
    against that budget; bottom: what each device holds so far. Assumes each parameter
    splits evenly over the devices (on CPU nothing is staged: the host buffers are the
    arrays)."""
    cfg = config_or_grok1(cfg)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be an integer >= 1, got {devices!r}")
    steps, budget = _load_units(cfg, devices)
    largest = max(f[3] for f in _release_files(cfg))
    host = np.array([s[1] for s in steps])
    device = np.cumsum([s[2] for s in steps])
    unit, size = ("GB", 1e9) if budget >= 1e9 else ("MB", 1e6)
    x = np.arange(len(steps))
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, height_ratios=(1.3, 1))
    ax.bar(x, host / size, width=1.0, color=_INT8, ec="#b45f06", lw=0.3)
    ax.axhline(budget / size, color="black", ls="--", lw=1)
    ax.text(
        len(steps) / 2,
        budget / size * 0.97,
        f"budget: the largest file, {_gb(budget)}"
        if budget > 64 << 20
        else f"budget: the 64 MiB floor ({_gb(budget)}; the largest file is {_gb(largest)})",
        ha="center",
        va="top",
        fontsize=8.5,
        bbox=dict(fc="white", ec="none", pad=1),
    )
    ax.set_ylim(0, budget / size * 1.3)
    ax.set_ylabel(f"host bytes staged ({unit})")
    labels = [s[0] for s in steps]
    per_layer = sum(1 for g in dict.fromkeys(labels) if labels.count(g) > 1)
    ax.set_title(
        f"Loading onto {devices} accelerators: {len(steps)} steps, one parameter at a time; "
        f"{per_layer} of them go one layer at a time (too large to stage whole)",
        fontsize=10,
    )
    _label_groups(ax, labels, host / size, budget / size * 1.08)
    bx.plot(x, device / size, drawstyle="steps-post", color="tab:blue")
    bx.set_ylabel(f"held per device ({unit})")
    bx.set_xlabel("load step (each bar: one parameter whole, or one layer of it)")
    bx.text(
        0,
        device[-1] / size * 0.9,
        f" each device ends with ≈ {_gb(device[-1])} (1/{devices} of {_gb(device[-1] * devices)})",
        fontsize=8.5,
        va="top",
    )
    for a in (ax, bx):
        a.grid(alpha=0.3)
    return fig


def _category(label: str) -> str:
    for key, name in (("embed", "embedding"), ("moe", "experts"), ("attn", "attention")):
        if label.startswith(key):
            return name
    return "router" if label.startswith("router") else "norms"


def _label_groups(ax, labels: list[str], heights, y: float) -> None:
    """Name each parameter's run of steps above the bars: wide runs by name at ``y``; runs
    too narrow for a name merged with their narrow neighbours under their categories
    ("attention, norms"), just above their bars. A wide run's scales are left unnamed."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((start, i, labels[start]))
            start = i
    wide = max(3, len(labels) // 12)
    named, narrow = [], []  # (start, stop, text); narrow: (start, stop, [categories])
    for k, (a, b, label) in enumerate(runs):
        if b - a >= wide:
            named.append((a, b, label))
        elif k and label == runs[k - 1][2] + " scales" and runs[k - 1][1] - runs[k - 1][0] >= wide:
            continue
        elif narrow and narrow[-1][1] == a:
            a0, _, cats = narrow.pop()
            narrow.append((a0, b, cats + [c for c in [_category(label)] if c not in cats]))
        else:
            narrow.append((a, b, [_category(label)]))
    for a, b, label in named:
        ax.text((a + b - 1) / 2, y, label, ha="center", fontsize=8.5)
    for a, b, cats in narrow:
        ha = "left" if a == 0 else "right" if b == len(labels) else "center"
        x = {"left": a - 0.5, "right": b - 0.5, "center": (a + b - 1) / 2}[ha]
        top = max(heights[a:b]) + 0.03 * y
        ax.text(x, top, ", ".join(cats), ha=ha, va="bottom", fontsize=8.5)


def _bucket(n: int, lo: int, hi: int) -> int:
    b = lo
    while b < n:
        b *= 2
    return min(b, hi)


def prefill_decode(
    prompt_len: int,
    new_tokens: int,
    *,
    chunk: int = 8,
    min_bucket: int = 16,
    max_len: int = 64,
) -> Figure:
    """``Generator``'s calls for one prompt, in time order (rows), and the KV memory slots
    (columns) each writes: the prompt, right-padded to a power-of-two bucket, is prefilled
    ``chunk`` tokens per call; then each decode step feeds one new token and writes one slot.
    The first new token comes from the prefill's last logits, so ``new_tokens`` tokens take
    ``new_tokens - 1`` decode steps."""
    for name, v in (("prompt_len", prompt_len), ("new_tokens", new_tokens), ("chunk", chunk)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if prompt_len + new_tokens > max_len:
        raise ValueError(
            f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds max_len={max_len}"
        )
    T = _bucket(prompt_len, min_bucket, max_len)
    P = min(chunk, T)
    n = -(-T // P)
    if n * P > max_len:
        P, n = T, 1
    rows = []  # (label, written slots, prompt slots among them)
    for c in range(n):
        at = min(c * P, prompt_len)  # the memory's step: the row's fill level
        real = max(0, min(prompt_len - c * P, P))
        rows.append((f"prefill {c + 1}", at, range(at, at + P), range(at, at + real)))
    for i in range(1, new_tokens):
        s = prompt_len + i - 1
        rows.append((f"decode {i}", s, range(s, s + 1), range(s, s + 1)))
    S = min(max_len, max(max(r[2].stop for r in rows), prompt_len + new_tokens) + 2)
    fig = Figure(figsize=(11, 0.3 * len(rows) + 1.9), layout="constrained")
    ax = fig.add_subplot()
    for y, (label, at, written, real) in enumerate(rows):
        decode = label.startswith("decode")
        for s in range(S):
            if s in real:
                color = "tab:blue" if decode else "tab:orange"
            elif s in written:
                color = "#d9d9d9"  # padding: written, then overwritten by the decode
            elif s < at:
                color = "#fdebd0" if s < prompt_len else "#d6e6f5"  # already in memory
            else:
                continue
            ax.add_patch(Rectangle((s, y), 1, 0.85, fc=color, ec="white", lw=0.5))
    ax.set_xlim(0, S)
    ax.set_ylim(len(rows), -0.15)
    ax.set_yticks(np.arange(len(rows)) + 0.42, [r[0] for r in rows], fontsize=8.5)
    ax.set_xlabel("KV memory slot (= position)")
    ax.set_title(
        f"prompt of {prompt_len} tokens → bucket {T}, {n} prefill call(s) of {P}; then "
        f"{new_tokens - 1} decode steps for {new_tokens} new tokens. Orange/blue: written "
        "this call; grey: padding (overwritten later); pale: already in memory",
        fontsize=9.5,
        loc="left",
        wrap=True,
    )
    return fig


def sampling_cutoffs(
    logits,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    show: int = 40,
    labels=None,
) -> Figure:
    """One row of next-token ``logits`` [V]: the ``show`` most likely tokens' probabilities
    after the temperature, largest first, coloured by what survives: top-k (the k largest;
    0 = off), then the reference's nucleus filter (keep every logit at or above the
    smallest one whose cumulative probability, summed from the *bottom*, reaches
    1 - top_p). ``labels``: optional text per token id."""
    x = np.asarray(logits, np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"logits must be one row [V] with V >= 2, got shape {x.shape}")
    if not temperature > 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(
            f"need temperature > 0, top_p in (0, 1], top_k >= 0; got {temperature}, "
            f"{top_p}, {top_k}"
        )
    x = x / temperature
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    keep_k = np.ones(x.size, bool) if top_k == 0 else x >= np.sort(x)[-min(top_k, x.size)]
    s = np.sort(np.where(keep_k, x, -np.inf))
    p = np.exp(s - s.max())
    p /= p.sum()
    threshold = s[np.argmax(np.cumsum(p) >= 1 - top_p)]
    keep = keep_k & (x >= threshold)
    order = np.argsort(-x, kind="stable")[:show]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    colors = ["tab:green" if keep[i] else ("tab:orange" if keep_k[i] else "#bbbbbb") for i in order]
    ax.bar(np.arange(len(order)), probs[order], color=colors)
    if labels is not None:
        ax.set_xticks(
            np.arange(len(order)), [str(labels[i]) for i in order], rotation=90, fontsize=8
        )
    else:
        ax.set_xlabel("tokens, most likely first")
    ax.set_ylabel("probability")
    ax.set_title(
        f"temperature {temperature:g}, top_k {top_k or 'off'}, top_p {top_p:g}: "
        f"{int(keep.sum())} of {x.size} tokens can be drawn (green, "
        f"{probs[keep].sum():.1%} of the probability); orange: cut by top-p only; "
        "grey: cut by top-k",
        fontsize=9.5,
        loc="left",
        wrap=True,
    )
    ax.grid(alpha=0.3, axis="y")
    return fig


def slice_memory(rows, *, title: str | None = None) -> Figure:
    """One bar per accelerator slice: what **one chip** holds — the weights, the KV memory and
    the largest compiled program's temporaries, stacked — beside the chip's memory (a dashed
    line) and the room left. ``rows``: dicts with ``label``, ``weights``, ``kv``, ``temp`` and
    ``memory``, all bytes per chip (``plan(...)``'s ``weight_bytes``, ``kv``, the programs'
    largest ``temp`` and ``device_memory``)."""
    rows = list(rows)
    if not rows:
        raise ValueError("slice_memory needs at least one row")
    keys = ("label", "weights", "kv", "temp", "memory")
    for r in rows:
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"each row needs {keys}; {r!r} lacks {missing}")
        for k in keys[1:]:
            if not r[k] >= 0:
                raise ValueError(f"row {r['label']!r}: {k} must be bytes >= 0, got {r[k]!r}")
    parts = (
        ("weights", _INT8, "weights"),
        ("kv", "#9fc5e8", "KV memory"),
        ("temp", "#b7b7b7", "programs' temporaries"),
    )
    fig = Figure(figsize=(10, 0.75 * len(rows) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    top = max(max(r["memory"], r["weights"] + r["kv"] + r["temp"]) for r in rows) / 1e9
    for y, r in enumerate(rows):
        left = 0.0
        for key, color, name in parts:
            width = r[key] / 1e9
            ax.barh(y, width, left=left, color=color, ec="white", label=name if y == 0 else None)
            left += width
        need, have = left, r["memory"] / 1e9
        ax.plot([have, have], [y - 0.42, y + 0.42], "k--", lw=1.3)
        room = have - need
        verdict = f"fits: {room:.1f} GB left" if room >= 0 else f"short by {-room:.1f} GB"
        ax.text(
            max(need, have) + 0.01 * top,
            y,
            f"{need:.1f} of {have:.1f} GB = {r['memory'] / 2**30:.0f} GiB ({verdict})",
            va="center",
            fontsize=9,
            color="black" if room >= 0 else "tab:red",
        )
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("GB per chip (dashed: the chip's memory)")
    ax.legend(loc="lower right", fontsize=8.5, frameon=False)
    ax.set_title(title or "what one chip of each slice holds", fontsize=10, loc="left")
    return fig
