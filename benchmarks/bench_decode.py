"""Decoding: one step with KV memory vs recomputing the whole prefix, at growing contexts.

Both produce the next token's logits; the KV-memory step only runs the new token through the
model (attention reads the memory), recompute runs the full context again.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import interleaved, load_line, machine, table
from grok_flax import Grok, GrokConfig, KVMemory

CFG = GrokConfig(
    vocab_size=4096,
    sequence_len=4096,
    emb_size=256,
    key_size=32,
    num_q_heads=8,
    num_kv_heads=2,
    num_layers=4,
    widening_factor=4.0,
    num_experts=8,
    num_selected_experts=2,
    embedding_multiplier_scale=16.0,
    output_multiplier_scale=0.0625,
    attn_output_multiplier=0.177,
    compute_dtype="float32",
    attention_chunk=512,
)


def main(contexts=(256, 512, 1024, 2048, 4096), repeats: int = 5) -> list[dict]:
    model = Grok(CFG, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    forward = nnx.jit(lambda m, t: m(t)[:, -1])
    prefill = nnx.jit(lambda m, t, mem: m(t, mem)[:, -1])

    @nnx.jit
    def step(m, t, mem):
        out = m(t, mem)[:, -1]
        mem.step[...] = mem.step[...] - 1  # stay at the same context for repeated timing
        return out

    rows = []
    for n in contexts:
        toks = jnp.asarray(rng.integers(3, CFG.vocab_size, (1, n)), jnp.int32)
        memory = KVMemory(CFG, 1, CFG.sequence_len)
        prefill(model, toks[:, :-1], memory)
        a, b = step(model, toks[:, -1:], memory), forward(model, toks)
        diff = float(jnp.abs(a - b).max())
        t = interleaved(
            {
                "memory": lambda: step(model, toks[:, -1:], memory),
                "recompute": lambda: forward(model, toks),
            },
            repeats if n < 4096 else 3,
        )
        rows.append(
            {
                "context": n,
                "KV step ms": t["memory"] * 1e3,
                "recompute ms": t["recompute"] * 1e3,
                "speed-up": t["recompute"] / t["memory"],
                "max abs diff": diff,
            }
        )
        assert diff < 1e-3, diff
    return rows


if __name__ == "__main__":
    print(load_line(), flush=True)
    print(table(main(), f"Decode step, 4-layer 8-expert model, KV memory of 4096 ({machine()})"))
