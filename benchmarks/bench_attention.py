"""Attention: chunked online-softmax vs the reference's naive T×T path (GQA, soft-cap).

For each length T: XLA's temporary-memory estimate of one prefill attention call, the time
per call (medians of interleaved repeats), and the largest difference in fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.common import interleaved, load_line, machine, table, temp_bytes
from grok_flax.attention import attend_chunked, attend_naive

B, K, R, H = 1, 2, 2, 64  # 4 query heads sharing 2 kv heads


def main(lengths=(2048, 4096, 8192), repeats: int = 5, chunk: int = 512) -> list[dict]:
    rows = []
    for T in lengths:
        ks = jax.random.split(jax.random.key(T), 3)
        q = jax.random.normal(ks[0], (B, T, K, R, H)) * 2
        k = jax.random.normal(ks[1], (B, T, K, H)) * 2
        v = jax.random.normal(ks[2], (B, T, K, H))
        pos = jnp.broadcast_to(jnp.arange(T), (B, T))
        valid = jnp.ones((B, T), bool)
        args = (q, k, v, pos, pos, valid)

        def naive(*a):
            return attend_naive(*a, multiplier=0.125)

        def chunked(*a):
            return attend_chunked(*a, multiplier=0.125, chunk=chunk)

        mem_naive, mem_chunked = temp_bytes(naive, *args), temp_bytes(chunked, *args)
        fn, fc = jax.jit(naive), jax.jit(chunked)
        diff = float(jnp.abs(fn(*args) - fc(*args)).max())
        t = interleaved(
            {"naive": lambda: fn(*args), "chunked": lambda: fc(*args)},
            repeats if T < 8192 else max(3, repeats - 2),
        )
        rows.append(
            {
                "T": T,
                "naive temp MiB": mem_naive / 2**20,
                "chunked temp MiB": mem_chunked / 2**20,
                "memory ratio": mem_naive / mem_chunked,
                "naive s": t["naive"],
                "chunked s": t["chunked"],
                "speed-up": t["naive"] / t["chunked"],
                "max abs diff": diff,
            }
        )
        assert diff <= 1e-5, diff
    return rows


if __name__ == "__main__":
    print(load_line(), flush=True)
    print(table(main(), f"Attention, GQA {K}×{R} heads of {H}, chunk 512 ({machine()})"))
