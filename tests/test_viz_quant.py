"""The concept pictures of notebook 05 (grok_flax.viz.quant): drawn from the config's numbers,
following them, and refusing input they cannot draw."""

import numpy as np
import pytest
from matplotlib.figure import Figure

import grok_flax as gf
from grok_flax import viz
from grok_flax.viz import quant


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts) + "\n".join(
        t.get_text() for ax in fig.axes for t in ax.texts
    )


def _fonts(fig) -> list[float]:
    return [t.get_fontsize() for t in fig.texts] + [
        t.get_fontsize() for ax in fig.axes for t in ax.texts
    ]


def test_every_function_is_exported_and_readable():
    assert set(quant.__all__) <= set(viz.__all__)
    cfg = gf.GrokConfig.grok_1()
    figs = [
        viz.quantize_block([0.01, -0.02, 0.005, 0.03]),
        viz.block_scale_layout(512, 384, 8),
        viz.grok1_quant_shapes(cfg),
        viz.scale_blocks_on_mesh(cfg),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert min(_fonts(fig)) >= 8


def test_quantize_block_shows_the_library_codes():
    values = np.array([0.5, -1.27, 0.003, 0.9], np.float32)
    q = gf.quantize(values[:, None], 1)
    text = _texts(viz.quantize_block(values))
    for code in np.asarray(q.weight)[:, 0]:
        assert f"\n{int(code)}\n" in f"\n{text}\n"
    s = float(np.asarray(q.scales, np.float32)[0, 0])
    assert f"{s:.6g}" in text
    assert "4 weights of one output column" in text


@pytest.mark.parametrize("bad", [[1.0], list(range(17)), [0.1, np.nan]])
def test_quantize_block_refuses(bad):
    with pytest.raises(ValueError, match="quantize_block"):
        viz.quantize_block(bad)


def test_block_scale_layout_follows_the_numbers():
    text = _texts(viz.block_scale_layout(32768, 6144, 8, name="linear_1"))
    assert "int8 [32,768, 6,144]" in text and "bf16 [8, 6,144]" in text
    assert "4,096 int8 values share it" in text and "rows 28,672–32,767" in text
    small = _texts(viz.block_scale_layout(48, 32, 4))
    assert "int8 [48, 32]" in small and "bf16 [4, 32]" in small and "12 int8 values" in small
    many = _texts(viz.block_scale_layout(4096, 16, 64))  # labels thinned, not crowded
    assert many.count("block ") == 3


@pytest.mark.parametrize("args", [(100, 8, 3), (0, 8, 1), (64, 8, 0), (64, 8, 2.0)])
def test_block_scale_layout_refuses(args):
    with pytest.raises(ValueError):
        viz.block_scale_layout(*args)


def test_grok1_quant_shapes_follows_the_config():
    text = _texts(viz.grok1_quant_shapes(gf.GrokConfig.grok_1()))
    assert "[8, 32768, 6144]" in text and "[8, 8, 6144]" in text  # linear_1 and its scales
    assert "[6144, 1024]" in text and "× 64 layers" in text
    tiny = _texts(viz.grok1_quant_shapes(gf.GrokConfig.tiny()))
    assert "[4, 48, 32]" in tiny and "[4, 4, 32]" in tiny and "× 2 layers" in tiny
    assert "[8, 32768, 6144]" not in tiny


def test_grok1_quant_shapes_refuses_float_weights():
    with pytest.raises(ValueError, match="quantized=False"):
        viz.grok1_quant_shapes(gf.GrokConfig.tiny().replace(quantized=False))


def test_scale_blocks_on_mesh_says_when_blocks_match_devices():
    cfg = gf.GrokConfig.grok_1()
    text = _texts(viz.scale_blocks_on_mesh(cfg))
    assert "G = 8 = 8 devices" in text and "int8 [4,096, 6,144]" in text
    assert 'P(None, "model", None)' in text and "1×8 mesh" in text
    attn = _texts(viz.scale_blocks_on_mesh(cfg, weight="attn.linear"))
    assert 'P("model", "data")' in attn and "int8 [768, 6,144]" in attn
    four = _texts(viz.scale_blocks_on_mesh(cfg, devices=4))
    assert "2 whole blocks" in four and "1×4 mesh" in four
    tiny = _texts(viz.scale_blocks_on_mesh(gf.GrokConfig.tiny()))  # G = 4 on 8 devices
    assert "do not line up" in tiny and "int8 [6, 32]" in tiny


@pytest.mark.parametrize(
    "kwargs", [dict(devices=0), dict(devices=7), dict(weight="moe.linear"), dict(devices=2.0)]
)
def test_scale_blocks_on_mesh_refuses(kwargs):
    with pytest.raises(ValueError):
        viz.scale_blocks_on_mesh(gf.GrokConfig.grok_1(), **kwargs)
