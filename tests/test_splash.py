"""``attend_splash`` (JAX's Pallas TPU splash attention kernel) computes ``attend_naive``'s
function.

On this CPU the kernel runs in Pallas's interpret mode (``interpret=True``, the model's
``pallas_interpret``): the same kernel body — its blocks, its online softmax, its block
skipping from the runtime mask — executed as JAX operations. Numbers are judged against an
exact oracle (the same function in float64 NumPy) beside the reference's own error in the
same dtype. The TPU lowering is checked by compiling with XLA:TPU through libtpu's deviceless
topologies (never run) where libtpu is installed.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from grok_flax import Grok, GrokConfig
from grok_flax.attention import attend_naive, attend_splash
from grok_flax.kv_memory import KVMemory

GROK_MULTIPLIER = 0.08838834764831845  # Grok-1's attn_output_multiplier, 1/sqrt(128)


def exact(q, k, v, q_pos, k_pos, k_valid, *, multiplier, cap):
    """``attend_naive``'s function in float64 NumPy (on the inputs as given, rounded or
    not): the oracle. A query that sees no key soft-maxes equal fills: the mean of v."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = np.einsum("btkrh,bskh->bkrts", q, k) * multiplier
    if cap is not None:
        s = cap * np.tanh(s / cap)
    q_pos, k_pos, k_valid = np.asarray(q_pos), np.asarray(k_pos), np.asarray(k_valid)
    seen = (k_pos[:, None, :] <= q_pos[:, :, None]) & k_valid[:, None, :]  # [B, T, S]
    s = np.where(seen[:, None, None], s, -1e30)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return np.einsum("bkrts,bskh->btkrh", w, v)


def prefill_case(dtype, *, B, T, S, K, R, H=128, steps, seed=0):
    """A chunk of T queries per row written at per-row offsets ``steps`` into an S-slot KV
    memory: slots before ``step`` hold earlier tokens, the chunk's own slots follow, the rest
    is empty (k_valid False). Scaled so the logits before the cap reach ±30 and more."""
    ks = jax.random.split(jax.random.key(seed), 3)
    q = (jax.random.normal(ks[0], (B, T, K, R, H)) * 3).astype(dtype)
    k = (jax.random.normal(ks[1], (B, S, K, H)) * 3).astype(dtype)
    v = jax.random.normal(ks[2], (B, S, K, H)).astype(dtype)
    step = jnp.asarray(steps, jnp.int32)
    q_pos = step[:, None] + jnp.arange(T, dtype=jnp.int32)  # [B, T]
    k_pos = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    k_valid = k_pos < step[:, None] + T  # filled slots
    return q, k, v, q_pos, k_pos, k_valid


def errors(args, *, multiplier, cap):
    """Largest |error| against the exact oracle of attend_naive and attend_splash."""
    truth = exact(*args, multiplier=multiplier, cap=cap)
    kw = dict(multiplier=multiplier, cap=cap)
    splash = jax.jit(lambda *a: attend_splash(*a, interpret=True, **kw))(*args)
    assert splash.dtype == args[2].dtype and splash.shape == args[0].shape
    assert bool(jnp.isfinite(splash).all())
    err = {
        name: float(np.abs(np.asarray(out, np.float64) - truth).max())
        for name, out in (("naive", attend_naive(*args, **kw)), ("splash", splash))
    }
    # the oracle itself is right: the reference is within its dtype's reach of it
    assert err["naive"] < (1e-4 if args[0].dtype == jnp.float32 else 0.2), err
    return err


@pytest.mark.parametrize("cap", [30.0, None])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_splash_is_as_exact_as_the_reference(dtype, cap):
    """GQA (R = 3 query heads per KV head), T = 20 and S = 150 (padded to the kernel's 128
    inside), two rows at different offsets into the memory (0 and 37), padding slots in
    the middle of row 1, and three queries of row 0 that see no key at all.

    Tolerance: splash's error against the exact function is at most twice the reference's
    own in the same dtype, plus a floor. The two round in different places: in float32 the
    kernel scales q by the multiplier before q·k (logits up to ~40 before the cap, sharp
    weights: ~1e-5 either way); in bfloat16 the reference rounds q·k and the weights to
    bf16 while the kernel rounds q·multiplier and keeps the weights fp32 (~5e-2 either way,
    outputs of size ~1)."""
    args = prefill_case(jnp.dtype(dtype), B=2, T=20, S=150, K=2, R=3, steps=[0, 37])
    k_valid = args[5].at[1, 40:45].set(False).at[0, :3].set(False)  # row 0: queries 0-2 blind
    args = (*args[:5], k_valid)
    err = errors(args, multiplier=GROK_MULTIPLIER, cap=cap)
    floor = 1e-6 if dtype == "float32" else 2**-8
    assert err["splash"] <= 2 * err["naive"] + floor, err


def test_splash_cap_is_applied():
    """The cap changes this case's answer, and splash follows it: with ``cap=None`` and
    with cap 30 it matches the reference of each (fp32), and the two differ."""
    args = prefill_case(jnp.float32, B=1, T=8, S=8, K=1, R=2, steps=[0])
    kw = dict(multiplier=0.5)  # logits up to ~100 before the cap: the cap bites
    capped = attend_splash(*args, cap=30.0, interpret=True, **kw)
    uncapped = attend_splash(*args, cap=None, interpret=True, **kw)
    assert float(jnp.abs(capped - uncapped).max()) > 0.1
    for cap, got in ((30.0, capped), (None, uncapped)):
        want = attend_naive(*args, cap=cap, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_splash_many_blocks_skipped_and_empty_rows():
    """Several kernel blocks each way (T = 300 -> 3 query blocks of 128, S = 700 -> 3 key
    blocks of 256): row 0 prefills from slot 0 (blocks above the causal diagonal are empty
    and skipped), row 1 continues at slot 300 with padding slots, row 2 holds no token at
    all (every block empty: the kernel would return 0/0; splash returns the reference's
    mean of v)."""
    args = prefill_case(jnp.float32, B=3, T=300, S=700, K=1, R=2, steps=[0, 300, 0])
    k_valid = args[5].at[1, 100:180].set(False).at[2].set(False)
    args = (*args[:5], k_valid)
    err = errors(args, multiplier=GROK_MULTIPLIER, cap=30.0)
    assert err["splash"] <= 2 * err["naive"] + 1e-6, err


def test_splash_gradients_match_the_reference():
    """The kernel's backward (dq, dk, dv kernels on the same runtime mask) == autodiff of
    the reference (fp32; relative to the gradients' size), blind queries included."""
    args = prefill_case(jnp.float32, B=2, T=20, S=150, K=2, R=2, steps=[0, 37])
    args = (*args[:5], args[5].at[0, :3].set(False))
    kw = dict(multiplier=GROK_MULTIPLIER, cap=30.0)

    def grads(attend):
        def loss(q, k, v):
            return (attend(q, k, v, *args[3:], **kw) ** 2).sum()

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args[:3])

    got = grads(lambda *a, **k: attend_splash(*a, interpret=True, **k))
    for g, w in zip(got, grads(attend_naive), strict=True):
        scale = float(jnp.abs(w).max())
        np.testing.assert_allclose(g, w, atol=2e-5 * scale)


def test_splash_runs_per_shard_without_communication():
    """Under a (data=2, model=2) mesh the kernel runs inside a shard_map (rows over data,
    KV heads over model): same result as one device, and the compiled program moves
    nothing between devices."""
    from grok_flax.scale.mesh import make_mesh

    mesh = make_mesh(2, 2)
    args = prefill_case(jnp.float32, B=2, T=20, S=150, K=2, R=3, steps=[0, 37])
    kw = dict(multiplier=GROK_MULTIPLIER, cap=30.0)
    heads, rows = P("data", None, "model"), P("data")
    placed = [
        jax.device_put(a, NamedSharding(mesh, s))
        for a, s in zip(args, (heads, heads, heads, rows, rows, rows), strict=True)
    ]
    f = jax.jit(lambda *a: attend_splash(*a, interpret=True, **kw))
    with jax.set_mesh(mesh):
        assert "shard_map" in str(jax.make_jaxpr(f)(*placed))
        got = f(*placed)
        hlo = f.lower(*placed).compile().as_text()
    assert not any(c in hlo for c in ("all-gather", "all-reduce", "all-to-all", "collective"))
    assert got.sharding.spec == heads
    np.testing.assert_allclose(got, attend_splash(*args, interpret=True, **kw), rtol=0, atol=0)


def _pallas_calls(model, tokens, memory):
    """How many Pallas kernels the model's forward pass stages (one layer: scanned)."""
    graph, state = nnx.split((model, memory))

    def forward(state):
        m, mem = nnx.merge(graph, state)
        return m(tokens, mem, check_inputs=False)

    return str(jax.make_jaxpr(forward)(state)).count("pallas_call")


def test_model_dispatch():
    """attention_impl="splash": the kernel for a prefill chunk, not for one token per row
    (decode stays on the naive single pass); "auto" on this CPU is the chunked path."""
    cfg = GrokConfig.tiny(key_size=128, attention_impl="splash", pallas_interpret=True)

    def abstract(cfg):  # shapes only: tracing needs no parameter values
        return nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0)))

    model, memory = abstract(cfg), nnx.eval_shape(lambda: KVMemory(cfg, 1, 16))
    assert _pallas_calls(model, jnp.ones((1, 4), jnp.int32), memory) == 1
    assert _pallas_calls(model, jnp.ones((1, 1), jnp.int32), memory) == 0
    auto = abstract(cfg.replace(attention_impl="auto"))
    assert _pallas_calls(auto, jnp.ones((1, 4), jnp.int32), memory) == 0


def test_model_prefill_splash_equals_chunked():
    """A tiny Grok with the kernel's head size (key_size 128) prefills two chunks into a KV
    memory — the second at per-row offsets 10 and 6 (row 1's first chunk was right-padded,
    lengths=[10, 6]) — and gives the chunked path's logits (fp32, same parameters)."""
    base = GrokConfig.tiny(key_size=128, compute_dtype="float32", attention_impl="chunked")
    splash = base.replace(attention_impl="splash", pallas_interpret=True)
    tokens = jax.random.randint(jax.random.key(5), (2, 20), 3, base.vocab_size)
    first, second = tokens[:, :10].at[1, 6:].set(0), tokens[:, 10:]

    @nnx.jit  # one compile per model: both chunks have the same shapes
    def prefill(model, memory, chunk, lengths):
        return model(chunk, memory, lengths=lengths)

    chunked = Grok(base, rngs=nnx.Rngs(0))
    # the same parameters under the splash config (its graph: shapes only, nothing computed)
    graph = nnx.graphdef(nnx.eval_shape(lambda: Grok(splash, rngs=nnx.Rngs(0))))
    models = {"chunked": chunked, "splash": nnx.merge(graph, nnx.state(chunked))}
    logits = {}
    for name, model in models.items():
        memory = KVMemory(model.cfg, 2, 32)
        a = prefill(model, memory, first, jnp.array([10, 6]))
        b = prefill(model, memory, second, jnp.array([10, 10]))
        assert memory.step[...].tolist() == [20, 16]
        logits[name] = np.concatenate([np.asarray(a), np.asarray(b)], axis=1)
    scale = np.abs(logits["chunked"]).max()
    np.testing.assert_allclose(logits["splash"], logits["chunked"], rtol=0, atol=1e-5 * scale)


HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.skipif(not HAVE_LIBTPU, reason="libtpu not installed (pip install 'grok_flax[tpu]')")
def test_splash_compiles_for_a_tpu_slice_per_shard():
    """XLA:TPU (deviceless v5p:2x2x2, model=8; compiled, never run) lowers the kernel as one
    Mosaic custom call per device on that device's KV head, with no collective: one query
    chunk of 128 against 512 memory slots at a runtime offset."""
    from grok_flax.scale.mesh import topology_mesh

    mesh, _ = topology_mesh("v5p:2x2x2", 1, 8)
    B, T, S, K, R, H = 1, 128, 512, 8, 2, 128

    def sds(shape, dtype, spec):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    heads = P(None, None, "model")

    def f(q, k, v, step):
        q_pos = step[:, None] + jnp.arange(T, dtype=jnp.int32)
        k_pos = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
        return attend_splash(q, k, v, q_pos, k_pos, k_pos < q_pos[:, -1:] + 1, multiplier=0.1)

    kv = sds((B, S, K, H), jnp.bfloat16, heads)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        lowered = jax.jit(f, out_shardings=NamedSharding(mesh, heads)).lower(
            sds((B, T, K, R, H), jnp.bfloat16, heads), kv, kv, sds((B,), jnp.int32, P())
        )
    hlo = lowered.compile().as_text()
    assert 'custom_call_target="tpu_custom_call"' in hlo
    assert "bf16[2,128,128]" in hlo  # the kernel's q: this device's 2 query heads
    assert not any(c in hlo for c in ("all-gather", "all-reduce", "all-to-all", "collective"))
