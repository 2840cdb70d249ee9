"""Concept pictures for notebook 10: training — next-token targets, the load-balancing term,
and the figures of two training runs compared (load per expert, loss curves).

Each function returns a ``matplotlib.figure.Figure`` drawn from plain numbers (the config's
expert counts, a run's logged values), without pyplot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import PercentFormatter

__all__ = ["balance_term", "load_comparison", "next_token_targets", "training_curves"]


def next_token_targets(tokens: Sequence[str], num_pad: int = 0) -> Figure:
    """A window of ``tokens`` cut into inputs (all but the last) and targets (all but the
    first): position t is scored on token t+1. The last ``num_pad`` tokens are pad: their
    targets are greyed out and struck from the mean."""
    tokens = [str(t) for t in tokens]
    n = len(tokens)
    if n < 2:
        raise ValueError(f"next_token_targets: need a window of at least 2 tokens, got {n}")
    if not 0 <= num_pad < n:
        raise ValueError(f"next_token_targets: num_pad must lie in [0, {n - 1}], got {num_pad}")
    fig = Figure(figsize=(min(12.0, 1.2 + 1.05 * n), 2.9))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1.6, n - 0.2)
    ax.set_ylim(-0.3, 3.2)
    ax.axis("off")
    first_pad = n - num_pad

    def cell(x, y, text, pad=False, face="#dbe9f6"):
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.42, y - 0.3),
                0.84,
                0.6,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor="#eeeeee" if pad else face,
                edgecolor="#999999" if pad else "#555555",
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=10, color="#999999" if pad else "k")

    ax.text(-1.5, 2.5, "inputs", fontsize=10, fontweight="bold", va="center")
    ax.text(-1.5, 0.6, "targets", fontsize=10, fontweight="bold", va="center")
    for t in range(n - 1):
        cell(t, 2.5, tokens[t], pad=t >= first_pad)
        pad_target = t + 1 >= first_pad
        cell(t + 0.5, 0.6, tokens[t + 1], pad=pad_target, face="#fde3c8")
        ax.add_patch(
            FancyArrowPatch(
                (t, 2.18),
                (t + 0.5, 0.92),
                arrowstyle="-|>",
                mutation_scale=10,
                color="#bbbbbb" if pad_target else "#333333",
                lw=1,
            )
        )
        if pad_target:
            ax.plot([t + 0.12, t + 0.88], [0.35, 0.85], color="#d62728", lw=1.2)
    counted = n - 1 - num_pad
    ax.text(
        (n - 2) / 2,
        -0.1,
        f"position t predicts token t+1: {counted} targets counted"
        + (f", {num_pad} pad target{'s' * (num_pad > 1)} left out (struck)" if num_pad else ""),
        ha="center",
        va="center",
        fontsize=9.5,
        color="#333333",
    )
    return fig


def _term(f: np.ndarray, p: np.ndarray) -> float:
    return float(len(f) * (f * p).sum())


def balance_term(num_experts: int, top_k: int) -> Figure:
    """The Switch Transformer term E·Σₑ fₑ·Pₑ read off two routings of ``num_experts`` experts
    with top-``top_k``: even (every fₑ = Pₑ = 1/E, term 1) and collapsed (the router puts all
    its probability on one expert and top-k fills the other k-1 slots, term E/k). Bars: fₑ,
    the share of (token, choice) assignments; Pₑ, the mean router probability."""
    E, k = int(num_experts), int(top_k)
    if E < 2 or not 1 <= k <= E:
        raise ValueError(
            f"balance_term: need num_experts ≥ 2 and 1 ≤ top_k ≤ num_experts, got {E} and {k}"
        )
    even = (np.full(E, 1 / E), np.full(E, 1 / E))
    f_col = np.zeros(E)
    f_col[:k] = 1 / k
    p_col = np.zeros(E)
    p_col[0] = 1.0
    cases = [("even routing", *even), (f"collapsed onto experts 0…{k - 1}", f_col, p_col)]
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(E)
    for ax, (name, f, p) in zip(axes, cases, strict=True):
        ax.bar(x - 0.2, f, width=0.4, color="C1", label="fₑ: share of assignments")
        ax.bar(x + 0.2, p, width=0.4, color="C0", label="Pₑ: mean router probability")
        ax.set_title(f"{name}:  E·Σ f·P = {_term(f, p):.3g}", fontsize=11)
        ax.set_xticks(x)
        ax.set_xlabel("expert e")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.tick_params(labelsize=9)
    axes[0].set_ylabel("share")
    axes[0].legend(fontsize=9, loc="upper right")
    fig.suptitle(
        f"The load-balancing term for {E} experts, top-{k}: "
        f"from 1 (even) to {E / k:.3g} (collapse)",
        fontsize=11.5,
    )
    return fig


def load_comparison(shares: Mapping[str, np.ndarray]) -> Figure:
    """Each expert's share of the (token, choice) assignments per layer, for several runs
    side by side. ``shares``: {run name: [L, E] array, each row summing to 1}."""
    if not shares:
        raise ValueError("load_comparison: give at least one run")
    arrays = {name: np.asarray(s, np.float64) for name, s in shares.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"load_comparison: every run needs the same [layers, experts] shape, "
            f"got {[a.shape for a in arrays.values()]}"
        )
    L, E = next(iter(shapes))
    fig = Figure(figsize=(min(12.0, 2 + 4.5 * L), 3.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, L, sharey=True))
    x = np.arange(E)
    width = 0.8 / len(arrays)
    for layer, ax in enumerate(axes):
        for j, (name, a) in enumerate(arrays.items()):
            offset = (j - (len(arrays) - 1) / 2) * width
            ax.bar(x + offset, a[layer], width=width, color=f"C{(3, 0, 2, 1)[j % 4]}", label=name)
        ax.axhline(1 / E, color="k", ls="--", lw=1, label=f"even share 1/{E}")
        ax.set(xticks=x, xlabel="expert", title=f"layer {layer}")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes[0].set_ylabel("share of assignments")
    axes[0].legend(fontsize=9)
    return fig


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    return np.convolve(x, np.ones(k) / k, mode="valid")


def training_curves(logs: Mapping[str, Mapping[str, np.ndarray]], window: int = 10) -> Figure:
    """Two runs' training logs compared: cross-entropy (a ``window``-step mean), the
    difference of the second run's cross-entropy minus the first's (on its own scale, so a
    gap too small to see in the first panel is visible), and the balancing term on each
    batch. ``logs``: {run name: {"ce": [steps], "aux": [steps]}}, exactly two runs."""
    if len(logs) != 2:
        raise ValueError(f"training_curves: compare exactly two runs, got {len(logs)}")
    (n0, l0), (n1, l1) = logs.items()
    ce0, ce1 = np.asarray(l0["ce"], np.float64), np.asarray(l1["ce"], np.float64)
    if ce0.shape != ce1.shape or ce0.size <= window:
        raise ValueError(
            f"training_curves: both runs need the same number of steps "
            f"(more than window={window}); got {ce0.size} and {ce1.size}"
        )
    steps = np.arange(1, ce0.size + 1)
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    a1, a2, a3 = fig.subplots(1, 3)
    for name, log, color in [(n0, l0, "C3"), (n1, l1, "C0")]:
        a1.plot(
            steps[window - 1 :], _smooth(np.asarray(log["ce"]), window), color=color, label=name
        )
        a3.plot(steps, log["aux"], color=color, lw=1, label=name)
    diff = ce1 - ce0
    a2.plot(steps, diff, color="#999999", lw=0.8, label="each step")
    a2.plot(
        steps[window - 1 :], _smooth(diff, window), color="k", lw=1.5, label=f"{window}-step mean"
    )
    a2.axhline(0, color="k", ls=":", lw=1)
    a1.set(xlabel="step", ylabel="nats", title=f"train cross-entropy ({window}-step mean)")
    a2.set(xlabel="step", ylabel="nats", title=f"cross-entropy: {n1} − {n0}")
    a3.axhline(1.0, color="k", ls=":", lw=1, label="even routing (1)")
    a3.set(xlabel="step", ylabel="E·Σ f·P (mean of layers)", title="balancing term per batch")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=8.5)
    return fig
