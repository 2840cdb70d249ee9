"""grok_flax.viz.long_context: notebook 09's concept pictures follow the config's numbers."""

import io

import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz

G1, TINY = GrokConfig.grok_1(), GrokConfig.tiny()


def _texts(fig: Figure) -> str:
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts] + [ax.get_title(), ax.get_xlabel()]
        out += [t.get_text() for t in ax.get_yticklabels()]
    return "\n".join(out)


def _renders(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.texts]
    assert min(sizes) >= 8


def test_attention_tiles_counts_the_tiles():
    fig = viz.attention_tiles()
    _renders(fig)
    text = _texts(fig)
    # Grok-1: 8,192 / 512 = 16 chunks a side, 16·17/2 = 136 tiles computed of 256
    assert "T = 8,192 tokens, chunk = 512" in text and "computed: 136 of 256" in text
    assert "one 512 × 512 tile = 1 MiB" in text and "12 GiB per layer" in text
    tiny = _texts(viz.attention_tiles(TINY))  # 64 tokens, chunk 16: 4 a side, 10 of 16
    assert "T = 64 tokens, chunk = 16" in tiny and "computed: 10 of 16" in tiny
    odd = _texts(viz.attention_tiles(TINY, context=40))  # a partial last chunk: 3 a side
    assert "computed: 6 of 9" in odd
    with pytest.raises(ValueError, match="chunk"):
        viz.attention_tiles(G1, chunk=0)
    with pytest.raises(ValueError, match="too many"):
        viz.attention_tiles(G1, chunk=64)


def test_chunked_prefill_rows_are_steps():
    fig = viz.chunked_prefill(GrokConfig.small(), prompt=200, chunk=64)
    _renders(fig)
    text = _texts(fig)
    assert "a 200-token prompt in chunks of 64" in text and "0 … 255" in text
    assert "writes 192…199; its queries read slots 0…199" in text
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"step {i}" for i in range(4)]
    g1 = _texts(viz.chunked_prefill())  # Grok-1: a third of 8,192 slots, chunks of 512
    assert "0 … 8,191" in g1 and "chunks of 512" in g1
    with pytest.raises(ValueError, match="does not fit"):
        viz.chunked_prefill(TINY, prompt=65)
    with pytest.raises(ValueError, match="chunk"):
        viz.chunked_prefill(TINY, chunk=0)


def test_context_growth_scales():
    fig = viz.context_growth()
    _renders(fig)
    text = _texts(fig)
    # 48 heads × 8,192² × 4 B = 12 GiB; KV 256 KiB × 8,192 = 2 GiB; 48 × 512² × 4 = 48 MiB
    assert "scores: 12 GiB" in text and "KV memory: 2 GiB" in text and "tile: 48 MiB" in text
    assert "scores: 768 MiB" in text and "KV memory: 512 MiB" in text  # at 2,048: ÷16 and ÷4
    tiny = _texts(viz.context_growth(TINY, (16, 32, 64)))
    assert "12 GiB" not in tiny and "T = 64" in tiny and "(4 heads" in tiny
    with pytest.raises(ValueError, match="contexts"):
        viz.context_growth(G1, ())
