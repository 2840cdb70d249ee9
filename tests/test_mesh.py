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
from grok_flax.scale.sharding import (
    abstract_state,
    batch_sharding,
    bytes_per_device,
    create_sharded,
    make_mesh,
    mesh_devices,
    parse_mesh_spec,
    put_global,
    shard_module,
    spec_for,
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


@pytest.mark.parametrize("data, mdl", MESHES, ids=[f"{d}x{m}" for d, m in MESHES])
def test_sharded_equals_single_device(tiny_model, data, mdl):
    cfg, graphdef, state, tokens, want = tiny_model
    mesh = make_mesh(data, mdl)
    model = nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh)))
    q = model.layers.attn.query.get_value()  # [L, D, Nq·H]
    assert q.weight.sharding.spec == P(None, "data" if data > 1 else None,
                                       "model" if mdl > 1 else None)
    w1 = model.layers.moe.linear_1.get_value()  # [L, E, F, D], scales [L, E, G, D]
    assert w1.weight.sharding.spec[2] == ("model" if mdl > 1 else None)
    assert w1.scales.sharding.spec[2] is None  # G never split
    got = _run(model, cfg, tokens, mesh)
    k = got[2].k[...]  # [L, B, S, K, H]; stays sharded through the jitted steps
    assert k.sharding.shard_shape(k.shape) == (cfg.num_layers, 8 // data, 10, 2, cfg.key_size)
    _assert_same(got, want)


# --- the rules themselves (no compilation) ---

def test_spec_rules_any_mesh():
    m18, m24, m81, m11 = (make_mesh(*s) for s in [(1, 8), (2, 4), (8, 1), (1, 1)])
    assert spec_for(("embed", "q_heads"), (64, 6144), m18) == P(None, "model")
    assert spec_for(("embed", "q_heads"), (64, 6144), m24) == P("data", "model")
    assert spec_for(("embed", "q_heads"), (64, 6144), m81) == P("data", None)
    assert spec_for(("embed", "q_heads"), (64, 6144), m11) == P(None, None)
    # a dimension the axis does not divide is replicated
    assert spec_for(("embed", "kv_heads"), (6, 12), m18) == P(None, None)
    # KV memory [L, B, S, K, H]: K=2 kv heads on model=8 -> replicated, batch over data
    kv = ("layers", "batch", "kv_seq", "kv_heads", "head_dim")
    assert spec_for(kv, (3, 8, 16, 2, 8), m18) == P(None, None, None, None, None)
    assert spec_for(kv, (3, 8, 16, 2, 8), m24) == P(None, "data", None, None, None)
    assert spec_for(kv, (3, 1, 16, 8, 8), m24) == P(None, None, None, "model", None)
    # leading unnamed axes are the stacked layers
    assert spec_for(("embed", "ffn"), (64, 8, 32, 48), m18) == P(None, None, None, "model")
    # embedding columns over data × model, or the trailing axis that divides
    assert spec_for(("vocab", "embed_vocab"), (256, 32), m24) == P(None, ("data", "model"))
    assert spec_for(("vocab", "embed_vocab"), (256, 12), m24) == P(None, "model")
    assert spec_for(("vocab", "embed_vocab"), (256, 6), m24) == P(None, None)
    with pytest.raises(ValueError):
        spec_for(("embed", "ffn"), (4,), m18)


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


def test_mesh_helpers():
    assert parse_mesh_spec("data=2,model=4") == {"data": 2, "model": 4}
    assert parse_mesh_spec("model=8") == {"data": 1, "model": 8}
    assert parse_mesh_spec("2x4") == {"data": 2, "model": 4}
    for bad in ("data=0", "pipe=2", "data=1,data=2", "2x", "8"):
        with pytest.raises(ValueError):
            parse_mesh_spec(bad)
    assert make_mesh(2).shape == {"data": 2, "model": 4}
    with pytest.raises(ValueError):
        make_mesh(4, 4)
    mesh = make_mesh(2, 4)
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


REF_MESHES = [(1, 8, "grok_flax"), (2, 4, "grok_flax"), (8, 1, "grok_flax"),
              (4, 2, "grok_flax"), (1, 8, "explicit"), (2, 4, "explicit"), (4, 2, "explicit"),
              (1, 8, "auto"), (2, 4, "auto")]


@pytest.mark.parametrize("data, mdl, kind", REF_MESHES,
                         ids=[f"{k}-{d}x{m}" for d, m, k in REF_MESHES])
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


def test_too_few_devices_says_how_to_simulate_them():
    with pytest.raises(ValueError, match=r"needs 64 devices, 8 available\. On a CPU, simulate "
                                         r"them: set XLA_FLAGS=--xla_force_host_platform_"
                                         r"device_count=64"):
        make_mesh(8, 8)


# --- mesh_devices: 8 devices wherever a notebook runs ---

def test_mesh_devices_uses_the_default_platform_when_it_has_enough(capsys):
    assert mesh_devices(8) == jax.devices()
    assert mesh_devices(1) == jax.devices()
    assert capsys.readouterr().err == ""  # no note on the real path


def _one_accelerator(monkeypatch, cpu_count):
    """jax.devices() as on a one-GPU machine; jax.devices("cpu") the first cpu_count CPUs."""
    import types

    real = jax.devices
    cpus = real("cpu")[:cpu_count]
    gpu = types.SimpleNamespace(platform="gpu", id=0)
    monkeypatch.setattr(jax, "devices",
                        lambda backend=None: list(cpus) if backend == "cpu" else [gpu])
    return cpus


def test_mesh_devices_falls_back_to_simulated_cpu_devices(monkeypatch, capsys):
    cpus = _one_accelerator(monkeypatch, 8)
    devices = mesh_devices(8)
    assert devices == list(cpus) and all(d.platform == "cpu" for d in devices)
    err = capsys.readouterr().err
    assert "1 gpu device(s), fewer than the 8" in err and "8 simulated CPU devices" in err
    mesh = make_mesh(1, 8, devices=devices)
    spec = jax.sharding.NamedSharding(mesh, P(None, "model"))
    x = put_global(np.arange(16.0).reshape(2, 8), spec)
    assert x.sharding.shard_shape(x.shape) == (2, 1)
    np.testing.assert_array_equal(jax.jit(lambda a: a.sum())(x), 120.0)


def test_mesh_devices_says_how_to_get_enough_cpu_devices(monkeypatch):
    _one_accelerator(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"default platform \(gpu\) has 1 and the CPU 2\. "
                                         r"Simulate 8 CPU devices: call jax\.config\.update"
                                         r"\('jax_num_cpu_devices', 8\)"):
        mesh_devices(8)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="XLA_FLAGS=--xla_force_host_platform_device_count=64"):
        mesh_devices(64)  # the CPU itself has only 8 here
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            mesh_devices(bad)
