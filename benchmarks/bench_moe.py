"""MoE: sparse dispatch vs the reference's all-experts algorithm (same int8 weights).

Prefill: T=2048 tokens, d=512, ffn=1376, 8 experts, top-2 — grok_flax's tiled sort-by-expert
dispatch (the tile ``moe_tile="auto"`` picks, then a sweep of fixed tiles) vs the reference's
"every expert on every routed copy". Decode (1 token): gathering only the 2 chosen experts'
weights vs reading all 8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import interleaved, load_line, machine, table
from grok_flax import GrokConfig
from grok_flax.moe import MoE, auto_tile
from grok_flax.router import Router

TILES = (64, 128, 256, 512)  # rows per tile of the prefill sweep


def main(repeats: int = 5) -> list[dict]:
    # moe_tile="auto" as in Grok-1's config (tiny()'s 8-row tiles are for unit tests only)
    cfg = GrokConfig.tiny(
        emb_size=512,
        widening_factor=4.03,
        num_experts=8,
        num_selected_experts=2,
        compute_dtype="float32",
        moe_out_scale_blocks=8,
        moe_tile="auto",
    )
    rngs = nnx.Rngs(0)
    moe, router = MoE(cfg, rngs=rngs), Router(cfg.emb_size, 8, 2, rngs=rngs)
    run = nnx.jit(
        lambda m, x, g, e, impl, tile: m(x, g, e, impl=impl, tile=tile), static_argnums=(4, 5)
    )
    rows = []
    for name, T, contenders in (
        (
            "prefill T=2048",
            2048,
            {
                f"tiled, {t} rows" + (" (auto)" if t == auto_tile(2048 * 2, 8) else ""): (
                    "tiled",
                    t,
                )
                for t in TILES
            },
        ),
        ("decode B=1", 1, {"gather": ("gather", None)}),
    ):
        x = jax.random.normal(jax.random.key(1), (1, T, cfg.emb_size))
        gates, experts, _ = router(x)
        calls = {
            label: (lambda impl=impl, tile=tile: run(moe, x, gates, experts, impl, tile))
            for label, (impl, tile) in contenders.items()
        }
        calls["reference"] = lambda: run(moe, x, gates, experts, "dense", None)
        want = calls["reference"]()
        errs = {k: float(jnp.abs(f() - want).max() / jnp.abs(want).max()) for k, f in calls.items()}
        t = interleaved(calls, repeats)
        for label in contenders:
            rows.append(
                {
                    "case": name,
                    "ffn": cfg.ffn_size,
                    "dispatch": label,
                    "sparse ms": t[label] * 1e3,
                    "reference ms": t["reference"] * 1e3,
                    "speed-up": t["reference"] / t[label],
                    "max rel diff": errs[label],
                }
            )
            assert errs[label] < 1e-4, (label, errs[label])
    return rows


if __name__ == "__main__":
    print(load_line(), flush=True)
    rows = main()
    print(table(rows, f"MoE, int8 experts ({machine()})"))
    np.testing.assert_array_less(0, [r["speed-up"] for r in rows])
