"""MoE: sparse dispatch vs the reference's all-experts algorithm (same int8 weights).

Prefill: T=2048 tokens, d=512, ffn=1376, 8 experts, top-2 — grok_flax's tiled sort-by-expert
dispatch vs the reference's "every expert on every routed copy". Decode (1 token): gathering
only the 2 chosen experts' weights vs reading all 8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import interleaved, machine, table
from grok_flax import GrokConfig
from grok_flax.moe import MoE
from grok_flax.router import Router


def main(repeats: int = 5) -> list[dict]:
    cfg = GrokConfig.tiny(emb_size=512, widening_factor=4.03, num_experts=8,
                          num_selected_experts=2, compute_dtype="float32",
                          moe_out_scale_blocks=8)
    rngs = nnx.Rngs(0)
    moe, router = MoE(cfg, rngs=rngs), Router(cfg.emb_size, 8, 2, rngs=rngs)
    rows = []
    for name, T, impl in (("prefill T=2048", 2048, "tiled"), ("decode B=1", 1, "gather")):
        x = jax.random.normal(jax.random.key(1), (1, T, cfg.emb_size))
        gates, experts, _ = router(x)
        fast = nnx.jit(lambda m, x, g, e, impl=impl: m(x, g, e, impl=impl))
        dense = nnx.jit(lambda m, x, g, e: m(x, g, e, impl="dense"))
        a, b = fast(moe, x, gates, experts), dense(moe, x, gates, experts)
        err = float(jnp.abs(a - b).max() / jnp.abs(b).max())
        t = interleaved({"sparse": lambda: fast(moe, x, gates, experts),
                         "dense": lambda: dense(moe, x, gates, experts)}, repeats)
        rows.append({"case": name, "ffn": cfg.ffn_size, "dispatch": impl,
                     "sparse ms": t["sparse"] * 1e3, "reference ms": t["dense"] * 1e3,
                     "speed-up": t["dense"] / t["sparse"], "max rel diff": err})
        assert err < 1e-4, err
    return rows


if __name__ == "__main__":
    rows = main()
    print(table(rows, f"MoE, int8 experts ({machine()})"))
    np.testing.assert_array_less(0, [r["speed-up"] for r in rows])
