"""End to end: prefill and decode throughput of ``Generator`` on a small Grok (CPU)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from benchmarks.common import machine, table
from grok_flax import Grok, GrokConfig
from grok_flax.generate import Generator


def main(batch_sizes=(1, 4), prompt_len: int = 200, new_tokens: int = 64) -> list[dict]:
    cfg = GrokConfig.small(sequence_len=512, compute_dtype="float32")
    model = Grok(cfg, rngs=nnx.Rngs(0))
    gen = Generator(model)
    rng = np.random.default_rng(0)
    rows = []
    for B in batch_sizes:
        prompts = rng.integers(3, cfg.vocab_size, (B, prompt_len)).tolist()
        kw = dict(max_new_tokens=new_tokens, temperature=0.7, top_p=0.95, seed=0)
        gen.generate(prompts, **kw)  # compile
        runs = [gen.generate(prompts, **kw) for _ in range(3)]
        r = min(runs, key=lambda r: r.prefill_seconds + r.decode_seconds)
        rows.append({"batch": B, "prompt": prompt_len, "new": new_tokens,
                     "prefill tok/s": r.prefill_tokens_per_s,
                     "decode tok/s": r.decode_tokens_per_s,
                     "decode ms/step": 1e3 * r.decode_seconds / max(1, r.decode_steps)})
    return rows


if __name__ == "__main__":
    cfg = GrokConfig.small()
    print(table(main(), f"Generation, GrokConfig.small() ({cfg.num_layers} layers, "
                        f"d={cfg.emb_size}, {cfg.num_experts} experts) — {machine()}"))
