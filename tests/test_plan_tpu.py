"""``plan`` for TPU slices: XLA:TPU through libtpu's deviceless topologies (no TPU needed),
and the whole-model cost figures. libtpu is in the dev set-up, so these run in CI; where it
is missing the TPU cases skip, and the missing-libtpu message is tested everywhere by
hiding it. Everything here is compiled, never run."""

import importlib.util
import re
import time

import pytest

from grok_flax import GrokConfig
from grok_flax.running.plan import TPU_CHIPS, GiB, attention_block_pairs, plan

HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
    not HAVE_LIBTPU, reason="libtpu not installed (pip install 'grok_flax[tpu]')"
)


def test_target_without_libtpu_says_what_to_install(capsys, monkeypatch):
    """Without libtpu, --target exits 2 naming the extra to install (its absence simulated:
    libtpu is in the dev set-up)."""
    from grok_flax.__main__ import main
    from grok_flax.scale.mesh import topology_mesh

    find_spec = importlib.util.find_spec

    def without_libtpu(name, *args, **kwargs):
        return None if name == "libtpu" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_libtpu)
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


def test_attention_block_pairs_counts_what_a_full_prompt_computes():
    # 8192-slot memory, 512-token calls, 512-blocks: call i sees key blocks 0..i
    assert attention_block_pairs(8192, 512, 512) == pytest.approx(sum(range(1, 17)) / 16)
    # the whole prompt in one call: query block j sees key blocks 0..j
    assert attention_block_pairs(8192, 8192, 512) == sum(range(1, 17))
    # smaller blocks than calls: 2 query blocks per call, call 0 sees 1 + 2 key blocks
    assert attention_block_pairs(64, 32, 16) == pytest.approx(((1 + 2) + (3 + 4)) / 2)


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
def test_auto_algorithms_are_resolved_for_the_target():
    """'auto' means splash/gmm on TPU (GrokConfig.for_platform("tpu")), whatever the host;
    an explicit choice passes through and the report names it."""
    cfg = GrokConfig.tiny(attention_impl="auto", moe_impl="auto")
    p = plan(cfg, (1, 8), context=64, prefill_chunk=16, compile=False)  # for the CPU
    assert (p.config.attention_impl, p.config.moe_impl) == ("chunked", "sparse")
    p = plan(
        GrokConfig.tiny(),
        (1, 8),
        context=64,
        prefill_chunk=16,
        target="v5e:2x4",
        attention_impl="naive",
        moe_impl="dense",
    )
    assert (p.config.attention_impl, p.config.moe_impl) == ("naive", "dense")
    assert "attention: naive" in p.report() and "MoE: dense" in p.report()
    wide = GrokConfig.tiny(emb_size=256, key_size=128, attention_impl="auto", moe_impl="auto")
    resolved = wide.for_platform("tpu")
    assert (resolved.attention_impl, resolved.moe_impl) == ("splash", "gmm")
    # narrower than the kernels' 128 lanes: the XLA paths, on TPU too
    resolved = GrokConfig.tiny(attention_impl="auto", moe_impl="auto").for_platform("tpu")
    assert (resolved.attention_impl, resolved.moe_impl) == ("chunked", "sparse")


_COLLECTIVE = re.compile(
    r"= .*? (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
    r'.*?op_name="([^"]+)"'
)


def _per_layer_collectives(text):
    """(opcode, op_name) of every collective in compiled HLO text (tuple-shaped ones too:
    XLA:TPU all-reduces the k experts' partial outputs together), and those inside the
    layer loop as (opcode, block)."""
    found = [m.groups() for m in map(_COLLECTIVE.search, text.splitlines()) if m]
    per_layer = sorted(
        (op, re.sub(r".*/while/body/(attention_block|moe_block)/.*", r"\1", name))
        for op, name in found
        if "/decoder/while/body/" in name
    )
    return found, per_layer


@needs_libtpu
def test_grok_1_64_layers_compile_for_v5p_fit_and_collectives_per_layer():
    """Grok-1's 64 layers (scanned), context 8192, batch 1, compiled by XLA:TPU for a v5p-8
    slice (mesh 1×8): the peak fits a chip's HBM, and the only collectives inside the layer
    loop are tensor parallelism's all-reduces: one after attention's output projection, one
    after the MoE."""
    t0 = time.perf_counter()
    p = plan("grok-1", (1, 8), context=8192, batch=1, target="v5p:2x2x2")
    seconds = time.perf_counter() - t0
    assert p.fits() and p.peak < 45e9  # ~40.8 GB of a 95 GiB chip
    assert p.weight_bytes == pytest.approx(39.846e9, rel=1e-3)
    prefill, decode = (m.compiled.as_text() for m in p.programs)
    found, per_layer = _per_layer_collectives(decode)
    assert per_layer == [("all-reduce", "attention_block"), ("all-reduce", "moe_block")], found
    found, per_layer = _per_layer_collectives(prefill)
    assert per_layer == [("all-reduce", "attention_block"), ("all-reduce", "moe_block")], found
    # 'auto' on TPU: the Pallas kernels (splash attention, gmm MoE) in the prefill, run per
    # device under shard_map: they add no collective of their own
    assert "attention: splash" in p.report() and "MoE: auto" not in p.report()
    assert "prefill gmm" in p.report() and "decode gather" in p.report()
    assert prefill.count("tpu_custom_call") >= 4  # splash + gmm's three grouped matmuls
    # 44 s on the 2-core CI machine at load 4 (both programs, XLA:TPU)
    assert seconds < 90, f"{seconds:.0f} s to compile Grok-1 for v5p"


@needs_libtpu
@pytest.mark.slow
def test_whole_model_cost_adds_up_against_an_unrolled_compile():
    """rest + L × layer (a layer compiled alone, the rest from a 1-layer model) predicts an
    unrolled compile of the whole small model, each layer with its own weights: flops to
    1 %. Bytes and cost-model time: the unrolled program also updates and slices its
    stacked [L, ...] KV memory per layer (charged whole; the serving program, a scan,
    updates it in place), so it may only cost *more*, here 9-15 % — a layer missing from
    the sum would be 33 %. The loops a layer's compile counts once (MoE tiles, attention
    blocks) are added on top."""
    cfg = GrokConfig.small(num_layers=4)
    p = plan(cfg, (1, 8), context=128, batch=1, prefill_chunk=64, target="v5p:2x2x2",
             cost=True, check_layers=4)  # fmt: skip
    prefill, decode = p.cost.steps
    for s in (prefill, decode):
        assert s.check_layers == cfg.num_layers
        assert s.check[0] == pytest.approx(1.0, abs=0.01)
        assert 0.99 < s.check[1] < 1.2 and 0.99 < s.check[2] < 1.2
        assert s.seconds > 0 and s.flops > s.ideal_flops * 0.5
    kinds = [t.what.split(":")[0] for t in prefill.loops]
    assert kinds == ["MoE tiles", "attention blocks"] and not decode.loops
    loops = sum(t.extra * t.flops for t in prefill.loops)
    assert loops > 0 and prefill.flops == pytest.approx(
        prefill.fixed_flops + cfg.num_layers * (prefill.layer_flops + loops)
    )
    assert p.cost.roofline_seconds(decode) > 0
    assert "whole-model cost" in p.report() and "one layer alone" in p.report()
