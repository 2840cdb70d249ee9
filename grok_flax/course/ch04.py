"""Checkers for the "Try this" exercises of notebook 04:
`notebooks/04_router_and_experts.ipynb`."""

from __future__ import annotations

import functools
import math

import numpy as np

from grok_flax.course import exercise


# --------------------------------------------------------------------- 1. top-1's active share
@functools.cache
def _grok1_counts() -> tuple[int, int, int]:
    """(all parameters, parameters of one expert, layers) of Grok-1, from the library."""
    from grok_flax.config import GrokConfig
    from grok_flax.model import abstract_model, param_count

    g1 = GrokConfig.grok_1()
    total = param_count(abstract_model(g1))
    return total, 3 * g1.emb_size * g1.ffn_size, g1.num_layers


def _active_fraction(k: int) -> float:
    """The share of Grok-1's parameters one token uses with top-k of its 8 experts."""
    total, per_expert, layers = _grok1_counts()
    experts_all = layers * 8 * per_expert
    return (total - experts_all + layers * k * per_expert) / total


@exercise(
    "04",
    task="The fraction of Grok-1's parameters a token uses with top-1 routing (Switch-style) "
    "instead of top-2: a number between 0 and 1.",
    wrong=[
        lambda: _active_fraction(2),
        lambda: 1 / 8,
        lambda: _active_fraction(2) / 2,
        lambda: 100 * _active_fraction(1),
    ],
    praise="One expert per layer instead of two: 84 B → 45 B active parameters of 316 B, "
    "while the stored model is the same size.",
)
def top1_active_fraction(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    a = float(answer)
    right = _active_fraction(1)
    if math.isclose(a, right, rel_tol=2e-3):
        return None
    if 1 < a <= 100 and math.isclose(a / 100, right, rel_tol=2e-3):
        return "that looks like a percent: give the fraction (between 0 and 1)."
    if math.isclose(a, _active_fraction(2), rel_tol=2e-3):
        return "that is the top-2 fraction: use num_selected_experts=1 (one expert per layer)."
    if math.isclose(a, 1 / 8, rel_tol=2e-3):
        return (
            "1/8 counts only the experts: attention, the embedding, routers and norms are "
            "used by every token too."
        )
    if math.isclose(a, _active_fraction(2) / 2, rel_tol=2e-3):
        return (
            "halving the top-2 fraction also halves the shared part (attention, embedding), "
            "which every token still uses in full: only the expert part halves."
        )
    if not 0 < a < 1:
        return "a fraction of the parameters lies between 0 and 1."
    return (
        f"{a:.4f} is off: count every non-expert parameter plus 1 expert in each of the 64 "
        "layers, over all parameters."
    )


# ------------------------------------------------------------------ 2. the rows tiles occupy
def _rows(experts, num_experts: int, tile: int) -> int:
    """Rows of the tiled buffer in use: every expert's group padded up to whole tiles."""
    from grok_flax.moe import sort_pairs

    counts = np.asarray(sort_pairs(np.asarray(experts), num_experts)[2])
    return int(sum(-(-int(c) // tile) * tile for c in counts))


def _cases():
    rng = np.random.default_rng(4)
    skewed = np.where(rng.random((40, 2)) < 0.7, 3, rng.integers(0, 8, (40, 2)))
    return [
        (np.array([[2, 0], [5, 2], [2, 7], [0, 3], [2, 5], [7, 2]]), 8, 2),
        (rng.integers(0, 8, (96, 2)), 8, 16),
        (skewed, 8, 8),
        (np.array([[0, 1], [2, 3]]), 4, 2),  # every group exactly one tile
        (rng.integers(0, 4, (10, 1)), 8, 4),  # half the experts get nothing
    ]


@exercise(
    "04",
    task="Write f(experts, num_experts, tile) -> the number of rows the tiled dispatch "
    "computes: each expert's (token, expert) pairs padded up to whole tiles.",
    wrong=[
        lambda: lambda e, E, t: int(np.size(e)),
        lambda: lambda e, E, t: -(-int(np.size(e)) // t) * t,
        lambda: lambda e, E, t: (-(-int(np.size(e)) // t) + E) * t,
        lambda: lambda e, E, t: E * t * max(1, -(-int(np.bincount(np.ravel(e)).max()) // t)),
        lambda: (
            lambda e, E, t: sum(
                max(1, -(-int(c) // t)) * t for c in np.bincount(np.ravel(e), minlength=E)
            )
        ),
    ],
    praise="Each expert wastes less than one tile, so padding is at most E·(tile − 1) rows "
    "— small for a long prompt, most of the work for a short one.",
)
def padded_rows(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    if not callable(answer):
        return "pass a function f(experts, num_experts, tile) that returns a number of rows."
    for e, E, t in _cases():
        got, want = answer(e.copy(), E, t), _rows(e, E, t)
        if int(got) == want:
            continue
        A = e.size
        where = f"for {e.shape[0]} tokens × top-{e.shape[1]}, {E} experts, tiles of {t}"
        if got == A:
            return (
                f"{where}: {got} is the pairs without any padding; each expert's last tile "
                "is padded to full."
            )
        if got == -(-A // t) * t:
            return f"{where}: {got} pads the batch as a whole; every expert's group is padded."
        if got == (-(-A // t) + E) * t:
            return (
                f"{where}: {got} is the static bound the library allocates (ceil(A/tile) + E "
                "tiles), not the rows in use."
            )
        counts = np.bincount(e.ravel(), minlength=E)
        if got == sum(max(1, -(-int(c) // t)) * t for c in counts):
            return f"{where}: {got} gives an expert with no pairs a tile; it gets none."
        return f"{where}: you said {got}; the tiles hold {want} rows (Σ_e ceil(count_e/tile)·tile)."
    return None


# ---------------------------------------------------------------- 3. where gather stops paying
def _first_losing(E: int, k: int) -> int:
    return E // k + 1


@exercise(
    "04",
    task="Write f(num_experts, k) -> the smallest decode batch B at which gather reads MORE "
    "expert weight bytes than the dense reference (gather: k experts per token; dense: "
    "all experts once).",
    wrong=[
        lambda: lambda E, k: E // k,
        lambda: lambda E, k: E + 1,
        lambda: lambda E, k: math.ceil(E / k),
        lambda: lambda E, k: E / k,
    ],
    praise="Grok-1 (8 experts, top-2): B = 5. The library's moe_impl='sparse' picks gather only "
    "while B·k ≤ E, the same boundary; docs/benchmarks_gpu.md's B = 8 row (0.88×) lies past it.",
)
def first_losing_batch(answer) -> str | None:
    """None when right; otherwise one sentence saying what is wrong and why."""
    if not callable(answer):
        return "pass a function f(num_experts, k) that returns a batch size."
    for E, k in ((8, 2), (8, 1), (64, 6), (16, 4), (128, 8)):
        got, want = answer(E, k), _first_losing(E, k)
        if isinstance(got, float) and not got.is_integer():
            return f"for {E} experts, top-{k} you returned {got}: a batch is a whole number."
        if int(got) == want:
            continue
        if k * int(got) == E:
            return (
                f"for {E} experts, top-{k}: at B = {got} gather reads {k}·{got} = {E} experts, "
                "exactly what dense reads — a tie, not a loss."
            )
        if int(got) == E + 1:
            return (
                f"for {E} experts, top-{k}: gather reads k = {k} experts per token, not one, "
                f"so it passes {E} already at B = {want}."
            )
        return f"for {E} experts, top-{k}: you said {got}; gather reads {k}·B experts, dense {E}."
    return None
