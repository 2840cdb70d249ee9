import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import Grok, GrokConfig, KVMemory, abstract_model, param_count
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import shard_module

SLOW = pytest.mark.slow  # left out of `make test-fast`


def _model(**kw):
    cfg = GrokConfig.tiny(compute_dtype="float32", **kw)
    return cfg, Grok(cfg, rngs=nnx.Rngs(0))


def _tokens(B, T, seed=1, vocab=256):
    return jax.random.randint(jax.random.key(seed), (B, T), 1, vocab)


def test_grok_1_param_count_is_exact():
    model = abstract_model(GrokConfig.grok_1())
    assert param_count(model) == 315_684_820_992
    # the int8 weights' scales are extra storage, not parameters
    assert param_count(model, include_scales=True) > 315_684_820_992
    assert model.layers.moe.linear_1.get_value().weight.shape == (64, 8, 32768, 6144)
    assert model.layers.moe.linear_1.get_value().scales.shape == (64, 8, 8, 6144)


def test_shapes_and_dtypes():
    cfg = GrokConfig.tiny(compute_dtype="bfloat16")
    model = Grok(cfg, rngs=nnx.Rngs(0))
    logits = model(_tokens(2, 7))
    assert logits.shape == (2, 7, cfg.vocab_size) and logits.dtype == jnp.bfloat16
    assert model.embed[...].dtype == jnp.float32
    assert model.layers.attn.query.get_value().weight.dtype == jnp.int8


def test_bad_tokens_raise():
    _, model = _model()
    with pytest.raises(ValueError, match="integer array"):
        model(jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="integer array"):
        model(jnp.zeros((1, 3), jnp.float32))


def test_padding_rows_do_not_change_other_rows():
    _, model = _model()
    toks = _tokens(3, 9)
    alone = model(toks[:1])
    padded = toks.at[1, 5:].set(0).at[2].set(0)
    batch = model(padded)
    np.testing.assert_allclose(batch[0], alone[0], rtol=1e-5, atol=1e-5)
    # a right-padded row equals its unpadded prefix at the real positions
    np.testing.assert_allclose(batch[1, :5], model(toks[1:2, :5])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "impl", [dict(), pytest.param(dict(attention_impl="naive", moe_impl="dense"), marks=SLOW)]
)
def test_token_by_token_decode_equals_full_forward(impl):
    cfg, model = _model(**impl)
    toks = _tokens(2, 12)
    full = model(toks)
    memory = KVMemory(cfg, batch_size=2, max_len=16)
    prefill = model(toks[:, :5], memory)
    np.testing.assert_allclose(prefill, full[:, :5], rtol=1e-5, atol=1e-5)
    for t in range(5, 12):
        step = model(toks[:, t : t + 1], memory)
        np.testing.assert_allclose(step[:, 0], full[:, t], rtol=1e-4, atol=1e-4)
    assert memory.step[...].tolist() == [12, 12]


def test_rows_at_different_lengths_in_one_memory():
    cfg, model = _model()
    toks = _tokens(2, 10)
    memory = KVMemory(cfg, batch_size=2, max_len=12)
    lengths = jnp.array([4, 7])
    prompt = toks[:, :7].at[0, 4:].set(0)  # row 0 right-padded to 7
    model(prompt, memory, lengths=lengths)
    assert memory.step[...].tolist() == [4, 7]
    nxt = jnp.stack([toks[0, 4:5], toks[1, 7:8]])
    out = model(nxt, memory)
    np.testing.assert_allclose(out[0, 0], model(toks[:1, :5])[0, 4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[1, 0], model(toks[1:2, :8])[0, 7], rtol=1e-4, atol=1e-4)


def test_memory_bigger_than_context_is_refused():
    cfg = GrokConfig.tiny()
    with pytest.raises(ValueError, match="context"):
        KVMemory(cfg, 1, cfg.sequence_len + 1)


def test_capture_returns_routing_and_attention():
    cfg, model = _model()
    logits, cap = model(_tokens(1, 6), capture=True)
    L, E, k = cfg.num_layers, cfg.num_experts, cfg.num_selected_experts
    assert cap["router_probs"].shape == (L, 1, 6, E)
    assert cap["experts"].shape == (L, 1, 6, k)
    assert cap["attention"].shape == (L, 1, cfg.num_kv_heads, cfg.q_per_kv, 6, 6)
    np.testing.assert_allclose(cap["attention"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(logits, model(_tokens(1, 6)), rtol=1e-5, atol=1e-5)


@SLOW  # test_sharding.py covers the fast tier
@pytest.mark.parametrize("data, mdl", [(1, 8), (2, 4), (8, 1)])
def test_sharded_equals_single_device(data, mdl):
    cfg, model = _model(num_q_heads=8, num_kv_heads=8, key_size=8, emb_size=64)
    toks = _tokens(8, 6)
    want = model(toks)
    mem1 = KVMemory(cfg, 8, 8)
    model(toks[:, :5], mem1)
    want_step = model(toks[:, 5:6], mem1)

    _, sharded = _model(num_q_heads=8, num_kv_heads=8, key_size=8, emb_size=64)
    mesh = make_mesh(data, mdl)
    shard_module(sharded, mesh)
    spec = sharded.layers.attn.query.get_value().weight.sharding.spec
    assert spec == jax.sharding.PartitionSpec(
        None, "data" if data > 1 else None, "model" if mdl > 1 else None
    )
    forward = nnx.jit(lambda m, t: m(t))
    np.testing.assert_allclose(forward(sharded, toks), want, rtol=1e-4, atol=1e-4)
    mem = shard_module(KVMemory(cfg, 8, 8), mesh)
    step = nnx.jit(lambda m, t, mem: m(t, mem))
    step(sharded, toks[:, :5], mem)
    np.testing.assert_allclose(step(sharded, toks[:, 5:6], mem), want_step, rtol=1e-4, atol=1e-4)


def test_capture_subset_and_unknown():
    _, model = _model()
    _, cap = model(_tokens(1, 6), capture=("routing",))
    assert set(cap) == {"router_probs", "experts", "gates"}
    with pytest.raises(ValueError, match="unknown capture"):
        model(_tokens(1, 6), capture=("gradients",))


@SLOW
def test_python_loop_over_layers_equals_scan():
    cfg, model = _model()
    toks = _tokens(2, 5)
    want = model(toks)
    loop = Grok(cfg.replace(scan_layers=False), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(loop(toks), want, rtol=1e-5, atol=1e-5)


# --- inputs are checked, never silently used ---------------------------------------------


def test_out_of_range_token_ids_are_a_clear_error():
    cfg, model = _model()
    toks = np.ones((2, 5), np.int32)
    toks[1, 3] = cfg.vocab_size  # one past the end
    with pytest.raises(ValueError, match=rf"outside \[0, {cfg.vocab_size}\): 256 at \[1, 3\]"):
        model(toks)
    toks[1, 3] = -1
    with pytest.raises(ValueError, match=r"-1 at \[1, 3\]"):
        model(jnp.asarray(toks))


def test_out_of_range_token_ids_under_jit_fail_the_call():
    cfg, model = _model()
    forward = nnx.jit(lambda m, t: m(t))
    assert np.isfinite(np.asarray(forward(model, jnp.ones((1, 4), jnp.int32)))).all()
    bad = jnp.asarray([[1, 2, cfg.vocab_size + 7, 3]], jnp.int32)
    with pytest.raises(Exception, match=r"token ids outside \[0, 256\): 263 at \[0, 2\]"):
        np.asarray(forward(model, bad))
    # the check can be turned off (generate validates on the host); then nothing is checked
    unchecked = nnx.jit(lambda m, t: m(t, check_inputs=False))
    unchecked(model, jnp.ones((1, 4), jnp.int32)).block_until_ready()


def test_kv_memory_overflow_is_an_error_not_an_overwrite():
    cfg, model = _model()
    memory = KVMemory(cfg, 1, 8)
    model(_tokens(1, 6), memory)
    k_before = np.asarray(memory.k[...])
    with pytest.raises(ValueError, match=r"KV memory overflow: row 0 is at step 6 and 3 new"):
        model(_tokens(1, 3), memory)
    np.testing.assert_array_equal(np.asarray(memory.k[...]), k_before)  # untouched
    assert int(memory.step[0]) == 6
    model(_tokens(1, 2), memory)  # exactly filling it is fine
    assert int(memory.step[0]) == 8


def test_kv_memory_overflow_under_jit_fails_the_call():
    cfg, model = _model()
    memory = KVMemory(cfg, 1, 8)
    step = nnx.jit(lambda m, t, mem: m(t, mem))
    step(model, _tokens(1, 6), memory)
    with pytest.raises(Exception, match="KV memory overflow"):
        np.asarray(step(model, _tokens(1, 3), memory))


def test_more_tokens_than_the_context_are_refused():
    cfg, model = _model()
    with pytest.raises(
        ValueError, match=f"exceed the model's context sequence_len={cfg.sequence_len}"
    ):
        model(np.ones((1, cfg.sequence_len + 1), np.int32))


def test_token_ids_may_be_lists_numpy_or_jax():
    _, model = _model()
    want = np.asarray(model(jnp.asarray([[3, 4, 5]], jnp.int32)))
    np.testing.assert_array_equal(np.asarray(model([[3, 4, 5]])), want)
    np.testing.assert_array_equal(np.asarray(model(np.array([[3, 4, 5]], np.int64))), want)


def test_logits_at_unembeds_only_the_positions_asked_for():
    _, model = _model()
    toks = _tokens(2, 9)
    full = np.asarray(model(toks))
    at = jnp.asarray([8, 3], jnp.int32)
    got = np.asarray(model(toks, logits_at=at))
    assert got.shape == (2, full.shape[-1])
    np.testing.assert_allclose(got, full[[0, 1], [8, 3]], rtol=1e-6, atol=1e-6)


# --- JAX's own meshes (Explicit axes), Auto meshes and grok_flax's -----------------------


def _meshes():
    from jax.sharding import AxisType

    auto = (AxisType.Auto,) * 2
    out = []
    for s in ((1, 8), (2, 4)):
        name = f"{s[0]}x{s[1]}"
        out.append(pytest.param(lambda s=s: jax.make_mesh(s, DM), id=f"explicit-{name}"))
        out.append(
            pytest.param(lambda s=s: jax.make_mesh(s, DM, axis_types=auto), id=f"auto-{name}")
        )
        out.append(pytest.param(lambda s=s: make_mesh(*s), id=f"grok_flax-{name}"))
    return out


DM = ("data", "model")


@SLOW  # the fast tier: test_sharding's meshes and test_generate's Explicit 2x4
@pytest.mark.parametrize("mesh_fn", _meshes())
def test_sharded_equals_single_device_on_every_kind_of_mesh(mesh_fn):
    from grok_flax.scale.sharding import create_sharded

    cfg = GrokConfig.tiny(compute_dtype="float32", num_kv_heads=4, num_q_heads=8)
    model = Grok(cfg, rngs=nnx.Rngs(0))
    toks = _tokens(2, 10)
    want = np.asarray(model(toks))
    memory = KVMemory(cfg, 2, 16)
    model(toks[:, :9], memory)
    want_decode = np.asarray(model(toks[:, 9:], memory))

    mesh = mesh_fn()
    sharded = Grok(cfg, rngs=nnx.Rngs(0))
    shard_module(sharded, mesh)
    np.testing.assert_allclose(np.asarray(sharded(toks)), want, rtol=2e-5, atol=2e-5)
    forward = nnx.jit(lambda m, t: m(t))
    np.testing.assert_allclose(np.asarray(forward(sharded, toks)), want, rtol=2e-5, atol=2e-5)
    mem = create_sharded(lambda: KVMemory(cfg, 2, 16), mesh)
    step = nnx.jit(lambda m, t, mem: m(t, mem))
    step(sharded, toks[:, :9], mem)
    np.testing.assert_allclose(
        np.asarray(step(sharded, toks[:, 9:], mem)), want_decode, rtol=2e-5, atol=2e-5
    )
    np.testing.assert_array_equal(np.asarray(mem.step[...]), [10, 10])
