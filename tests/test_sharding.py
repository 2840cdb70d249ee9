"""Any mesh: sharded == single device, for weights, KV memory and the released checkpoint.

Runs on 8 simulated CPU devices (conftest). Compute is float32 so sharded and single-device
results agree to float rounding (the all-reduces only reorder sums).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_flax import Grok, GrokConfig, KVMemory
from grok_flax.checkpoint import load_checkpoint
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import (
    abstract_state,
    batch_sharding,
    bytes_per_device,
    create_sharded,
    put_global,
    shard_module,
    state_shardings,
)

TINY_CASE = TINY
MESHES = [(1, 1), (1, 8), (2, 4), (8, 1)]
TOL = dict(rtol=2e-4, atol=2e-4)


@nnx.jit
def _prefill_and_decode(model, memory, prompt, nxt):
    """Prompt into the KV memory, then one decode step: both logits (memory updated)."""
    return model(prompt, memory), model(nxt, memory)


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


def _run(model, cfg, tokens, mesh=None):
    B, T = tokens.shape
    memory = KVMemory(cfg, B, T + 4)
    if mesh is not None:
        shard_module(memory, mesh)
        tokens = put_global(tokens, batch_sharding(mesh, 2, batch=B))
    a, b = _prefill_and_decode(model, memory, tokens[:, :-1], tokens[:, -1:])
    return a, b, memory


def _assert_same(got, want):
    a, b, mem = got
    want_a, want_b, want_mem = want
    np.testing.assert_allclose(a, want_a, **TOL)
    np.testing.assert_allclose(b, want_b, **TOL)
    np.testing.assert_allclose(mem.k[...], want_mem.k[...], **TOL)
    np.testing.assert_allclose(mem.v[...], want_mem.v[...], **TOL)
    np.testing.assert_array_equal(mem.step[...], want_mem.step[...])


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset: 2 kv heads (model=8 splits inside a head and the KV memory's kv-head
    axis is replicated), G=4 scale blocks in attention's out-projection and the experts'
    linear_1 (model=8: each device holds half a block). Returns its parts and its results
    on one device."""
    cfg = GrokConfig.tiny(compute_dtype="float32")
    model = Grok(cfg, rngs=nnx.Rngs(0))
    tokens = np.array(jax.random.randint(jax.random.key(1), (8, 6), 1, cfg.vocab_size))
    tokens[3, 4:] = 0  # one right-padded row
    return cfg, *nnx.split(model), tokens, _run(model, cfg, tokens)


@pytest.mark.parametrize(
    "data, mdl",
    [
        pytest.param(d, m, id=f"{d}x{m}", marks=() if (d, m) == (2, 4) else pytest.mark.slow)
        for d, m in MESHES
    ],
)
def test_sharded_equals_single_device(tiny_model, data, mdl):
    cfg, graphdef, state, tokens, want = tiny_model
    mesh = make_mesh(data, mdl)
    model = nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh)))
    q = model.layers.attn.query.get_value()  # [L, D, Nq·H]
    assert q.weight.sharding.spec == P(
        None, "data" if data > 1 else None, "model" if mdl > 1 else None
    )
    w1 = model.layers.moe.linear_1.get_value()  # [L, E, F, D], scales [L, E, G, D]
    assert w1.weight.sharding.spec[2] == ("model" if mdl > 1 else None)
    assert w1.scales.sharding.spec[2] is None  # G never split
    got = _run(model, cfg, tokens, mesh)
    k = got[2].k[...]  # [L, B, S, K, H]; stays sharded through the jitted steps
    assert k.sharding.shard_shape(k.shape) == (cfg.num_layers, 8 // data, 10, 2, cfg.key_size)
    _assert_same(got, want)


# --- placement by the rules (no compilation) ---


@pytest.mark.parametrize("blocks, data, mdl", [(4, 1, 8), (8, 1, 2), (8, 2, 4), (1, 1, 8)])
def test_block_scales_are_never_split(blocks, data, mdl):
    cfg = GrokConfig.tiny(attn_out_scale_blocks=blocks, moe_out_scale_blocks=blocks)
    mesh = make_mesh(data, mdl)
    state = abstract_state(nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0))), mesh)
    for path in (("attn", "linear"), ("moe", "linear_1")):
        q = state["layers"][path[0]][path[1]].get_value()
        assert q.scales.shape[-2] == blocks
        w_spec, s_spec = q.weight.sharding.spec, q.scales.sharding.spec
        assert s_spec[-2] is None
        assert tuple(s_spec)[-1:] == tuple(w_spec)[-1:]  # scales follow the output axis
        assert q.scales.sharding.shard_shape(q.scales.shape)[-2] == blocks


def test_batch_sharding_and_global_arrays():
    mesh = make_mesh(2, 4)
    with pytest.warns(
        UserWarning,
        match=r"2-d input of 3 rows: axis 'batch' of size 3 is not "
        r"split over mesh axis data=2: replicated over it",
    ):
        assert batch_sharding(mesh, 2, batch=3).spec == P(None, None)
    assert batch_sharding(mesh, 3, batch=4).spec == P("data", None, None)
    x = put_global(np.arange(24).reshape(4, 6), batch_sharding(mesh, 2))
    assert x.sharding.shard_shape(x.shape) == (2, 6)
    np.testing.assert_array_equal(x, np.arange(24).reshape(4, 6))
    assert bytes_per_device(x) == 2 * 6 * x.dtype.itemsize


def test_shard_module_places_kv_memory():
    cfg = GrokConfig.tiny(num_kv_heads=4, num_q_heads=8)
    mem = shard_module(KVMemory(cfg, 4, 16), make_mesh(2, 4))
    assert mem.k[...].sharding.spec == P(None, "data", None, "model", None)
    assert mem.step[...].sharding.spec == P("data")
    assert bytes_per_device(mem.k[...]) * 8 == mem.k[...].nbytes
    made = create_sharded(lambda: KVMemory(cfg, 4, 16), make_mesh(2, 4))  # never whole
    assert made.k[...].sharding.spec == P(None, "data", None, "model", None)
    np.testing.assert_array_equal(made.k[...], mem.k[...])


# --- the checkpoint written by the original code, loaded onto meshes ---


@pytest.fixture(scope="module")
def tiny_reference():
    if not (TINY_CASE / "meta.json").is_file():
        pytest.skip(f"{TINY_CASE} not present")
    meta = json.loads((TINY_CASE / "meta.json").read_text())
    cfg = GrokConfig.from_reference_meta(meta, compute_dtype="float32")
    tokens = np.asarray(meta["tokens"], np.int32)
    model = load_checkpoint(TINY_CASE / "checkpoints", cfg, progress=False)
    return cfg, tokens, np.asarray(_forward(model, jnp.asarray(tokens))), model


REF_MESHES = [
    (1, 8, "grok_flax"),
    (2, 4, "grok_flax"),
    (8, 1, "grok_flax"),
    (4, 2, "grok_flax"),
    (1, 8, "explicit"),
    (2, 4, "explicit"),
    (4, 2, "explicit"),
    (1, 8, "auto"),
    (2, 4, "auto"),
]


@pytest.mark.parametrize(
    "data, mdl, kind",
    [
        pytest.param(
            d,
            m,
            k,
            id=f"{k}-{d}x{m}",
            marks=() if (d, m) == (2, 4) and k != "grok_flax" else pytest.mark.slow,
        )
        for d, m, k in REF_MESHES
    ],
)
def test_reference_checkpoint_on_mesh(tiny_reference, data, mdl, kind):
    """grok1-tiny: 8 kv heads, experts' width F=216 with G=8 scale blocks (27 rows each);
    loaded onto grok_flax's mesh, JAX's default mesh (Explicit axes) and an Auto one."""
    import jax
    from jax.sharding import AxisType

    cfg, tokens, want, single = tiny_reference
    if kind == "grok_flax":
        mesh = make_mesh(data, mdl)
    else:
        types = (AxisType.Explicit if kind == "explicit" else AxisType.Auto,) * 2
        mesh = jax.make_mesh((data, mdl), ("data", "model"), axis_types=types)
    model = load_checkpoint(TINY_CASE / "checkpoints", cfg, mesh=mesh, progress=False)
    w1 = model.layers.moe.linear_1.get_value()
    assert w1.scales.shape[-2] == 8 and w1.scales.sharding.spec[2] is None
    assert w1.weight.sharding.spec[2] == ("model" if mdl > 1 else None)
    assert len(w1.weight.sharding.device_set) == 8
    got = _forward(model, put_global(tokens, batch_sharding(mesh, 2, batch=len(tokens))))
    np.testing.assert_allclose(np.asarray(got), want, **TOL)
    assert (np.asarray(got).argmax(-1) == want.argmax(-1)).all()
    if (data, mdl) == (4, 2):  # G=8 blocks on model=2 (4 blocks per device), with KV memory
        _assert_same(_run(model, cfg, tokens, mesh), _run(single, cfg, tokens))
