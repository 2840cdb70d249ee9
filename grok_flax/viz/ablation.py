"""Pictures for notebook 11: the ablation study — where each switch acts in the model, and
each variant's effect on held-out cross-entropy next to the noise between seeds.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` or from plain
numbers (the study's per-seed values), without pyplot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from grok_flax.config import GrokConfig

__all__ = ["ablation_effects", "ablation_switches"]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def ablation_switches(cfg: GrokConfig, aux_weight: float = 0.01, tight_cap: float = 5.0) -> Figure:
    """The model's path from tokens to loss, one box per stage, each with the detail the
    study switches there: ``cfg``'s value (the baseline) and what each variant sets instead."""
    if not isinstance(cfg, GrokConfig):
        raise ValueError(f"ablation_switches: cfg must be a GrokConfig, got {type(cfg).__name__}")
    if not aux_weight >= 0:
        raise ValueError(f"ablation_switches: aux_weight must be ≥ 0, got {aux_weight}")
    if not tight_cap > 0:
        raise ValueError(f"ablation_switches: tight_cap must be > 0, got {tight_cap}")
    E, k = cfg.num_experts, cfg.num_selected_experts
    c = cfg.attn_logit_cap
    cap = "no cap" if c is None else f"{_fmt(c)}·tanh(x/{_fmt(c)})"
    post = "post-norm" if cfg.post_norms else "(no post-norm)"
    stages = [  # (box text, [(baseline, variant), ...])
        (f"embed × {_fmt(cfg.embedding_multiplier_scale)}",
         [(f"input multiplier {_fmt(cfg.embedding_multiplier_scale)}", "1.0  (no multipliers)")]),
        (f"pre-norm → attention → {post}",
         [(f"RoPE on q, k (base {cfg.rope_base:,.0f})" if cfg.use_rope else "no RoPE",
           "no RoPE: only the causal mask"),
          (f"logits → {cap}", f"no cap;  {_fmt(tight_cap)}·tanh(x/{_fmt(tight_cap)})"),
          ("post-attention norm" if cfg.post_norms else "no post-norms", "pre-norm only")]),
        (f"pre-norm → router → experts → {post}",
         [(f"top-{k} of {E} experts", f"top-1 of {E};  top-{k} of {E // 2}"),
          ("gates: raw probabilities" if not cfg.renormalize_gates else "gates renormalised",
           "gates ÷ their sum")]),
        (f"final norm → un-embed × {_fmt(cfg.output_multiplier_scale)}",
         [(f"output multiplier {_fmt(cfg.output_multiplier_scale)}", "1.0  (no multipliers)")]),
        (f"loss = CE + {_fmt(aux_weight)} × balance",
         [(f"balancing weight {_fmt(aux_weight)}", "0  (no balancing term)")]),
    ]  # fmt: skip
    rows = sum(len(s[1]) for s in stages)
    fig = Figure(figsize=(10, 0.62 * rows + 1.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.4, rows + 1.0)
    ax.axis("off")
    ax.text(3.6, rows + 0.55, "Grok-1's choice (baseline)", fontsize=10, fontweight="bold")
    ax.text(6.85, rows + 0.55, "the variant sets instead", fontsize=10, fontweight="bold",
            color="#b2182b")  # fmt: skip
    y = rows
    prev = None
    for text, switches in stages:
        h = len(switches)
        top, mid = y - 0.1, y - h / 2
        ax.add_patch(FancyBboxPatch((0.15, top - h + 0.2), 3.1, h - 0.2,
                                    boxstyle="round,pad=0,rounding_size=0.12",
                                    facecolor="#dbe9f6", edgecolor="#4a6f8f"))  # fmt: skip
        ax.text(1.7, mid, text, ha="center", va="center", fontsize=8.8, wrap=True)
        if prev is not None:
            ax.add_patch(FancyArrowPatch((1.7, prev), (1.7, top), arrowstyle="-|>",
                                         mutation_scale=10, color="#555555"))  # fmt: skip
        for j, (base, variant) in enumerate(switches):
            yy = y - 0.5 - j
            ax.plot([3.3, 3.5], [yy, yy], color="#888888", lw=0.8)
            ax.text(3.6, yy, base, va="center", fontsize=9)
            ax.annotate("", (6.75, yy), (6.35, yy),
                        arrowprops=dict(arrowstyle="-|>", color="#b2182b", lw=1))  # fmt: skip
            ax.text(6.85, yy, variant, va="center", fontsize=9, color="#b2182b")
        prev = top - h + 0.2
        y -= h
    return fig


def ablation_effects(
    ce_by_variant: Mapping[str, Sequence[float]],
    baseline: str = "baseline",
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Each variant's held-out cross-entropy minus the baseline's, seed by seed (paired: the
    same seed means the same start and the same batches): a dot per seed, a bar from the
    smallest to the largest difference, a diamond at the mean. The grey band is the seed noise:
    ± half the range of the baseline's own values over the seeds."""
    if baseline not in ce_by_variant:
        raise ValueError(f"ablation_effects: no {baseline!r} among {sorted(ce_by_variant)}")
    base = np.asarray(ce_by_variant[baseline], np.float64)
    if base.ndim != 1 or len(base) < 2:
        raise ValueError(f"ablation_effects: need ≥ 2 seeds of {baseline!r}, got {base.shape}")
    others = [n for n in ce_by_variant if n != baseline]
    if not others:
        raise ValueError("ablation_effects: nothing to compare with the baseline")
    for n in others:
        if np.shape(ce_by_variant[n]) != base.shape:
            raise ValueError(
                f"ablation_effects: {n!r} has {np.shape(ce_by_variant[n])} values, the baseline "
                f"{base.shape}: every variant needs the same seeds"
            )
    labels = dict(labels or {})
    noise = (base.max() - base.min()) / 2
    fig = Figure(figsize=(9.5, 0.5 * len(others) + 1.6))
    ax = fig.add_subplot()
    ax.axvspan(-noise, noise, color="#dddddd", zorder=0,
               label=f"seed noise: baseline ± {noise:.3f} nats")  # fmt: skip
    ax.axvline(0, color="k", lw=0.8)
    for i, n in enumerate(others):
        d = np.asarray(ce_by_variant[n], np.float64) - base
        y = len(others) - 1 - i
        finite = d[np.isfinite(d)]
        if len(finite) == 0:
            ax.text(0, y, "diverged (NaN) on every seed", va="center", fontsize=9, color="#b2182b")
            continue
        m = finite.mean()
        color = "#b2182b" if m > noise else "#2166ac" if m < -noise else "#555555"
        ax.plot([finite.min(), finite.max()], [y, y], color=color, lw=2, alpha=0.6)
        ax.plot(finite, np.full(len(finite), y), "o", color=color, ms=4)
        ax.plot([finite.mean()], [y], "D", color=color, ms=7, mec="k", mew=0.6)
        ax.text(finite.mean(), y + 0.22, f"{finite.mean():+.3f}", fontsize=8.5, ha="center",
                color=color)  # fmt: skip
    ax.set_yticks(range(len(others)), [labels.get(n, n) for n in reversed(others)], fontsize=9)
    ax.set_ylim(-0.7, len(others) - 0.3)
    ax.set_xlabel("held-out cross-entropy − baseline's, same seed (nats; > 0: worse)", fontsize=9)
    ax.set_title(f"effect of each detail on held-out CE ({len(base)} seeds each)", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    ax.legend(loc="lower right", fontsize=8.5)
    ax.grid(axis="x", color="#eeeeee")
    fig.tight_layout()
    return fig
