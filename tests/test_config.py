import json

import pytest

from grok_flax import GrokConfig, ffn_size


def test_grok_1_is_the_release():
    c = GrokConfig.grok_1()
    assert (c.vocab_size, c.pad_token, c.eos_token, c.sequence_len) == (131072, 0, 2, 8192)
    assert (c.emb_size, c.key_size, c.num_q_heads, c.num_kv_heads) == (6144, 128, 48, 8)
    assert (c.num_layers, c.num_experts, c.num_selected_experts) == (64, 8, 2)
    assert c.widening_factor == 8 and c.ffn_size == 32768
    assert c.embedding_multiplier_scale == 78.38367176906169
    assert c.output_multiplier_scale == 0.5773502691896257
    assert c.attn_output_multiplier == 0.08838834764831845
    assert c.q_per_kv == 6


def test_ffn_size_rule_rounds_up_to_8():
    assert ffn_size(128, 2.5) == 216  # int(320)*2//3 = 213 -> 216
    assert ffn_size(6144, 8) == 32768


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(num_q_heads=6, num_kv_heads=4), "multiple of num_kv_heads"),
        (dict(key_size=7), "even"),
        (dict(num_selected_experts=5, num_experts=4), "cannot exceed"),
        (dict(emb_size=0), "positive"),
        (dict(compute_dtype="int8"), "compute_dtype"),
        (dict(moe_impl="magic"), "moe_impl"),
        (dict(pad_token=999), "pad_token"),
        (dict(attn_out_scale_blocks=3), "attn_out_scale_blocks"),
    ],
)
def test_invalid_combinations_raise(bad, words):
    with pytest.raises(ValueError, match=words):
        GrokConfig.tiny(**bad)


def test_json_round_trip_and_defaults(tmp_path):
    c = GrokConfig.tiny(num_layers=3)
    path = tmp_path / "c.json"
    c.to_json(path)
    assert GrokConfig.from_json(path) == c
    # fields left out take the Grok-1 values
    partial = GrokConfig.from_json(json.dumps({"num_layers": 2, "vocab_size": 1000}))
    assert partial.num_layers == 2 and partial.emb_size == 6144


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="num_layerz"):
        GrokConfig.from_json('{"num_layerz": 3}')


def test_auto_impls_follow_the_platform_being_compiled_for():
    """'auto' resolves for the current mesh's devices (a deviceless TPU slice under
    jax.set_mesh, though JAX's backend is the CPU), else for JAX's backend; explicit choices
    stay; the MoE tile rule follows the same platform."""
    import jax
    from jax.sharding import AbstractDevice, AbstractMesh, AxisType

    from grok_flax.config import current_platform
    from grok_flax.moe import auto_tile

    cfg = GrokConfig.tiny(emb_size=256, key_size=128, attention_impl="auto", moe_impl="auto")
    assert current_platform() == jax.default_backend() == "cpu"
    assert (cfg.for_platform().attention_impl, cfg.for_platform().moe_impl) == (
        "chunked",
        "sparse",
    )
    assert cfg.for_platform("gpu").attention_impl == "chunked"
    # gmm would gather the weights' model width split over data: the XLA path there
    on_data = cfg.for_platform("tpu", data_parallel=4)
    assert (on_data.attention_impl, on_data.moe_impl) == ("splash", "sparse")
    assert cfg.for_platform("tpu", model_parallel=8).moe_impl == "sparse"  # 344 / 8 < 128
    tpu = AbstractMesh(
        (1, 8),
        ("data", "model"),
        axis_types=(AxisType.Auto,) * 2,
        abstract_device=AbstractDevice(device_kind="TPU v5", num_cores=1, platform="tpu"),
    )
    with jax.sharding.use_abstract_mesh(tpu):
        assert current_platform() == "tpu"
        resolved = cfg.for_platform()
        assert (resolved.attention_impl, resolved.moe_impl) == ("splash", "gmm")
        assert auto_tile(1024, 8) == 128  # TPU's rule, not the host's 64
        explicit = cfg.replace(attention_impl="naive", moe_impl="dense").for_platform()
        assert (explicit.attention_impl, explicit.moe_impl) == ("naive", "dense")
    assert auto_tile(1024, 8) == 64
