"""The maintained-kernel paths (tokamax) compute the oracles' function.

On this CPU tokamax runs its XLA implementation, so these tests prove the wiring — the int8
weights handed over as a ``qwix.QArray`` with our ``[E, G, out]`` scales, the grouped matmul
per expert, GQA head order, the soft cap, the masks — not the GPU/TPU kernels' speed
(``benchmarks/bench_accelerator.py`` measures those where an accelerator is lent)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import Grok, GrokConfig
from grok_flax.attention import attend_naive, attend_tokamax
from grok_flax.moe import MoE
from grok_flax.router import Router

pytest.importorskip("tokamax", reason="the `kernels` extra (installed by .[dev])")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("blocks", [1, 4])
def test_tokamax_moe_equals_the_reference(dtype, blocks):
    """Sparse grouped matmuls reading int8 == every expert on every copy (the release's
    algorithm): same dequantization dtype, same f32 tail; only the order of summation
    differs (f32: 1e-5; bf16: within one rounding of the output)."""
    cfg = GrokConfig.tiny(compute_dtype=dtype, num_experts=8, moe_out_scale_blocks=blocks)
    rngs = nnx.Rngs(0)
    moe, router = MoE(cfg, rngs=rngs), Router(cfg.emb_size, 8, 2, rngs=rngs)
    x = jax.random.normal(jax.random.key(1), (3, 20, cfg.emb_size)).astype(cfg.dtype)
    gates, experts, _ = router(x)
    want = moe(x, gates, experts, impl="dense")
    got = jax.jit(lambda x, g, e: moe(x, g, e, impl="tokamax"))(x, gates, experts)
    assert got.dtype == want.dtype
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if dtype == "float32":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(got, want, rtol=2**-7, atol=2**-8 * np.abs(want).max())


def test_tokamax_moe_float_weights_and_an_idle_expert():
    cfg = GrokConfig.tiny(compute_dtype="float32", quantized=False, num_experts=4)
    rngs = nnx.Rngs(0)
    moe = MoE(cfg, rngs=rngs)
    x = jax.random.normal(jax.random.key(2), (1, 6, cfg.emb_size))
    experts = jnp.array([[[0, 2]] * 6])  # experts 1 and 3 get no rows
    gates = jnp.full((1, 6, 2), 0.5)
    np.testing.assert_allclose(
        moe(x, gates, experts, impl="tokamax"),
        moe(x, gates, experts, impl="dense"),
        rtol=1e-6,
        atol=1e-6,
    )


def _attention_case(dtype, B=2, T=12, K=2, R=3, H=8):
    ks = jax.random.split(jax.random.key(3), 3)
    q = (jax.random.normal(ks[0], (B, T, K, R, H)) * 3).astype(dtype)
    k = (jax.random.normal(ks[1], (B, T, K, H)) * 3).astype(dtype)
    v = jax.random.normal(ks[2], (B, T, K, H)).astype(dtype)
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    valid = jnp.arange(T)[None] < jnp.array([[T], [7]])  # row 1: 5 padding tokens
    return q, k, v, pos, pos, valid


@pytest.mark.slow
def test_tokamax_attention_equals_naive_fp32():
    """GQA head order, 30·tanh(x/30) on the scaled logits, causal + padding masks; padded
    query rows stay finite."""
    args = _attention_case(jnp.float32)
    kw = dict(multiplier=0.5, cap=30.0)
    want = attend_naive(*args, **kw)
    got = jax.jit(lambda *a: attend_tokamax(*a, **kw))(*args)
    assert bool(jnp.isfinite(got).all())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the cap matters here: without it the result is different
    uncapped = attend_naive(*args, multiplier=0.5, cap=1e6)
    assert float(jnp.abs(uncapped - want).max()) > 1e-3


def test_tokamax_attention_bf16_within_bf16_rounding():
    """In bf16 the kernel keeps the soft-maxed weights in f32 where the reference rounds them
    to bf16: both stay as close to the f32 result as bf16 allows."""
    args = _attention_case(jnp.bfloat16)
    kw = dict(multiplier=0.5, cap=30.0)
    truth = attend_naive(
        *[a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a for a in args], **kw
    )
    valid = np.asarray(args[5])[:, :, None, None, None]
    err = {
        name: float(
            np.abs(
                np.where(valid, np.asarray(f(*args, **kw), np.float32) - np.asarray(truth), 0)
            ).max()
        )
        for name, f in (("naive", attend_naive), ("tokamax", attend_tokamax))
    }
    assert err["tokamax"] <= 2 * err["naive"] + 0.02, err


def test_model_runs_on_tokamax_paths():
    """A whole model with both tokamax paths == the default paths (fp32, prefill + decode)."""
    base = GrokConfig.tiny(compute_dtype="float32")
    fast = GrokConfig.tiny(compute_dtype="float32", moe_impl="tokamax", attention_impl="tokamax")
    model = Grok(base, rngs=nnx.Rngs(0))
    other = Grok(fast, rngs=nnx.Rngs(0))
    tokens = jnp.array([[5, 17, 42, 9, 3, 77], [8, 1, 0, 0, 0, 0]])
    np.testing.assert_allclose(other(tokens), model(tokens), rtol=2e-5, atol=2e-5)
