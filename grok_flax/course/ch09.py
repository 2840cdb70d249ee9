"""Checkers for the "Try this" exercises of notebook 09:
`notebooks/09_long_context.ipynb`."""

from __future__ import annotations

import math

from grok_flax.course import exercise


def _number(answer) -> float | None:
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


@exercise(
    "09",
    task="How many [512 × 512] tiles does attend_chunked compute for one head at Grok-1's "
    "8,192 tokens (the rest are skipped)?",
    wrong=[lambda: 128, lambda: 256, lambda: 120, lambda: 16],
    praise="16 × 17 / 2 = 136 of 256: the tiles under the diagonal and the 16 on it.",
)
def tiles_computed(answer) -> str | None:
    x = _number(answer)
    if x is None:
        return f"give a number of tiles, not {answer!r}."
    n = 8192 // 512
    if x == n * (n + 1) // 2:
        return None
    if x == n * n:
        return "that is every tile: the ones above the causal diagonal see no key and are skipped."
    if x == n * n // 2:
        return (
            "exactly half misses the diagonal: its 16 tiles are computed too (half masked "
            "inside), so it is n(n + 1)/2."
        )
    if x == n * (n - 1) // 2:
        return "that leaves out the 16 diagonal tiles: each holds a query's own key, so it runs."
    if x == n:
        return f"{n} is the number of chunks per side; the tiles are pairs (query, key chunk)."
    return f"{x:g} is off: 8,192 / 512 = {n} chunks a side; count the lower triangle with diagonal."


def _h200() -> int:
    from grok_flax.running.plan import DEVICES

    return DEVICES["h200"][1]


def _fit(factor: float, heads: int, nbytes: int) -> float:
    """The context at which factor × heads × T² × nbytes fills an H200."""
    return math.sqrt(_h200() / (factor * heads * nbytes))


@exercise(
    "09",
    task="The longest context T (a multiple of 512) at which one layer's naive attention "
    "program, 3 × 48 heads × T² × 4 bytes of temporaries, fits in one H200 "
    "(DEVICES['h200']).",
    wrong=[
        lambda: 512 * int(_fit(1, 48, 4) // 512),
        lambda: 512 * int(_fit(3, 8, 4) // 512),
        lambda: 512 * int(_fit(3, 48, 2) // 512),
        lambda: 16384,
    ],
    praise="15,872 tokens (T* ≈ 16,178): under twice Grok-1's context, for ONE layer's scores.",
)
def naive_fits_h200(answer) -> str | None:
    x = _number(answer)
    if x is None:
        return f"give a context in tokens, not {answer!r}."
    t_star = _fit(3, 48, 4)
    right = 512 * int(t_star // 512)
    if x == right:
        return None
    if right < x <= t_star + 1:
        return f"{x:,.0f} is the exact limit; the question asks for a multiple of 512 below it."
    for factor, heads, nbytes, why in (
        (1, 48, 4, "that fits ONE T × T matrix; the program holds 3 (logits, masked, weights)."),
        (3, 8, 4, "that uses the 8 KV heads: the scores are per QUERY head, 48 of them."),
        (3, 48, 2, "that is bfloat16; the program compiled in this notebook is float32 (4 B)."),
    ):
        if abs(x - 512 * int(_fit(factor, heads, nbytes) // 512)) < 512:
            return why
    if x == right + 512:
        return f"{x:,.0f} needs {3 * 48 * 4 * x * x / 2**30:.0f} GiB: just over the card's 140 GiB."
    return f"{x:,.0f} is off: solve 3 × 48 × T² × 4 = DEVICES['h200'][1] for T, round down to 512."


def _left_on_8_h100() -> int:
    """Bytes of 8 H100s left after the weights as released (int8), from the plan."""
    from grok_flax.config import GrokConfig
    from grok_flax.running.plan import DEVICES, plan

    p = plan(GrokConfig.grok_1(), {"data": 1, "model": 8}, context=8192, batch=1, compile=False)
    return 8 * DEVICES["h100"][1] - sum(p.weights_whole.values())


@exercise(
    "09",
    task="The largest batch of 8,192-token rows whose bfloat16 KV memory fits in what 8 H100s "
    "have left after Grok-1's weights as released.",
    wrong=[lambda: 318, lambda: 85, lambda: 171, lambda: 5453],
    praise="170 rows × 2 GiB = 340 GiB of the 341 GiB left: the KV memory, not the weights, "
    "sets the batch.",
)
def max_batch_8xh100(answer) -> str | None:
    x = _number(answer)
    if x is None:
        return f"give a batch size, not {answer!r}."
    row = 256 * 1024 * 8192  # bytes of one row: 256 KiB per token
    from grok_flax.running.plan import DEVICES

    left = _left_on_8_h100()
    right = left // row
    if x == right:
        return None
    if x == 8 * DEVICES["h100"][1] // row:
        return "that forgets the weights: 318 GB of the 8 cards are taken before any KV memory."
    if x == left // (2 * row):
        return "that is float32 KV memory (4 bytes); the question asks for bfloat16 (2)."
    if x == right + 1:
        return f"{x:.0f} rows need {x * 2:.0f} GiB, more than the {left / 2**30:.0f} GiB left."
    if x > 1000:
        return "that looks like a number of tokens; the question asks for rows of 8,192 tokens."
    return f"{x:g} is off: (8 × H100 − weights) ÷ (256 KiB × 8,192), rounded down."
