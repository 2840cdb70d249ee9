"""The memory plan: exact per-device weights/KV bytes, and AOT-compiled programs (tiny)."""

import pytest

from grok_flax import GrokConfig
from grok_flax.running.plan import (
    DEVICES,
    GB,
    GiB,
    analytic_weight_bytes,
    plan,
    resolve_device_memory,
)


def test_grok_1_per_device_on_1x8_analytic():
    """Done-when of the plan: ≈39.8 GB (≈37.1 GiB) of weights, ≈0.27 GB of KV per device."""
    p = plan(
        GrokConfig.grok_1(),
        {"data": 1, "model": 8},
        context=8192,
        batch=1,
        device_memory="h100",
        compile=False,
    )
    assert p.weight_bytes == pytest.approx(39.8e9, rel=0.005)
    assert p.weight_bytes / GiB == pytest.approx(37.1, rel=0.005)
    assert p.weights["int8 linears"] * 8 == p.weights_whole["int8 linears"]  # all split 8
    assert p.weights["embedding"] * 8 == 131072 * 6144 * 4  # fp32, columns over 8
    assert p.kv == 2 * GiB // 8 + 4  # bf16 k, v for 8192 tokens, split by kv head; + step
    assert p.weights_whole == analytic_weight_bytes(p.config)
    assert p.fits() is True
    assert p.config.compute_dtype == "bfloat16"


@pytest.mark.parametrize("data, mdl, kv_split", [(2, 4, 4), (8, 1, 1), (64, 8, 8)])
def test_grok_1_other_meshes_analytic(data, mdl, kv_split):
    # 64×8 = 512 devices: an abstract mesh, no devices needed without compiling
    p = plan("grok-1", (data, mdl), compile=False)
    if data * mdl == 8:  # data splits the weights' model width D as model splits heads/F
        assert p.weights["int8 linears"] * 8 == p.weights_whole["int8 linears"]
    assert p.kv == (p.kv_whole - 4) // kv_split + 4  # step [1] is replicated
    assert "fits" in p.report()


@pytest.mark.parametrize("quantized", [True, False])
def test_analytic_formula_matches_the_model(quantized):
    cfg = GrokConfig.tiny(quantized=quantized)
    p = plan(cfg, "data=1,model=1", context=16, compile=False)
    assert p.weights == p.weights_whole == analytic_weight_bytes(p.config)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("shape", marks=pytest.mark.slow),
        "explicit",
        pytest.param("grok_flax", marks=pytest.mark.slow),
    ],
)
def test_tiny_plan_compiles_on_a_mesh(kind):
    import jax

    from grok_flax.scale.mesh import make_mesh

    cfg = GrokConfig.tiny()
    mesh = {
        "shape": (2, 4),
        "explicit": jax.make_mesh((2, 4), ("data", "model")),
        "grok_flax": make_mesh(2, 4),
    }[kind]
    p = plan(cfg, mesh, context=64, batch=2, device_memory="1GiB", prefill_chunk=16)
    prefill, decode = p.programs
    # generate's own prefill step: tokens, lengths, the kept bf16 logits, end_row, end_idx
    inputs = 2 * 16 * 4 + 2 * 4 + 2 * cfg.vocab_size * 2 + 2 * 1 + 2 * 4
    assert p.prefill_chunk == 16 and p.tokens == inputs // 2  # rows split over data=2
    assert prefill.argument == pytest.approx(p.resident + p.tokens, rel=0.01)
    assert decode.argument == pytest.approx(p.resident, rel=0.01)
    assert prefill.alias >= p.kv - 16  # the KV memory is donated and updated in place
    assert prefill.temp > decode.temp > 0
    assert p.peak == max(prefill.peak, decode.peak) > p.resident
    assert p.fits() is True and p.fits(p.peak - 1) is False
    text = p.report()
    for s in (
        "XLA:CPU estimates",
        "prefill (16-token chunk → 64-slot KV)",
        "decode (1 token + sampling)",
        "un-embeds only each row's last prompt token",
        "FITS",
    ):
        assert s in text


def test_too_few_devices_is_a_clear_error():
    with pytest.raises(ValueError, match="needs 16 cpu devices"):
        plan("tiny", (2, 8), context=16)


def test_device_memory_names_and_units():
    assert resolve_device_memory("h100")[1] == DEVICES["h100"][1]
    assert resolve_device_memory("v5e")[1] == 16 * GiB
    assert resolve_device_memory("80GiB")[1] == 80 * GiB
    assert resolve_device_memory("141 GB")[1] == 141 * GB
    assert resolve_device_memory(12345)[1] == 12345
    assert resolve_device_memory(None) == (None, None)
    with pytest.raises(ValueError):
        resolve_device_memory("abacus")


def test_cli(capsys):
    from grok_flax.__main__ import main

    def plan_main(argv):
        return main(["plan", *argv])

    rc = plan_main(
        [
            "--config",
            "tiny",
            "--mesh",
            "1x8",
            "--context",
            "32",
            "--device",
            "tpu-v5e",
            "--no-compile",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "FITS" in out and "mesh data=1 × model=8" in out
    rc = plan_main(
        ["--config", "grok-1", "--mesh", "data=1,model=8", "--no-compile", "--device", "v5e"]
    )
    assert rc == 1 and "DOES NOT FIT" in capsys.readouterr().out
    assert plan_main(["--config", "nope", "--no-compile"]) == 2
