"""Checkers for the "Try this" exercises of notebook 01:
`notebooks/01_tour.ipynb`."""

from __future__ import annotations

import functools

import numpy as np

from grok_flax.course import exercise

# the prompt notebook 01 feeds the demo model (its exercise reads the routing of this prompt)
PROMPT = 'class Stack:\n    """A last-in, first-out stack."""\n\n    def __init__(self):\n'
TOKEN = 9  # the prompt's token '·last' ([BOS] is position 0)


def _layer_parts() -> dict[str, int]:
    """One Grok-1 decoder layer's parameters, by part, from the config's numbers."""
    from grok_flax.config import GrokConfig

    c = GrokConfig.grok_1()
    D, H, Nq, Nk = c.emb_size, c.key_size, c.num_q_heads, c.num_kv_heads
    return {
        "attention": D * Nq * H + 2 * D * Nk * H + Nq * H * D,
        "router": D * c.num_experts,
        "experts": c.num_experts * 3 * D * c.ffn_size,
        "norms": 4 * D,
    }


def _as_int(answer) -> int | None:
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return None
    return int(value) if value == int(value) else None


@exercise(
    "01",
    task="Count the parameters of one Grok-1 decoder layer from the config: attention's four "
    "projections, the router, 8 experts × 3 matrices, 4 RMSNorm scales.",
    wrong=[
        lambda: sum(_layer_parts().values()) - _layer_parts()["router"],
        lambda: sum(_layer_parts().values()) - _layer_parts()["norms"],
        lambda: sum(_layer_parts().values()) - _layer_parts()["experts"] // 3,
        lambda: sum(_layer_parts().values()) - _layer_parts()["experts"] * 3 // 4,
        lambda: 6144 * 48 * 128 * 4 + 6144 * 8 + 8 * 3 * 6144 * 32768 + 4 * 6144,
    ],
    praise="4,919,992,320: the experts are 98% of it, and 64 such layers + the embedding "
    "table + the final norm make Grok-1's 315,684,820,992.",
)
def layer_params(answer) -> str | None:
    parts = _layer_parts()
    right = sum(parts.values())
    n = _as_int(answer)
    if n is None:
        return f"give a whole number of parameters, not {answer!r}."
    if n == right:
        return None
    if n == right - parts["router"]:
        return "the router is missing: one 6,144 × 8 matrix scoring the experts."
    if n == right - parts["norms"]:
        return "the four RMSNorm scales are missing (6,144 each: two around each block)."
    if n == right - parts["experts"] // 3:
        return "each expert has 3 matrices (GeGLU: W and V in, W1 out), not 2."
    if n == right - parts["experts"] * 3 // 4:
        return (
            "that counts only the 2 experts a token uses: the layer stores all 8 (the question "
            "is what the layer holds, not what one token touches)."
        )
    if n == 6144 * 48 * 128 * 4 + 6144 * 8 + 8 * 3 * 6144 * 32768 + 4 * 6144:
        return (
            "keys and values have 8 heads, not 48: grouped-query attention shares each of the "
            "8 KV heads among 6 query heads, so k and v are 6,144 × 1,024 each."
        )
    return (
        f"{n:,} is {'more' if n > right else 'less'} than the layer holds; add up "
        "q (6,144 × 48·128), k and v (6,144 × 8·128 each), the output (48·128 × 6,144), the "
        "router (6,144 × 8), 8 × 3 expert matrices (6,144 × 32,768) and 4 norms of 6,144."
    )


@exercise(
    "01",
    task="How many GiB of KV memory does one 8,192-token row of Grok-1 take in bfloat16 "
    "(k and v, each [64 layers, 8,192 tokens, 8 KV heads, 128])?",
    wrong=[lambda: 4.0, lambda: 1.0, lambda: 12.0, lambda: 2.147483648],
    praise="2 GiB = 256 KiB per token: gf.kv_bytes_per_token(cfg1) × 8,192.",
)
def kv_row_gib(answer) -> str | None:
    try:
        x = float(answer)
    except (TypeError, ValueError):
        return f"give a number of GiB, not {answer!r}."
    if np.isclose(x, 2.0, rtol=1e-3):
        return None
    if np.isclose(x, 2**31 / 1e9, rtol=1e-3):
        return "that is the size in GB (10⁹ bytes); in GiB (2³⁰ bytes) it is a round number."
    if np.isclose(x, 4.0, rtol=1e-3):
        return "that is float32 (4 bytes a value); bfloat16 takes 2."
    if np.isclose(x, 1.0, rtol=1e-3):
        return "that counts the keys only: the memory holds k and v, two arrays."
    if np.isclose(x, 12.0, rtol=1e-3):
        return "that uses 48 heads: keys and values have the 8 KV heads (grouped-query)."
    return f"{x:g} GiB is off: multiply 2 (k, v) × 64 × 8,192 × 8 × 128 × 2 bytes, ÷ 2³⁰."


@functools.cache
def _demo_routing() -> np.ndarray:
    """The demo model's experts [L, T, k] for PROMPT (with BOS), as notebook 01 captures them."""
    import jax.numpy as jnp

    from grok_flax import demo

    model, tokenizer, _ = demo.load()
    ids = tokenizer.encode(PROMPT, bos=True)
    _, cap = model(jnp.asarray([ids]), capture=("routing",))
    return np.asarray(cap["experts"])[:, 0]


def _chosen(layer: int, token: int) -> list[int]:
    return [int(x) for x in _demo_routing()[layer, token]]


@exercise(
    "01",
    task="In the demo model, which experts does the prompt's token '·last' (position 9, "
    "counting [BOS] as 0) go to in the last layer? Answer with the expert ids, e.g. [3, 5].",
    wrong=[
        lambda: _chosen(-1, TOKEN)[:1],
        lambda: _chosen(0, TOKEN),
        lambda: _chosen(-1, TOKEN - 1),
        lambda: _chosen(-1, TOKEN + 1),
    ],
    praise="read from cap['experts'][layer, row, token]: [L, B, T, k], "
    "1st choice first (any order counts here).",
)
def token_experts(answer) -> str | None:
    try:
        got = sorted(int(x) for x in np.asarray(answer).reshape(-1))
    except (TypeError, ValueError):
        return f"give the expert ids as a list of integers, not {answer!r}."
    routing = _demo_routing()
    L, T, k = routing.shape
    right = sorted(_chosen(L - 1, TOKEN))
    if got == right:
        return None
    if len(got) != k:
        return (
            f"{len(got)} expert(s): every token goes to exactly {k} (top-{k}); read all "
            f"{k} entries of the last axis of cap['experts']."
        )
    for layer in range(L - 1):
        if got == sorted(_chosen(layer, TOKEN)):
            return (
                f"those are layer {layer}'s experts: the layer is the FIRST axis of "
                "cap['experts'] ([L, B, T, k]); the last layer is index -1."
            )
    for t in range(T):
        if got == sorted(_chosen(L - 1, t)):
            return (
                f"those belong to the token at position {t}: '·last' is position {TOKEN}, "
                "counting [BOS] as position 0."
            )
    return f"not these: index cap['experts'][-1, 0, {TOKEN}] (last layer, row 0, position {TOKEN})."
