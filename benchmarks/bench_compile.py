"""Compile time of the full 64-layer Grok-1 (prefill of 8192 tokens into KV memory + one
decode step), AOT on abstract sharded inputs for a 1×8 mesh of simulated devices:
``lax.scan`` over stacked layers vs a Python loop over the layers."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import load_line, machine, table  # noqa: E402
from grok_flax import GrokConfig, KVMemory, abstract_model  # noqa: E402
from grok_flax.scale.mesh import make_mesh  # noqa: E402
from grok_flax.scale.sharding import batch_sharding, state_shardings  # noqa: E402


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
    )


def compile_seconds(cfg: GrokConfig, mesh, context: int = 8192) -> dict:
    model = abstract_model(cfg)
    memory = nnx.eval_shape(lambda: KVMemory(cfg, 1, context))
    (g_m, s_m), (g_k, s_k) = nnx.split(model), nnx.split(memory)
    s_m, s_k = (
        _abstract(s_m, state_shardings(s_m, mesh)),
        _abstract(s_k, state_shardings(s_k, mesh)),
    )

    def run(params, mem_state, tokens):
        m, mem = nnx.merge(g_m, params), nnx.merge(g_k, mem_state)
        return m(tokens, mem)[:, -1], nnx.state(mem)

    out = {}
    for name, T in (("prefill", context), ("decode", 1)):
        tokens = jax.ShapeDtypeStruct((1, T), jnp.int32, sharding=batch_sharding(mesh))
        t = time.perf_counter()
        jax.jit(run, donate_argnums=1).lower(s_m, s_k, tokens).compile()
        out[name] = time.perf_counter() - t
    return out


def main(loop_layers: int = 64) -> list[dict]:
    mesh = make_mesh(1, 8)
    base = GrokConfig.grok_1(compute_dtype="bfloat16")
    scan = compile_seconds(base, mesh)
    loop = compile_seconds(base.replace(scan_layers=False, num_layers=loop_layers), mesh)
    scale = 64 / loop_layers
    rows = [
        {
            "layers": "scan (64)",
            "prefill s": scan["prefill"],
            "decode s": scan["decode"],
            "total s": scan["prefill"] + scan["decode"],
        },
        {
            "layers": f"Python loop ({loop_layers}{', ×' + str(scale) if scale != 1 else ''})",
            "prefill s": loop["prefill"] * scale,
            "decode s": loop["decode"] * scale,
            "total s": (loop["prefill"] + loop["decode"]) * scale,
        },
    ]
    rows.append(
        {
            "layers": "loop / scan",
            "prefill s": rows[1]["prefill s"] / scan["prefill"],
            "decode s": rows[1]["decode s"] / scan["decode"],
            "total s": rows[1]["total s"] / rows[0]["total s"],
        }
    )
    return rows


if __name__ == "__main__":
    print(load_line(), flush=True)
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    print(table(main(n), f"AOT compile, Grok-1 on a 1×8 mesh ({machine()})"))
