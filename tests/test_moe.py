import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import GrokConfig
from grok_flax.moe import MoE
from grok_flax.router import Router


def _moe(E, k, quantized=True, tile=8):
    cfg = GrokConfig.tiny(
        num_experts=E,
        num_selected_experts=k,
        quantized=quantized,
        compute_dtype="float32",
        moe_tile=tile,
    )
    rngs = nnx.Rngs(E * 10 + k)
    return cfg, MoE(cfg, rngs=rngs), Router(cfg.emb_size, E, k, rngs=rngs)


@pytest.mark.parametrize(
    "E", [4, pytest.param(8, marks=pytest.mark.slow), pytest.param(16, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize(
    "B, T", [(1, 1), (1, 7), (3, 5), pytest.param(2, 40, marks=pytest.mark.slow)]
)
def test_sparse_equals_dense(E, k, B, T):
    cfg, moe, router = _moe(E, k)
    x = jax.random.normal(jax.random.key(B * T), (B, T, cfg.emb_size))
    gates, experts, _ = router(x)
    dense = moe(x, gates, experts, impl="dense")
    for impl in ("sparse", "tiled", "gather", "ragged"):
        np.testing.assert_allclose(
            moe(x, gates, experts, impl=impl), dense, rtol=2e-5, atol=2e-5, err_msg=impl
        )


def test_float_weights_and_decode_equals_prefill():
    cfg, moe, router = _moe(8, 2, quantized=False)
    x = jax.random.normal(jax.random.key(0), (2, 9, cfg.emb_size))
    gates, experts, _ = router(x)
    prefill = moe(x, gates, experts)  # tiled path (36 pairs > 8 experts)
    for t in range(9):  # one token at a time: gather path
        one = moe(x[:1, t : t + 1], gates[:1, t : t + 1], experts[:1, t : t + 1])
        np.testing.assert_allclose(one[0, 0], prefill[0, t], rtol=2e-5, atol=2e-5)


def test_router_gates_are_not_renormalised():
    _, _, router = _moe(8, 2)
    x = jax.random.normal(jax.random.key(1), (1, 6, 32))
    gates, experts, probs = router(x)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert bool(jnp.all(gates.sum(-1) < 1.0))  # raw top-2 probabilities
    np.testing.assert_allclose(jnp.take_along_axis(probs, experts, -1), gates)
    assert probs.dtype == jnp.float32


def test_tiled_dispatch_skips_unrouted_experts():
    # All tokens to one expert: still equal to dense.
    cfg, moe, _ = _moe(8, 1)
    x = jax.random.normal(jax.random.key(2), (1, 20, cfg.emb_size))
    experts = jnp.full((1, 20, 1), 5, jnp.int32)
    gates = jnp.full((1, 20, 1), 0.7)
    np.testing.assert_allclose(
        moe(x, gates, experts, impl="tiled"),
        moe(x, gates, experts, impl="dense"),
        rtol=2e-5,
        atol=2e-5,
    )


@pytest.mark.parametrize("quantized", [True, False])
def test_ragged_grouped_matmul_equals_dense(quantized):
    # the accelerator backend (lax.ragged_dot); G = 8 scale blocks on linear_1 when quantized
    cfg, moe, router = _moe(8, 2, quantized=quantized)
    x = jax.random.normal(jax.random.key(3), (2, 11, cfg.emb_size))
    gates, experts, _ = router(x)
    dense = moe(x, gates, experts, impl="dense")
    ragged = nnx.jit(lambda m, x, g, e: m(x, g, e, impl="ragged"))(moe, x, gates, experts)
    np.testing.assert_allclose(ragged, dense, rtol=2e-5, atol=2e-5)
    if quantized:
        assert moe.linear_1.get_value().blocks == cfg.moe_out_scale_blocks > 1


def test_auto_tile_per_platform_and_config_validation():
    from grok_flax.moe import auto_tile

    assert auto_tile(4096, 8, "cpu") == 256 and auto_tile(400, 8, "cpu") == 64  # mean / 2
    assert auto_tile(4096, 8, "gpu") == 512  # mean rows per expert
    assert auto_tile(16384, 8, "gpu") == 1024 and auto_tile(16, 8, "gpu") == 256
    assert GrokConfig.grok_1().moe_tile == "auto"
    for bad in (0, -64, "big", 1.5):
        with pytest.raises(ValueError, match="moe_tile"):
            GrokConfig.tiny(moe_tile=bad)


def test_auto_tile_on_tpu_follows_the_mean_rows_per_expert_down_to_128():
    from grok_flax.moe import auto_tile

    # Grok-1's 512-token prefill chunk: 1024 pairs over 8 experts, 128 rows each — one
    # 128-row tile per expert under balanced routing, not half of a 256-row one
    assert auto_tile(512 * 2, 8, "tpu") == 128 and auto_tile(16, 8, "tpu") == 128
    assert auto_tile(2048 * 2, 8, "tpu") == 512 and auto_tile(1 << 20, 8, "tpu") == 1024
    assert auto_tile(512 * 2, 8, "gpu") == 256  # the H200-measured GPU rule is unchanged
    assert auto_tile(512 * 2, 8, "cpu") == 64


def test_profile_scope_names_the_dispatch_that_runs():
    cfg, moe, router = _moe(8, 2)
    for T, want in ((16, "experts_tiled"), (1, "experts_gather")):
        x = jax.random.normal(jax.random.key(T), (1, T, cfg.emb_size))
        gates, experts, _ = router(x)
        text = (
            jax.jit(lambda x, g, e: moe(x, g, e)).lower(x, gates, experts).as_text(debug_info=True)
        )
        assert want in text and "experts_sparse" not in text
