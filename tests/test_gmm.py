"""moe_impl="gmm": tokamax's Pallas TPU grouped matmul, reading int8, computes the oracle's MoE.

The kernel runs here in Pallas's interpret mode (``pallas_interpret=True``: its body as JAX
operations on the CPU), so these tests check what it computes — the sort into expert groups,
the int8 weights and their per-block scales read inside the kernel, the padding rows, the
experts no token chose, and the per-device program on a mesh (``shard_map``, ``linear_1``'s
partial sums reduced over "model") — not its speed on a TPU. Every non-expert dimension of
the kernel must be ≥ 128, hence model width 256 and expert width 512 (128 per device over
model=4) or 1024 (model=8)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import Grok, GrokConfig
from grok_flax.moe import MoE, dense_dispatch, gmm_dispatch, gmm_tile, gmm_unsupported
from grok_flax.quant import quantize
from grok_flax.router import Router
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import shard_module

pytest.importorskip("tokamax", reason="the `kernels` extra (installed by .[dev])")

E, K, D, F = 4, 2, 256, 512


def _weights(quantized: bool, blocks: int, ffn: int = F):
    ks = jax.random.split(jax.random.key(7), 3)
    w = jax.random.normal(ks[0], (E, D, ffn)) * D**-0.5
    wv = jax.random.normal(ks[1], (E, D, ffn)) * D**-0.5
    w1 = jax.random.normal(ks[2], (E, ffn, D)) * ffn**-0.5
    if not quantized:
        return w, wv, w1
    return quantize(w, 1), quantize(wv, 1), quantize(w1, blocks)


def _routing(N: int):
    """Uneven routing over E=4 experts, two distinct experts per token, expert 1 never
    chosen: 0 and 3 take most pairs, 2 a few."""
    first = jnp.where(jnp.arange(N) % 5 == 0, 2, 0)
    second = jnp.where(jnp.arange(N) % 3 == 0, 2, 3)
    second = jnp.where(second == first, 3, second)
    return jnp.stack([first, second], axis=1)  # [N, 2]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


GMM = jax.jit(
    lambda x, e, w, wv, w1, tile=None: gmm_dispatch(x, e, w, wv, w1, E, True, tile),
    static_argnames="tile",
)


@pytest.mark.parametrize(
    "quantized, blocks",
    [(True, 4), pytest.param(True, 1, marks=pytest.mark.slow), (False, 1)],
    ids=["int8-G4", "int8-G1", "float"],
)
def test_gmm_f32_equals_the_reference(quantized, blocks):
    """f32: the same products, summed in another order (the kernel accumulates contraction
    tiles, and applies the int8 scales to the f32 accumulator, exactly: an int8 times a bf16
    scale fits f32's mantissa). Rounding only: relative 1e-5 of the largest output. 37
    tokens -> 74 pairs in 32-row tiles (``gmm_tile``), padded to the kernel's 128 rows,
    expert 1 with none; G=4 scale blocks of 128 rows along linear_1's 512-row contraction,
    all four inside its one 512-row contraction tile (the kernel's per-block loop)."""
    x = jax.random.normal(jax.random.key(1), (37, D))
    experts = _routing(37)
    assert int(jnp.sum(experts == 1)) == 0
    weights = _weights(quantized, blocks)
    want = dense_dispatch(x, experts, *weights, E)
    got = GMM(x, experts, *weights)
    assert got.shape == want.shape == (74, D) and got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("quantized", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_gmm_bf16_is_as_close_to_exact_as_the_release(quantized):
    """bf16 activations: the release rounds ``int8 · scale`` to bf16 before its dot; the
    kernel keeps the int8 and scales the f32 accumulator, so the two differ by roundings,
    not bit for bit. The check that can fail: against the exact (f32) oracle on the same
    bf16 inputs, the kernel's error must be no larger than twice the release's own bf16
    error (measured: 0.0024 vs 0.0038 relative, int8 G=4), and below 2^-7 relative."""
    x = jax.random.normal(jax.random.key(2), (37, D)).astype(jnp.bfloat16)
    experts = _routing(37)
    weights = _weights(quantized, 4)
    exact = dense_dispatch(x.astype(jnp.float32), experts, *weights, E)
    release = dense_dispatch(x, experts, *weights, E)  # the reference's bf16 arithmetic
    got = GMM(x, experts, *weights)
    assert got.dtype == release.dtype == jnp.float32
    assert _rel(got, exact) <= max(2 * _rel(release, exact), 1e-3)
    assert _rel(got, exact) < 2**-7


def test_gmm_decoding_tiles_and_tile_checks():
    """One token (2 pairs): 16-row tiles (``gmm_tile``) inside the kernel's 128-row minimum;
    a tile that is not a multiple of 16 is refused, and so is compiling the kernel for the
    CPU without interpreting it."""
    assert gmm_tile(2, 8) == 16 and gmm_tile(1024, 8) == 128 and gmm_tile(16384, 8) == 512
    x = jax.random.normal(jax.random.key(3), (1, D))
    experts = jnp.array([[3, 0]])
    weights = _weights(True, 4)
    want = dense_dispatch(x, experts, *weights, E)
    np.testing.assert_allclose(GMM(x, experts, *weights), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 16"):
        gmm_dispatch(x, experts, *weights, E, True, 24)
    with pytest.raises(ValueError, match="Pallas TPU kernel and this program is for cpu"):
        gmm_dispatch(x, experts, *weights, E)  # not interpreted, not a TPU


def _module(widening=3.0, **overrides):
    cfg = GrokConfig.small(
        num_experts=E,
        widening_factor=widening,
        compute_dtype="float32",
        pallas_interpret=True,
        **overrides,
    )
    rngs = nnx.Rngs(0)
    moe, router = MoE(cfg, rngs=rngs), Router(cfg.emb_size, E, K, rngs=rngs)
    return cfg, moe, router


def test_moe_gmm_equals_dense_through_the_module():
    """``MoE`` with ``moe_impl="gmm"`` == ``impl="dense"`` (router's top-2 over 4 experts,
    18 tokens); G=8 blocks of 64 rows on linear_1, two per 128-row contraction tile.
    (One decoded token: ``test_gmm_decoding_tiles_and_tile_checks``.)"""
    cfg, moe, router = _module(moe_impl="gmm")
    assert (cfg.emb_size, cfg.ffn_size, cfg.moe_out_scale_blocks) == (256, 512, 8)
    x = jax.random.normal(jax.random.key(4), (2, 9, cfg.emb_size))
    gates, experts, _ = router(x)
    got = nnx.jit(lambda m, *a: m(*a))(moe, x, gates, experts)
    want = moe(x, gates, experts, impl="dense")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gmm_refuses_a_model_narrower_than_the_kernel():
    cfg = GrokConfig.tiny(compute_dtype="float32")
    moe = MoE(cfg, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 3, cfg.emb_size))
    gates, experts = jnp.full((1, 3, 2), 0.5), jnp.zeros((1, 3, 2), jnp.int32)
    with pytest.raises(ValueError, match="at least 128, got emb_size=32"):
        moe(x, gates, experts, impl="gmm")
    mesh = make_mesh(1, 8)
    assert "512 split over model=8" in gmm_unsupported(256, 512, mesh)
    assert gmm_unsupported(256, 1024, mesh) is None


def _collectives(compiled_text: str) -> list[str]:
    return re.findall(
        r"\b(all-gather|all-reduce|reduce-scatter|all-to-all)(?:-start)?\(", compiled_text
    )


@pytest.mark.parametrize(
    "data, model",
    [(1, 8), pytest.param(2, 4, marks=pytest.mark.slow)],
    ids=["1x8", "2x4"],
)
def test_gmm_on_a_mesh_runs_per_device(data, model):
    """Under a (data, model) mesh the kernel runs inside ``shard_map`` on each device's
    F-slice of the experts (linear_1's G=8 scale blocks: one per device at model=8, two at
    model=4); the result equals the single-device oracle, and with data=1 the program's one
    collective is the all-reduce over "model" (no expert is gathered). With data=2 the
    weights' model width, split over "data" by the rules, is gathered for the call."""
    cfg, moe, router = _module(widening=6.0 if model == 8 else 3.0)
    x = jax.random.normal(jax.random.key(5), (2, 9, cfg.emb_size))
    gates, experts, _ = router(x)
    want = moe(x, gates, experts, impl="dense")
    mesh = make_mesh(data, model)
    shard_module(moe, mesh)

    with jax.set_mesh(mesh):  # the mesh current, as Grok's forward pass makes it
        run = jax.jit(lambda *a: moe(*a, impl="gmm")).lower(x, gates, experts).compile()
        np.testing.assert_allclose(run(x, gates, experts), want, rtol=1e-5, atol=1e-5)
    if data == 1:
        assert _collectives(run.as_text()) == ["all-reduce"]


@pytest.mark.slow
def test_grok_with_gmm_on_an_explicit_mesh_equals_one_device():
    """The whole model (one layer) with ``moe_impl="gmm"`` on a mesh with Explicit axes
    (``jax.make_mesh``: the forward pass runs under ``axes.run_on_mesh``) == the sparse
    dispatch on one device."""
    cfg = GrokConfig.small(
        num_layers=1,
        num_experts=E,
        widening_factor=3.0,
        compute_dtype="float32",
        pallas_interpret=True,
        moe_impl="gmm",
    )
    tokens = jax.random.randint(jax.random.key(6), (2, 7), 1, cfg.vocab_size)
    want = Grok(cfg.replace(moe_impl="sparse"), rngs=nnx.Rngs(0))(tokens)
    mesh = jax.make_mesh(
        (2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    model = shard_module(Grok(cfg, rngs=nnx.Rngs(0)), mesh)
    got = nnx.jit(lambda m, t: m(t))(model, tokens)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
