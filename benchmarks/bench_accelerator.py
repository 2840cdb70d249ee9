"""Grok-1-sized pieces on an accelerator (GPU/TPU): MoE dispatch, attention, a few full-width
layers end to end. Too big for the 2-core CPU box; run it where a GPU is lent:

    python -m benchmarks.bench_accelerator [moe] [tiles] [attention] [chunks] [layers]
    python -m benchmarks.bench_accelerator --dry-run     # every section at toy sizes (CPU)

- MoE at Grok-1's expert shape (d 6144, ffn 32768, 8 experts, top-2, int8, bf16 activations):
  the reference's all-experts algorithm vs tiled, ragged (``lax.ragged_dot``), tokamax
  (``tokamax.ragged_dot`` reading int8, when installed) and, for one token, gather. Prints
  which grouped-matmul kernels the compiled program really calls.
- Attention with Grok-1's heads (48 query / 8 kv heads of 128): naive T×T vs chunked online
  softmax vs tokamax's fused attention (when installed), temporary memory from XLA, time in
  bf16, and the fp32 difference at full matmul precision.
- Layers: ``GrokConfig.grok_1`` at full width with a few layers and random int8 weights,
  prefill and decode through ``Generator`` (default paths, then the tokamax ones);
  per-layer times scale to 64 layers.
"""

from __future__ import annotations

import re
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import interleaved, load_line, machine, table, temp_bytes
from grok_flax import Grok, GrokConfig
from grok_flax.attention import attend_chunked, attend_naive, attend_tokamax
from grok_flax.moe import MoE, dense_dispatch, tiled_dispatch
from grok_flax.quant import QArray
from grok_flax.router import Router


def random_module(make, seed: int = 0):
    """Build ``make()`` abstractly and fill every parameter with random values of its own
    shape and dtype (int8 weights directly: no float copy of a 4.8 GB expert stack)."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    leaves, treedef = jax.tree_util.tree_flatten(state, is_leaf=lambda x: isinstance(x, QArray))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    filled = []
    for key, value in zip(keys, leaves, strict=True):
        k1, k2 = jax.random.split(key)
        if isinstance(value, QArray):
            fan_in = value.weight.shape[-2]
            filled.append(
                QArray(
                    weight=jax.random.randint(k1, value.weight.shape, -127, 128, jnp.int8),
                    scales=(
                        jax.random.uniform(k2, value.scales.shape, jnp.float32)
                        * 2
                        / (127 * fan_in**0.5)
                    ).astype(value.scales.dtype),
                )
            )
        elif jnp.issubdtype(value.dtype, jnp.floating) and len(value.shape) >= 2:
            filled.append(
                (jax.random.normal(k1, value.shape, jnp.float32) * value.shape[-1] ** -0.5).astype(
                    value.dtype
                )
            )
        elif jnp.issubdtype(value.dtype, jnp.floating):  # norm scales
            filled.append(jnp.ones(value.shape, value.dtype))
        else:
            filled.append(jnp.zeros(value.shape, value.dtype))
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, filled))


def grouped_kernels(fn, *args) -> str:
    """What the compiled program calls for its matmuls: custom-call targets and ops whose
    name mentions ragged/grouped, with counts."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    names = re.findall(r'custom_call_target="([^"]+)"', text)
    names += re.findall(r"\b(ragged-dot|ragged_dot|ragged-all-to-all)\b", text)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    fusions = len(re.findall(r"\bfusion\(", text))
    return ", ".join(f"{k}×{v}" for k, v in sorted(counts.items())) + f"; {fusions} fusions"


def has_tokamax() -> bool:
    try:
        import tokamax  # noqa: F401
    except ImportError:
        return False
    return True


def moe_rows(repeats: int = 5, cfg: GrokConfig | None = None, lengths=(2048, 8192)) -> list[dict]:
    cfg = cfg or GrokConfig.grok_1(num_layers=1, compute_dtype="bfloat16")
    graphdef, params = nnx.split(random_module(lambda: MoE(cfg, rngs=nnx.Rngs(0))))
    router = Router(cfg.emb_size, cfg.num_experts, cfg.num_selected_experts, rngs=nnx.Rngs(1))
    rows = []
    tk = ("tokamax",) if has_tokamax() else ()
    cases = [(f"prefill T={T}", 1, T, ("tiled", "ragged", *tk)) for T in lengths[:1]]
    cases += [
        ("decode B=1", 1, 1, ("gather", "ragged", *tk)),
        ("decode B=8", 8, 1, ("gather", "ragged", *tk)),
    ]
    cases += [(f"prefill T={T}", 1, T, ("tiled", "ragged", *tk)) for T in lengths[1:]]
    for name, B, T, impls in cases:
        x = jax.random.normal(jax.random.key(T), (B, T, cfg.emb_size), jnp.bfloat16)
        gates, experts, _ = router(x.astype(jnp.float32))
        args = (params, x, gates, experts)
        calls = {impl: partial(_moe_call, graphdef, impl) for impl in ("dense", *impls)}
        fns = {impl: jax.jit(f) for impl, f in calls.items()}
        ref = fns["dense"](*args).astype(jnp.float32)
        scale = float(jnp.abs(ref).max())
        t = interleaved({k: (lambda f=f: f(*args)) for k, f in fns.items()}, repeats)
        for impl in impls:
            out = fns[impl](*args).astype(jnp.float32)
            kern = grouped_kernels(calls[impl], *args)
            rows.append(
                {
                    "case": name,
                    "dispatch": impl,
                    "ms": t[impl] * 1e3,
                    "reference ms": t["dense"] * 1e3,
                    "speed-up": t["dense"] / t[impl],
                    "max rel diff": float(jnp.abs(out - ref).max()) / scale,
                    "compiled kernels": kern,
                }
            )
        print(table(rows[-len(impls) :], name), flush=True)
    return rows


def tile_rows(
    repeats: int = 5,
    cfg: GrokConfig | None = None,
    lengths=(2048, 8192),
    tiles=(64, 256, 512, 1024),
) -> list[dict]:
    """Tiled dispatch's rows per tile: small tiles waste no padding but run many small
    matmuls one after another; large ones feed the matrix units."""
    cfg = cfg or GrokConfig.grok_1(num_layers=1, compute_dtype="bfloat16")
    moe = random_module(lambda: MoE(cfg, rngs=nnx.Rngs(0)))
    router = Router(cfg.emb_size, cfg.num_experts, cfg.num_selected_experts, rngs=nnx.Rngs(1))
    w = moe.weights()
    rows = []
    for T in lengths:
        x = jax.random.normal(jax.random.key(T), (T, cfg.emb_size), jnp.bfloat16)
        _, experts, _ = router(x[None].astype(jnp.float32))
        e = experts[0]
        fns = {"dense": jax.jit(partial(_dense, cfg))}
        fns.update({f"tile {n}": jax.jit(partial(_tiled, cfg, n)) for n in tiles})
        ref = fns["dense"](x, e, w).astype(jnp.float32)
        t = interleaved({k: (lambda f=f: f(x, e, w)) for k, f in fns.items()}, repeats)
        for n in tiles:
            out = fns[f"tile {n}"](x, e, w).astype(jnp.float32)
            rows.append(
                {
                    "T": T,
                    "tile rows": n,
                    "ms": t[f"tile {n}"] * 1e3,
                    "reference ms": t["dense"] * 1e3,
                    "speed-up": t["dense"] / t[f"tile {n}"],
                    "max rel diff": float(jnp.abs(out - ref).max() / jnp.abs(ref).max()),
                }
            )
        print(table(rows[-len(tiles) :], f"tiled dispatch, T={T}"), flush=True)
    return rows


def _moe_call(graphdef, impl, params, x, gates, experts):
    """The MoE layer as a pure function of its parameters, with dispatch ``impl``."""
    return nnx.merge(graphdef, params)(x, gates, experts, impl=impl)


def _dense(cfg, x, e, w):
    return dense_dispatch(x, e, *w, cfg.num_experts)


def _tiled(cfg, tile, x, e, w):
    return tiled_dispatch(x, e, *w, cfg.num_experts, tile)


def chunk_rows(
    lengths=(8192, 32768), chunks=(512, 1024, 2048), repeats: int = 3, heads=(8, 6, 128)
) -> list[dict]:
    """Chunked attention's block size at long contexts (bf16, Grok-1 heads)."""
    K, R, H = heads
    rows = []
    for T in lengths:
        ks = jax.random.split(jax.random.key(T), 3)
        q = (jax.random.normal(ks[0], (1, T, K, R, H)) * 2).astype(jnp.bfloat16)
        k = (jax.random.normal(ks[1], (1, T, K, H)) * 2).astype(jnp.bfloat16)
        v = jax.random.normal(ks[2], (1, T, K, H)).astype(jnp.bfloat16)
        pos = jnp.broadcast_to(jnp.arange(T), (1, T))
        valid = jnp.ones((1, T), bool)
        calls = {c: partial(attend_chunked, multiplier=H**-0.5, chunk=c) for c in chunks}
        fns = {c: jax.jit(f) for c, f in calls.items()}
        args = (q, k, v, pos, pos, valid)
        t = interleaved({c: (lambda f=f: f(*args)) for c, f in fns.items()}, repeats)
        for c in chunks:
            rows.append(
                {
                    "T": T,
                    "chunk": c,
                    "ms": t[c] * 1e3,
                    "temp MiB": temp_bytes(calls[c], *args) / 2**20,
                }
            )
        print(table(rows[-len(chunks) :], f"chunk sizes, T={T}"), flush=True)
    return rows


def attention_rows(
    lengths=(2048, 4096, 8192, 32768),
    repeats: int = 5,
    chunk: int = 512,
    heads=(8, 6, 128),
    naive_max: int = 8192,
):
    K, R, H = heads  # Grok-1: 48 query heads sharing 8 kv heads of 128
    rows = []
    for T in lengths:
        ks = jax.random.split(jax.random.key(T), 3)
        q32 = jax.random.normal(ks[0], (1, T, K, R, H)) * 2
        k32 = jax.random.normal(ks[1], (1, T, K, H)) * 2
        v32 = jax.random.normal(ks[2], (1, T, K, H))
        pos = jnp.broadcast_to(jnp.arange(T), (1, T))
        valid = jnp.ones((1, T), bool)

        def naive(q, k, v):
            return attend_naive(q, k, v, pos, pos, valid, multiplier=H**-0.5)

        def chunked(q, k, v):
            return attend_chunked(q, k, v, pos, pos, valid, multiplier=H**-0.5, chunk=chunk)

        def fused(q, k, v):
            return attend_tokamax(q, k, v, pos, pos, valid, multiplier=H**-0.5)

        bf = tuple(a.astype(jnp.bfloat16) for a in (q32, k32, v32))
        fc = jax.jit(chunked)
        row = {"T": T, "chunked temp MiB": temp_bytes(chunked, *bf) / 2**20}
        if has_tokamax():
            ft = jax.jit(fused)
            row["tokamax temp MiB"] = temp_bytes(fused, *bf) / 2**20
            t = interleaved(
                {"chunked": lambda: fc(*bf), "tokamax": lambda: ft(*bf)}, max(2, repeats - 2)
            )
            row["tokamax ms"] = t["tokamax"] * 1e3
            with jax.default_matmul_precision("highest"):
                want = jax.jit(chunked)(q32, k32, v32)
                row["tokamax fp32 max abs diff"] = float(
                    jnp.abs(jax.jit(fused)(q32, k32, v32) - want).max()
                )
        if T <= naive_max:  # naive T×T fp32 logits: 12 GiB at 8192, 192 GiB at 32768
            fn = jax.jit(naive)
            row["naive temp MiB"] = temp_bytes(naive, *bf) / 2**20
            t = interleaved({"naive": lambda: fn(*bf), "chunked": lambda: fc(*bf)}, repeats)
            row.update(
                {
                    "naive ms": t["naive"] * 1e3,
                    "chunked ms": t["chunked"] * 1e3,
                    "speed-up": t["naive"] / t["chunked"],
                }
            )
            if "tokamax ms" in row:
                row["tokamax vs naive"] = row["naive ms"] / row["tokamax ms"]
            with jax.default_matmul_precision("highest"):
                diff = jnp.abs(jax.jit(naive)(q32, k32, v32) - jax.jit(chunked)(q32, k32, v32))
            row["fp32 max abs diff"] = float(diff.max())
        else:
            t = interleaved({"chunked": lambda: fc(*bf)}, max(2, repeats - 2))
            row.update(
                {
                    "naive temp MiB": float("nan"),
                    "naive ms": float("nan"),
                    "chunked ms": t["chunked"] * 1e3,
                    "speed-up": float("nan"),
                    "fp32 max abs diff": float("nan"),
                }
            )
            if "tokamax ms" in row:
                row["tokamax vs naive"] = float("nan")
        rows.append(row)
        print(table([row], f"attention T={T}"), flush=True)
    return rows


def layer_rows(
    num_layers: int = 4, cfg: GrokConfig | None = None, prompt: int = 1024
) -> list[dict]:
    import dataclasses

    cfg = cfg or GrokConfig.grok_1(
        num_layers=num_layers, sequence_len=2048, compute_dtype="bfloat16"
    )
    rows = _layer_rows(num_layers, cfg, prompt, "default")
    if has_tokamax():
        rows += _layer_rows(
            num_layers,
            dataclasses.replace(cfg, moe_impl="tokamax", attention_impl="tokamax"),
            prompt,
            "tokamax",
        )
    return rows


def _layer_rows(num_layers: int, cfg: GrokConfig, prompt: int, paths: str) -> list[dict]:
    from grok_flax.running.generate import Generator

    t = time.perf_counter()
    model = random_module(lambda: Grok(cfg, rngs=nnx.Rngs(0)))
    jax.block_until_ready(nnx.state(model))
    build = time.perf_counter() - t
    gen = Generator(model)
    rng = np.random.default_rng(0)
    rows = []
    for B, P, N in ((1, prompt, 32), (8, prompt, 32)):
        prompts = rng.integers(3, cfg.vocab_size, (B, P)).tolist()
        kw = dict(max_new_tokens=N, temperature=0.0)
        t = time.perf_counter()
        gen.generate(prompts, **kw)
        first = time.perf_counter() - t
        r = min(
            (gen.generate(prompts, **kw) for _ in range(3)),
            key=lambda r: r.prefill_seconds + r.decode_seconds,
        )
        step = r.decode_seconds / max(1, r.decode_steps)
        rows.append(
            {
                "paths": paths,
                "layers": num_layers,
                "batch": B,
                "prompt": P,
                "prefill tok/s": r.prefill_tokens_per_s,
                "decode ms/step": step * 1e3,
                "decode ms/step/layer": step * 1e3 / num_layers,
                "first call s (compile)": first,
                "build s": build,
            }
        )
        print(table(rows[-1:], f"Grok-1 width, {num_layers} layers"), flush=True)
    return rows


def dry_run() -> None:
    """Every section at toy sizes, to check the script on a CPU before an accelerator runs it."""
    small = GrokConfig.tiny(
        emb_size=128,
        widening_factor=4.0,
        num_experts=8,
        num_selected_experts=2,
        compute_dtype="bfloat16",
        moe_out_scale_blocks=8,
        num_layers=2,
        sequence_len=256,
        vocab_size=512,
        key_size=32,
        num_q_heads=8,
        num_kv_heads=2,
        moe_tile="auto",
    )
    moe_rows(2, small, lengths=(128, 256))
    tile_rows(2, small, lengths=(128,), tiles=(16, 64))
    attention_rows(lengths=(128, 256), repeats=2, chunk=64, heads=(2, 2, 32), naive_max=128)
    chunk_rows(lengths=(256,), chunks=(64, 128), repeats=2, heads=(2, 2, 32))
    layer_rows(2, small, prompt=32)


if __name__ == "__main__":
    print(load_line(), flush=True)
    if sys.argv[1:] == ["--dry-run"]:
        print(machine(), "tokamax:", has_tokamax(), flush=True)
        dry_run()
        sys.exit(0)
    which = sys.argv[1:] or ["moe", "tiles", "attention", "chunks", "layers"]
    print(machine(), flush=True)
    for name in which:
        t = time.perf_counter()
        rows = {
            "moe": moe_rows,
            "tiles": tile_rows,
            "attention": attention_rows,
            "chunks": chunk_rows,
            "layers": layer_rows,
        }[name]()
        print(
            table(rows, f"{name} ({machine()})"),
            f"\n({time.perf_counter() - t:.0f} s)\n",
            flush=True,
        )
