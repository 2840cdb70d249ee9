"""grok_flax.viz.rope: notebook 02's concept pictures follow the config's numbers (Grok-1 and
the tiny test model), render without pyplot, and reject bad input with a clear ValueError."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz

GROK1 = GrokConfig.grok_1()
TINY = GrokConfig.tiny()


def _texts(fig: Figure) -> str:
    """Every string on the figure: suptitle, axes titles, texts, legend entries."""
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out.append(ax.get_title())
        out += [t.get_text() for t in ax.texts]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return "\n".join(out)


def _renders(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def _fonts_readable(fig):
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.texts]
    sizes += [ax.title.get_fontsize() for ax in fig.axes]
    assert min(sizes) >= 8


def test_every_picture_is_exported():
    assert set(viz.rope.__all__) <= set(viz.__all__)
    for name in viz.rope.__all__:
        assert callable(getattr(viz, name))


def test_rotating_pairs_follow_the_config():
    big, small = _texts(viz.rope_rotating_pairs(GROK1)), _texts(viz.rope_rotating_pairs(TINY))
    assert "pair 63 (features 63, 127)" in big and "p = 8,191" in big
    assert "1 turn / 54,410 positions" in big  # 2π / 10000^(−126/128)
    assert "10000^(−2i/128)" in big
    assert "pair 3 (features 3, 7)" in small and "p = 63" in small and "p = 8,191" not in small
    fig = viz.rope_rotating_pairs(GROK1, pairs=[0, 5], positions=[0, 7])
    assert len(fig.axes) == 2 and "p = 7" in _texts(fig)
    _renders(fig)
    _fonts_readable(viz.rope_rotating_pairs(GROK1))


def test_rotating_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="pairs must be in 0 … 63"):
        viz.rope_rotating_pairs(GROK1, pairs=[64])
    with pytest.raises(ValueError, match="positions must be ≥ 0"):
        viz.rope_rotating_pairs(GROK1, positions=[-1])
    with pytest.raises(ValueError, match="expected a GrokConfig"):
        viz.rope_rotating_pairs(128)


def test_pairing_shows_both_layouts():
    big, small = _texts(viz.rope_pairing(GROK1)), _texts(viz.rope_pairing(TINY))
    assert "pair i = features (i, i + 64)" in big and "key size 128, 64 pairs" in big
    assert "x₂ = x[64:]" in big and "pair 63: θ = 0.000115" in big
    assert "pair i = features (2i, 2i + 1)" in big
    assert "pair i = features (i, i + 4)" in small and "key size 8, 4 pairs" in small
    # the tiny head is drawn in full: every feature index written in both rows
    fig = viz.rope_pairing(TINY)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert all(labels.count(str(f)) == 2 for f in range(8))
    _renders(fig)
    _fonts_readable(fig)


def test_relative_angle_same_score_when_both_shift():
    fig = viz.rope_relative_angle(GROK1)
    titles = [ax.get_title() for ax in fig.axes]
    scores = [t.rsplit("q·k = ", 1)[1] for t in titles]
    assert scores[0] == scores[1] != scores[2]  # shifting both keeps q·k; a new distance doesn't
    assert "pair 8, θ = 0.316" in _texts(fig)
    assert "pair 1, θ = 0.1 " in _texts(viz.rope_relative_angle(TINY))
    assert "both shifted by 100" in _texts(viz.rope_relative_angle(GROK1, shift=100))
    _renders(fig)
    _fonts_readable(fig)
    with pytest.raises(ValueError, match="pair must be in 0 … 3"):
        viz.rope_relative_angle(TINY, pair=4)
    with pytest.raises(ValueError, match="shift must be ≥ 0"):
        viz.rope_relative_angle(GROK1, shift=-3)


def test_angle_error_measures_each_dtype():
    fig = viz.rope_angle_error(GROK1, dtypes=("float32", "bfloat16"))
    text = _texts(fig)
    assert "positions 1 … 8,191" in text and "key size 128" in text
    entries = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    worst = {e.split(":")[0]: float(e.rsplit("worst ", 1)[1].split()[0]) for e in entries}
    assert worst["float32"] < 2e-3 and worst["bfloat16"] > 1.0  # bf16 angles: anything
    assert np.isclose(worst["bfloat16"], np.pi, atol=0.2)
    assert "positions 1 … 63" in _texts(viz.rope_angle_error(TINY))
    _renders(fig)
    with pytest.raises(ValueError, match="dtypes must be among"):
        viz.rope_angle_error(GROK1, dtypes=("int8",))
    with pytest.raises(ValueError, match="samples must be ≥ 2"):
        viz.rope_angle_error(GROK1, samples=1)
