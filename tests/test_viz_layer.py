"""The concept pictures of notebook 06 (``grok_flax.viz.layer``): drawn from the config, so
their numbers follow it; bad input is refused with a reason."""

import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz

GROK1 = GrokConfig.grok_1()
TINY = GrokConfig.tiny()


def texts(fig: Figure) -> str:
    """Every text of the figure (axes texts, titles, tick labels, legends), one string."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def test_layer_pictures_are_exported():
    from grok_flax.viz import layer

    assert set(layer.__all__) == {"sandwich_norms", "residual_stream", "scan_vs_loop"}
    assert all(name in viz.__all__ for name in layer.__all__)


def test_sandwich_norms_counts_the_norms_of_the_config():
    grok = texts(viz.sandwich_norms(GROK1))
    assert "257 scales of [6144]" in grok  # 64 layers × 4 + the final norm
    assert "1,579,008 parameters" in grok
    assert "48 q / 8 kv heads" in grok and "8 experts (top-2)" in grok
    for name in ("rms_norm)", "rms_norm_1", "rms_norm_2", "rms_norm_3"):
        assert name in grok  # the release's names of the four norms
    tiny = texts(viz.sandwich_norms(TINY))
    L, D = TINY.num_layers, TINY.emb_size
    assert f"{4 * L + 1} scales of [{D}]" in tiny and "[6144]" not in tiny
    assert texts(viz.sandwich_norms()) == grok  # Grok-1 by default


def test_residual_stream_counts_the_terms():
    grok = texts(viz.residual_stream(GROK1))
    assert "129 terms, each [B, T, 6144]" in grok
    assert "m₆₃" in grok and "122 more terms" in grok  # the middle of 64 layers elided
    assert "× 78.38" in grok  # the embedding multiplier
    tiny = texts(viz.residual_stream(TINY))
    assert f"{2 * TINY.num_layers + 1} terms, each [B, T, {TINY.emb_size}]" in tiny
    assert "more terms" not in tiny  # 2 layers: every term drawn


def test_residual_stream_draws_measured_sizes():
    n = 2 * TINY.num_layers + 1
    fig = viz.residual_stream(TINY, term_rms=[3.0] + [1.0] * (n - 1), stream_rms=range(1, n + 1))
    assert len(fig.axes) == 2
    assert "measured" in texts(fig) and "a₁" in texts(fig)
    assert len(fig.axes[1].patches) == n  # one bar per term


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(term_rms=[1.0, 1.0]), "2L \\+ 1 = 5"),
        (dict(term_rms=[1.0] * 5, stream_rms=[1.0] * 4), "stream_rms"),
        (dict(term_rms=[1.0, -1.0, 1.0, 1.0, 1.0]), "finite and ≥ 0"),
        (dict(stream_rms=[1.0] * 5), "needs term_rms"),
    ],
)
def test_residual_stream_refuses_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.residual_stream(TINY, **kwargs)


def test_scan_vs_loop_shows_the_stacked_shapes():
    grok = texts(viz.scan_vs_loop(GROK1))
    assert "[64, 6144, 6144]" in grok  # attn.query, stacked
    assert "[64, 8, 6144, 32768]" in grok  # moe.linear
    assert "runs 64 times" in grok and "program size: 64 layers" in grok
    assert "… 60 more copies …" in grok
    tiny = texts(viz.scan_vs_loop(TINY))
    L, D, E, F = TINY.num_layers, TINY.emb_size, TINY.num_experts, TINY.ffn_size
    assert f"[{L}, {E}, {D}, {F}]" in tiny and f"runs {L} times" in tiny
    assert "more copies" not in tiny and "[64," not in tiny


@pytest.mark.parametrize("draw", [viz.sandwich_norms, viz.residual_stream, viz.scan_vs_loop])
def test_pictures_refuse_what_is_not_a_config(draw):
    with pytest.raises(ValueError, match="GrokConfig"):
        draw({"num_layers": 64})


@pytest.mark.parametrize("draw", [viz.sandwich_norms, viz.residual_stream, viz.scan_vs_loop])
def test_pictures_are_readable(draw):
    """No text under 8 pt."""
    fig = draw(GROK1)
    sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))]
    assert sizes and min(sizes) >= 8
