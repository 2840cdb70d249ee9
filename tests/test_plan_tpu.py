"""``plan`` for TPU slices: XLA:TPU through libtpu's deviceless topologies (no TPU needed),
and the whole-model cost figures. The TPU cases skip where libtpu is not installed
(``pip install 'grok_flax[tpu]'``); the message and the CPU path are tested everywhere."""

import importlib.util

import pytest

from grok_flax import GrokConfig
from grok_flax.running.plan import TPU_CHIPS, GiB, plan

HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
    not HAVE_LIBTPU, reason="libtpu not installed (pip install 'grok_flax[tpu]')"
)


@pytest.mark.skipif(HAVE_LIBTPU, reason="libtpu is installed: the missing-libtpu path")
def test_target_without_libtpu_says_what_to_install(capsys):
    from grok_flax.__main__ import main
    from grok_flax.scale.mesh import topology_mesh

    with pytest.raises(RuntimeError, match="needs libtpu"):
        topology_mesh("v5p:2x2x2", 1, 8)
    assert main(["plan", "--config", "tiny", "--target", "v5p:2x2x2", "--mesh", "1x8"]) == 2
    assert "grok_flax[tpu]" in capsys.readouterr().err


def test_moe_tile_is_resolved_for_the_target_not_the_host():
    """A deviceless TPU compile runs with JAX_PLATFORMS=cpu: the programs and the tile-loop
    cost must both use TPU's ``auto_tile`` rule, not the host's."""
    from grok_flax.running.plan import _tile_platform, _with_tile

    cfg = GrokConfig.grok_1()  # 8 experts
    assert _tile_platform("tpu") == "tpu" and _tile_platform("default") is None
    assert _with_tile(cfg, 1024, "tpu").moe_tile == 128  # Grok-1's 512-token chunk
    assert _with_tile(cfg, 1024, "cpu").moe_tile == 64
    assert (
        _with_tile(cfg, 1024, None) is cfg
        and _with_tile(cfg.replace(moe_tile=32), 1024, "tpu").moe_tile == 32
    )


@needs_libtpu
def test_topology_meshes_and_refusals():
    from grok_flax.scale.mesh import topology_mesh

    mesh, how = topology_mesh("v5p:2x2x2", 1, 8)
    assert mesh.shape == {"data": 1, "model": 8} and "torus" in how
    assert mesh.devices.flat[0].device_kind in TPU_CHIPS
    _, how = topology_mesh("v6e:4x4", 2, 8)  # model=8 on a 4×4 torus: two rows
    assert "split physical axes" in how
    with pytest.raises(ValueError, match="must use all of them"):
        topology_mesh("v5p:2x2x2", 1, 4)
    with pytest.raises(ValueError, match="could not describe the TPU topology"):
        topology_mesh("v99:1x1", 1, 1)


@needs_libtpu
def test_tiny_plan_compiles_with_xla_tpu():
    p = plan(GrokConfig.tiny(), (1, 8), context=64, batch=1, prefill_chunk=16, target="v5e:2x4")
    assert p.backend == "tpu" and p.chip == "TPU v5 lite" and p.compiler.startswith("XLA:TPU")
    assert p.device_memory == 16 * GiB  # the chip's HBM by default
    prefill, decode = p.programs
    # TPU layouts pad small arrays to whole (8, 128) tiles: the tiny model's arguments are
    # larger than their bytes (Grok-1's agree to 0.001 %)
    assert prefill.argument >= p.resident + p.tokens
    assert decode.optimal_seconds > 0 and decode.flops > 0 and decode.bytes_accessed > 0
    text = p.report()
    assert "compiled by XLA:TPU" in text and "TPU v5 lite" in text and "FITS" in text


@needs_libtpu
@pytest.mark.slow
def test_whole_model_cost_adds_up_the_layers():
    """fixed + L × layer from 1- and 2-layer compiles predicts the 4-layer compile, and the
    decode step reads little more than the ideal."""
    p = plan(
        GrokConfig.tiny(),
        (1, 8),
        context=64,
        batch=1,
        prefill_chunk=16,
        target="v5p:2x2x2",
        cost=True,
    )
    prefill, decode = p.cost.steps
    for s in (prefill, decode):
        assert s.check[0] == pytest.approx(1.0, abs=0.05)
        assert s.seconds > 0 and s.flops > 0
    assert prefill.moe_loop and prefill.moe_flops > 0
    assert p.cost.roofline_seconds(decode) > 0
    assert "whole-model cost" in p.report()
