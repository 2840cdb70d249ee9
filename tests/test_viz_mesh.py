"""The concept pictures of notebook 07 (``grok_flax.viz.mesh``): drawn from the config's
numbers, without pyplot, and clear about bad input."""

import matplotlib
import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz

matplotlib.use("Agg")

GROK = GrokConfig.grok_1()
TINY = GrokConfig.tiny()


def _texts(fig: Figure) -> str:
    out = [t.get_text() for t in fig.texts]
    for sub in fig.subfigs:
        out.append(_texts(sub))
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return "\n".join(out)


def _small_fonts(fig: Figure) -> list[str]:
    texts = list(fig.texts) + [t for ax in fig.axes for t in ax.texts]
    return [t.get_text() for t in texts if t.get_text() and t.get_fontsize() < 8]


def test_the_functions_are_exported():
    assert {"tensor_parallel_block", "mesh_2d", "expert_parallelism"} <= set(viz.__all__)


def test_tensor_parallel_block_follows_the_config():
    text = _texts(viz.tensor_parallel_block(GROK, model=8))
    assert "[6,144, 32,768]" in text and "[6,144, 4,096]" in text and "[4,096, 6,144]" in text
    assert "all-reduce" in text and "model = 8" in text
    tiny = _texts(viz.tensor_parallel_block(TINY, model=4))
    assert f"[{TINY.emb_size:,}, {TINY.ffn_size // 4:,}]" in tiny and "6,144" not in tiny
    assert not _small_fonts(viz.tensor_parallel_block(GROK))


def test_mesh_2d_numbers_the_devices_and_their_blocks():
    fig = viz.mesh_2d(GROK, data=2, model=4)
    text = _texts(fig)
    assert "device 7" in text and "device 8" not in text
    assert "query [3,072, 1,536]" in text and "W₁ [8,192, 3,072]" in text
    assert "1/8 of every big matrix" in text
    tiny = _texts(viz.mesh_2d(TINY, data=1, model=2))
    assert "device 1" in tiny and "device 2" not in tiny and "3,072" not in tiny
    assert not _small_fonts(fig)


def test_expert_parallelism_counts_every_token_copy():
    text = _texts(viz.expert_parallelism(GROK, tokens_per_device=3, seed=0))
    assert "8 experts on 8 devices" in text and "48 copies over 8 devices: mean 6" in text
    assert "all-reduce" in text and "all-to-all" in text and "top-2" in text
    tiny = _texts(viz.expert_parallelism(TINY, devices=2, tokens_per_device=2))
    assert "4 experts on 2 devices" in tiny and "8 copies over 2 devices" in tiny
    assert "2 whole experts per device" in tiny


@pytest.mark.parametrize(
    "draw, match",
    [
        (lambda: viz.tensor_parallel_block(GROK, model=0), "model must be an integer"),
        (lambda: viz.tensor_parallel_block(GROK, model=7), "not divisible"),
        (lambda: viz.mesh_2d(GROK, data=4, model=8), "at most 16"),
        (lambda: viz.mesh_2d(GROK, data=2.0, model=4), "data must be an integer"),
        (lambda: viz.mesh_2d(GROK, data=5, model=1), "not divisible"),
        (lambda: viz.expert_parallelism(GROK, devices=3), "spread evenly"),
        (lambda: viz.expert_parallelism(GROK, tokens_per_device=0), "tokens_per_device"),
    ],
)
def test_bad_input_says_what_is_wrong(draw, match):
    with pytest.raises(ValueError, match=match):
        draw()
