"""The concept pictures of notebook 03 (grok_flax.viz.attention): drawn from the config or the
numbers given, so they change with them; bad input is refused with a ValueError."""

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz


def _texts(fig: Figure) -> str:
    parts = []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
        parts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()]
    if fig._suptitle is not None:
        parts.append(fig._suptitle.get_text())
    return "\n".join(parts)


def test_all_exported_through_viz():
    for name in viz.attention.__all__:
        assert getattr(viz, name) is getattr(viz.attention, name)


def test_gqa_groups_follows_the_config():
    g1 = _texts(viz.gqa_groups(GrokConfig.grok_1()))
    assert "48 query heads share 8 KV heads" in g1 and "R = 48 / 8 = 6" in g1
    assert "KV 7" in g1 and "q 42–47" in g1 and "j // 6" in g1
    tiny = _texts(viz.gqa_groups(GrokConfig.tiny()))
    assert "4 query heads share 2 KV heads" in tiny and "R = 4 / 2 = 2" in tiny
    assert "KV 7" not in tiny and "KV 1" in tiny
    with pytest.raises(ValueError, match="GrokConfig"):
        viz.gqa_groups({"num_q_heads": 48})


def test_soft_cap_pictures_follow_the_cap():
    assert "30·tanh(x/30)" in _texts(viz.soft_cap_curve(30.0))
    five = _texts(viz.soft_cap_curve(5.0))
    assert "5·tanh(x/5)" in five and "±5" in five and "30" not in five
    grok = _texts(viz.soft_cap_attention(30.0, 8192))
    assert "8,191" in grok and "e^30" in grok and "7.7e-10" in grok
    assert "49" in _texts(viz.soft_cap_attention(30.0, 50))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="cap"):
            viz.soft_cap_curve(bad)
    with pytest.raises(ValueError, match="n_keys"):
        viz.soft_cap_attention(30.0, 1)


def test_causal_mask_marks_padding():
    fig = viz.causal_mask((5, 3))
    text = _texts(fig)
    assert "5 real tokens" in text and "3 real tokens + 2 padding" in text and "3·pad" in text
    assert len(fig.axes) == 2
    assert "2 padding" not in _texts(viz.causal_mask((4,), num_tokens=4))
    for bad in ((), (0, 3)):
        with pytest.raises(ValueError, match="lengths"):
            viz.causal_mask(bad)
    with pytest.raises(ValueError, match="num_tokens"):
        viz.causal_mask((5, 3), num_tokens=4)


def test_kv_memory_fill_follows_the_config():
    g1 = _texts(viz.kv_memory_fill(GrokConfig.grok_1(), 4, 3, 8))
    assert "64 layers × 8 KV heads × 128" in g1 and "256 KiB in bfloat16" in g1
    assert "step = 4" in g1 and "step = 7" in g1 and "decode 3" in g1
    tiny = _texts(viz.kv_memory_fill(GrokConfig.tiny(), 2, 1, 4, dtype="float32"))
    assert "2 layers × 2 KV heads × 8" in tiny and "256 B in float32" in tiny
    assert "step = 3" in tiny and "decode 2" not in tiny
    labelled = _texts(viz.kv_memory_fill(GrokConfig.tiny(), 2, 1, 4, labels=["a", "b", "c"]))
    assert "c" in labelled.split("\n")
    with pytest.raises(ValueError, match="max_len"):
        viz.kv_memory_fill(GrokConfig.tiny(), 4, 3, 6)
    with pytest.raises(ValueError, match="labels"):
        viz.kv_memory_fill(GrokConfig.tiny(), 2, 1, 4, labels=["a"])


def test_figures_without_pyplot():
    import sys

    cfg = GrokConfig.tiny()
    figs = [
        viz.gqa_groups(cfg),
        viz.soft_cap_curve(),
        viz.soft_cap_attention(),
        viz.causal_mask(),
        viz.kv_memory_fill(cfg, 2, 1, 4),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    if "matplotlib.pyplot" in sys.modules:  # figures are not registered with pyplot
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
