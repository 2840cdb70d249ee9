"""The compiled decode step, read from its HLO: it writes only the new tokens' K/V, and on a
1×8 mesh its only collectives are tensor parallelism's (one all-reduce after attention and
one after the MoE per layer, plus the embedding's all-gather and the logits' all-reduce)."""

import math
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import grok_flax as gf
from benchmarks.hlo import hlo_collectives, hlo_writes_into
from grok_flax.running.steps import decode_step
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import create_sharded, shard_module

B, S = 2, 64
CFG = gf.GrokConfig.tiny(num_kv_heads=8, num_q_heads=16, compute_dtype="float32")


def compiled_decode(mesh=None, batch=B):
    model = gf.Grok(CFG, rngs=nnx.Rngs(0))
    if mesh is None:
        memory = gf.KVMemory(CFG, batch, S)
    else:
        shard_module(model, mesh)
        memory = create_sharded(lambda: gf.KVMemory(CFG, batch, S), mesh)
    graph, params = nnx.split(model)
    mem_graph, mem_state = nnx.split(memory)
    keys = jax.vmap(jax.random.key)(jnp.arange(batch, dtype=jnp.uint32))
    args = (
        graph,
        params,
        mem_graph,
        mem_state,
        jnp.zeros(batch, jnp.int32),
        keys,
        1,
        jnp.zeros(batch),
        jnp.ones(batch),
        jnp.zeros(batch, jnp.int32),
    )
    return decode_step.lower(*args).compile().as_text(), memory


def _size(shape):
    return math.prod(shape)


@pytest.mark.parametrize("mesh_shape", [None, (1, 8), (2, 4)], ids=["1dev", "1x8", "2x4"])
def test_decode_step_writes_only_the_new_tokens_kv(mesh_shape):
    mesh = None if mesh_shape is None else make_mesh(*mesh_shape)
    text, memory = compiled_decode(mesh)
    k = memory.k[...]
    local = k.sharding.shard_shape(k.shape) if mesh is not None else k.shape  # [L, B, S, K, H]
    writes, others = hlo_writes_into(text, tuple(local))
    # the new token's K/V of every row for this device's heads (B × 1 token × K × H); on a
    # data-split mesh a device receives all rows' updates and keeps its own
    new_tokens = B * 1 * local[3] * local[4]
    assert len(writes) >= 2, f"no K/V write found in the compiled decode step: {others}"
    for op, update in writes:
        assert _size(update) <= new_tokens, (
            f"{op} writes {update} ({_size(update)} values) into the KV memory; the new "
            f"token's K/V are {new_tokens} values"
        )
    assert not others, f"the KV memory is produced by other ops (copies?): {others}"
    assert "input_output_alias" in text  # the memory is donated and updated in place


def test_decode_step_has_no_chunk_loop():
    text, _ = compiled_decode()
    assert "attend_chunked" not in text and "one_query_block" not in text


def test_decode_collectives_on_1x8_are_tensor_parallelism_only():
    text, _ = compiled_decode(make_mesh(1, 8))
    found = hlo_collectives(text)
    kinds = sorted(
        (op, re.sub(r".*/(attention_block|moe_block|embed|unembed)/.*", r"\1", n))
        for op, n in found
    )
    assert kinds == [
        ("all-gather", "embed"),
        ("all-reduce", "attention_block"),
        ("all-reduce", "moe_block"),
        ("all-reduce", "unembed"),
    ], found
    per_layer = [n for op, n in found if "/while/body/" in n]
    assert len(per_layer) == 2, found  # inside the scan over layers: once per layer


def _compiled_prefill(mesh, batch=B, chunk=16):
    from grok_flax.running.steps import prefill_step

    model = gf.Grok(CFG, rngs=nnx.Rngs(0))
    shard_module(model, mesh)
    memory = create_sharded(lambda: gf.KVMemory(CFG, batch, S), mesh)
    (graph, params), (mem_graph, mem_state) = nnx.split(model), nnx.split(memory)
    args = (
        graph,
        params,
        mem_graph,
        mem_state,
        jnp.ones((batch, chunk), jnp.int32),
        jnp.full((batch,), chunk, jnp.int32),
        jnp.zeros((batch, CFG.vocab_size)),
        jnp.ones((batch,), bool),
        jnp.full((batch,), chunk - 1, jnp.int32),
    )
    return prefill_step.lower(*args).compile().as_text()


@pytest.mark.parametrize(
    "shape",
    [pytest.param((1, 8), id="1x8", marks=pytest.mark.slow), pytest.param((2, 4), id="2x4")],
)
@pytest.mark.parametrize(
    "explicit",
    [pytest.param(False, id="auto", marks=pytest.mark.slow), pytest.param(True, id="explicit")],
)
def test_no_involuntary_rematerialization(capfd, shape, explicit):
    """XLA warns when it must replicate a tensor to reshard it; the activation shardings
    stated where layers meet leave it no such case in the forward, prefill or decode."""
    if jax.config.jax_compilation_cache_dir:  # `make test-fast` sets one
        pytest.skip(
            "XLA warns only while it compiles, never for a program read from the "
            "persistent compilation cache: `make test` runs this without one"
        )
    mesh = jax.make_mesh(shape, ("data", "model")) if explicit else make_mesh(*shape)
    capfd.readouterr()
    compiled_decode(mesh)
    _compiled_prefill(mesh)
    model = gf.Grok(CFG, rngs=nnx.Rngs(0))
    shard_module(model, mesh)
    nnx.jit(lambda m, t: m(t))(model, jnp.ones((2, 12), jnp.int32)).block_until_ready()
    err = capfd.readouterr().err
    assert "Involuntary full rematerialization" not in err, err[-2000:]
