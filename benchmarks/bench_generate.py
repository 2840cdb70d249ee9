"""Decode throughput of ``Generator`` on one device and on a simulated 1×8 mesh, greedy and
sampled, for a 2-layer model with Grok-1's 131072-token vocabulary (CPU); and the bytes one
decode step writes into the KV memory at Grok-1's shape, read from the compiled program.

    python -m benchmarks.bench_generate            # needs 8 simulated devices (set below)

The four contenders (1 device / 1×8 × greedy / sampled) run interleaved, a generation each in
turn, after one warm-up generation each; the table gives medians. Only the public API is used
(``Generator``, ``shard_module``), so the same file measures an older checkout too.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import statistics  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import load_line, machine, table  # noqa: E402
from grok_flax import Grok, GrokConfig  # noqa: E402
from grok_flax.running.generate import Generator  # noqa: E402
from grok_flax.scale.mesh import make_mesh  # noqa: E402
from grok_flax.scale.sharding import shard_module  # noqa: E402

# 2 layers, Grok-1's vocabulary, everything else tiny: the per-token work is dominated by
# what surrounds the layers (un-embedding 131072 logits, sampling, the step's dispatch)
CONFIG = dict(
    vocab_size=131072,
    emb_size=32,
    num_layers=2,
    key_size=8,
    num_q_heads=8,
    num_kv_heads=8,
    widening_factor=2.0,
    num_experts=8,
    num_selected_experts=2,
    sequence_len=256,
    attention_chunk=64,
    attn_out_scale_blocks=8,
    moe_out_scale_blocks=8,
    compute_dtype="float32",
)
MODES = {
    "greedy": dict(temperature=0.0),
    "sampled, top-k 50": dict(temperature=0.7, top_p=0.95, top_k=50),
    "sampled, top-p only": dict(temperature=0.7, top_p=0.95),
}


def contenders(prompt_len: int = 32, new_tokens: int = 32):
    cfg = GrokConfig(**CONFIG)
    single = Grok(cfg, rngs=nnx.Rngs(0))
    sharded = Grok(cfg, rngs=nnx.Rngs(0))
    mesh = make_mesh(1, 8)
    shard_module(sharded, mesh)
    prompt = np.random.default_rng(0).integers(3, cfg.vocab_size, prompt_len).tolist()
    gens = {
        "1 device": Generator(single, max_len=128),
        "1×8 mesh": Generator(sharded, max_len=128, mesh=mesh),
    }
    out = {}
    for where, gen in gens.items():
        for mode, kw in MODES.items():
            out[(where, mode)] = lambda gen=gen, kw=kw: gen.generate(
                [prompt], max_new_tokens=new_tokens, **kw
            )
    return out


def decode_rates(rounds: int = 5) -> list[dict]:
    runs = contenders()
    for run in runs.values():  # compile
        run()
    rates: dict = {k: [] for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            r = run()
            rates[key].append(r.decode_tokens_per_s)
    rows = []
    for (where, mode), v in rates.items():
        rows.append(
            {
                "where": where,
                "sampling": mode,
                "decode tok/s": statistics.median(v),
                "ms/token": 1e3 / statistics.median(v),
                "runs": len(v),
            }
        )
    return rows


def grok1_decode_writes(context: int = 8192, batch: int = 1) -> list[dict]:
    """Bytes the compiled Grok-1 decode step (1×8 mesh) writes into the KV memory, per device
    and over the mesh, next to what rewriting each layer's whole K/V slice would cost."""
    import jax

    from benchmarks.hlo import hlo_writes_into
    from grok_flax.kv_memory import KVMemory
    from grok_flax.running.steps import decode_step
    from grok_flax.scale.sharding import abstract_state, batch_sharding

    cfg = GrokConfig.grok_1(compute_dtype="bfloat16", sequence_len=context)
    mesh = make_mesh(1, 8)
    model = nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0)))
    memory = nnx.eval_shape(lambda: KVMemory(cfg, batch, context))
    (g, p), (mg, ms) = nnx.split(model), nnx.split(memory)
    p, ms = abstract_state(p, mesh), abstract_state(ms, mesh)
    vec = batch_sharding(mesh, 1, batch=batch)
    keys = jax.eval_shape(lambda: jax.vmap(jax.random.key)(np.zeros(batch, np.uint32)))
    args = (
        g,
        p,
        mg,
        ms,
        jax.ShapeDtypeStruct((batch,), np.int32, sharding=vec),
        jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=vec),
        1,
        jax.ShapeDtypeStruct((batch,), np.float32, sharding=vec),
        jax.ShapeDtypeStruct((batch,), np.float32, sharding=vec),
        jax.ShapeDtypeStruct((batch,), np.int32, sharding=vec),
    )
    text = decode_step.lower(*args).compile().as_text()
    k = ms["k"].get_value()
    local = k.sharding.shard_shape(k.shape)  # [L, B, S, K/8, H]
    writes, others = hlo_writes_into(text, local)
    item = np.dtype(k.dtype).itemsize
    # the writes sit in the scanned layer: each runs once per layer
    per_device = sum(int(np.prod(u)) for _, u in writes) * item * cfg.num_layers
    whole_layer = 2 * cfg.num_layers * int(np.prod(local[1:])) * item
    return [
        {
            "Grok-1 decode step, 1×8, context": context,
            "KV writes per device": f"{per_device / 2**10:,.0f} KiB",
            "over the mesh": f"{8 * per_device / 2**10:,.0f} KiB",
            "rewriting whole layer slices (before)": f"{8 * whole_layer / 2**30:.2f} GiB",
            "other ops producing the memory": len(others),
        }
    ]


def main() -> list[dict]:
    return decode_rates()


if __name__ == "__main__":
    print(load_line())
    cfg = GrokConfig(**CONFIG)
    print(
        table(
            decode_rates(),
            f"Decode, {cfg.num_layers} layers, vocab {cfg.vocab_size}, "
            f"d={cfg.emb_size}, batch 1 — {machine()}",
        )
    )
    if "--no-grok1" not in sys.argv:
        print()
        print(table(grok1_decode_writes(), "KV memory written by one decode step"))
