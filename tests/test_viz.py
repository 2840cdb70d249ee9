"""grok_flax.viz: every figure builds from a tiny random model's captures, with its axes and
labels, and renders to PNG (Agg, no pyplot)."""

import io

import jax
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

from grok_flax import Grok, GrokConfig, abstract_model, viz
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import abstract_state

CFG = GrokConfig.tiny(compute_dtype="float32", num_experts=4, num_layers=2, quantized=False)
T = 9


@pytest.fixture(scope="module")
def captured():
    model = Grok(CFG, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, T), 1, CFG.vocab_size)
    _, cap = model(tokens, capture=True)
    return {k: np.asarray(v) for k, v in cap.items()}, np.asarray(tokens)


class FakeTokenizer:
    def piece(self, i):
        return {5: "\u2581def", 6: "\n", 7: "<0x41>", 8: "\t"}.get(int(i), f"t{int(i)}")


def _renders(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _visible(fig):
    return [a for a in fig.axes if a.get_visible()]


def test_token_labels():
    assert viz.token_labels(FakeTokenizer(), [5, 6, 7, 8, 9]) == ["·def", "\\n", "A", "\\t", "t9"]
    assert viz.token_labels(None, [3, 4]) == ["3", "4"]
    assert viz.token_labels(["a" * 20]) == ["a" * 11 + "…"]


def test_routing_heatmap(captured):
    cap, tokens = captured
    labels = [f"tok{i}" for i in range(T)]
    k = CFG.num_selected_experts
    fig = viz.routing_heatmap(
        cap["experts"], labels, gates=cap["gates"], row=1, num_experts=CFG.num_experts
    )
    _renders(fig)
    (ax,) = fig.axes  # the heatmap; the expert colours are a figure legend
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert len(ax.get_xticklabels()) == CFG.num_layers
    assert len(ax.texts) == CFG.num_layers * T * k  # every choice of every cell named
    assert ax.images[0].get_array().shape == (T, CFG.num_layers)
    np.testing.assert_array_equal(ax.images[0].get_array(), cap["experts"][:, 1, :, 0].T)
    e, g = cap["experts"][0, 1, 0], cap["gates"][0, 1, 0]  # layer 0, token 0: 1st, 2nd choice
    assert [t.get_text() for t in ax.texts[:k]] == [
        f"e{x} {100 * p:.0f}%" for x, p in zip(e, g, strict=True)
    ]
    assert all(t.get_fontsize() >= 8 for t in ax.texts)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"e{i}" for i in range(CFG.num_experts)]
    # the caption under the title says what the stripes and the cell text are
    caption = ax.get_title().replace("\n", " ")
    assert fig.get_suptitle() and "1st choice" in caption and "gate 43%" in caption
    plain = viz.routing_heatmap(cap["experts"], labels, title="custom title")
    assert plain.get_suptitle() == "custom title"
    assert "Text e5 = expert 5" in plain.axes[0].get_title().replace("\n", " ")
    assert plain.axes[0].texts[0].get_text() == f"e{cap['experts'][0, 0, 0, 0]}"
    quiet = viz.routing_heatmap(cap["experts"], labels, annotate=False)
    assert not quiet.axes[0].texts and "Text" not in quiet.axes[0].get_title()
    with pytest.raises(ValueError, match="labels"):
        viz.routing_heatmap(cap["experts"], labels[:-1])


def test_expert_load(captured):
    cap, _ = captured
    fig = viz.expert_load(cap["experts"], CFG.num_experts)
    _renders(fig)
    heat, bars, _ = fig.axes  # heatmap, bars, colour bar
    frac = heat.images[0].get_array()
    assert frac.shape == (CFG.num_layers, CFG.num_experts)
    np.testing.assert_allclose(frac.sum(1), 1.0)
    assert len(bars.patches) == CFG.num_layers * CFG.num_experts
    assert heat.get_xlabel() == "expert" and bars.get_xlabel() == "layer"


def test_attention_maps(captured):
    cap, _ = captured
    labels = [f"w{i}" for i in range(T)]
    fig = viz.attention_maps(cap["attention"], labels, layer=1, kv_head=1)
    _renders(fig)
    panels = [a for a in _visible(fig) if a.images]
    assert len(panels) == CFG.q_per_kv
    # query head q reads KV head q // q_per_kv
    assert [a.get_title() for a in panels] == [
        f"query head {CFG.q_per_kv + h} (reads KV head 1)" for h in range(CFG.q_per_kv)
    ]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == labels
    assert [t.get_text() for t in panels[0].get_xticklabels()] == labels
    w = panels[0].images[0].get_array()
    assert w.shape == (T, T) and bool(np.all(w.mask[np.triu_indices(T, 1)]))  # causal: grey
    mean = viz.attention_maps(cap["attention"], labels, q_heads="mean")
    assert len([a for a in _visible(mean) if a.images]) == 1
    one = viz.attention_maps(cap["attention"][0, 0], q_heads=0)
    assert len([a for a in _visible(one) if a.images]) == 1


def test_rope_figures():
    fig = viz.rope_frequencies(16, 10000.0, 256)
    _renders(fig)
    assert len(fig.axes) == 4  # wavelengths, near rotations, far rotations, colour bar
    assert "wavelength" in fig.axes[0].get_ylabel()
    rel = viz.rope_relative(16, max_distance=256, samples=16)
    _renders(rel)
    assert len(rel.axes) == 1 and "m − n" in rel.axes[0].get_xlabel()


def test_quantization_error():
    w = np.random.default_rng(0).standard_normal((64, 24)).astype(np.float32) * 0.1
    fig = viz.quantization_error(w, blocks=4)
    _renders(fig)
    assert len(fig.axes) == 3
    assert "±½" in fig.axes[2].get_title()


def test_kv_memory_growth():
    fig = viz.kv_memory_growth(GrokConfig.grok_1(), (1, 8, 512), device_bytes=80 * 2**30)
    _renders(fig)
    (ax,) = fig.axes
    # three batch sizes, the device line, and the X where batch 512 runs out of memory
    assert len(ax.get_lines()) == 5
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"  # batch 1 is not flat on 0
    assert "256 KiB per token" in ax.get_title()
    labels = [t.get_text() for t in ax.texts]
    assert "batch 1: 2 GiB" in labels and "batch 512: 1 TiB" in labels
    assert "full at 640 tokens" in labels  # 80 GiB / (256 KiB × 512)
    batch1 = ax.get_lines()[0].get_ydata()
    assert batch1.min() > ax.get_ylim()[0]  # the smallest line is inside the plot
    with pytest.raises(ValueError, match="batch sizes"):
        viz.kv_memory_growth(GrokConfig.grok_1(), (0, 8))


def test_growth_breakdown_and_parity():
    fig = viz.growth_plot([1, 2, 4], {"a": [1, 4, 16], "b": [1, 2, 4]}, title="x")
    _renders(fig)
    assert len(fig.axes[0].get_lines()) == 2
    fig = viz.param_breakdown(
        {"experts": 300, "attention": 10}, active={"experts": 75, "attention": 10}
    )
    _renders(fig)
    assert len(fig.axes[0].patches) == 4
    got = np.random.default_rng(1).standard_normal((2, 3, 5))
    fig = viz.parity_scatter(got, got + 0.01, valid=np.array([[1, 1, 0], [1, 0, 0]]), step=0.0156)
    _renders(fig)
    assert "correlation 1.000000" in fig.axes[0].get_title()


def test_sharding_map():
    mesh = make_mesh(2, 4)
    state = abstract_state(abstract_model(CFG.replace(num_q_heads=8, num_kv_heads=4)), mesh)
    q = state["layers"]["attn"]["query"].get_value()
    embed = state["embed"].get_value()
    fig = viz.sharding_map(
        {
            "query": q,
            "embed": embed,
            "replicated": ((4, 4), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())),
        }
    )
    _renders(fig)
    axes = _visible(fig)
    assert len(axes) == 3
    assert len(axes[0].patches) == 8  # data × model blocks
    assert len(axes[2].patches) == 1 and "dev 0–7" in axes[2].texts[0].get_text()


def test_no_pyplot_state_and_bytes():
    import sys

    fig = viz.rope_relative(8, max_distance=64, samples=4)
    assert isinstance(fig, Figure)
    if "matplotlib.pyplot" in sys.modules:  # figures are not registered with pyplot
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
    assert viz.format_bytes(256 * 1024) == "256 KiB"
    assert viz.format_bytes(2 * 1024**3) == "2 GiB"
    assert viz.format_bytes(1536) == "1.5 KiB"


def _texts(fig):
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_architecture_numbers_come_from_the_config():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    open_before = pyplot.get_fignums()
    text = _texts(fig := viz.architecture())  # Grok-1 by default
    _renders(fig)
    for want in (
        "64 × decoder layer",
        "[B, T, 6144]",
        "q [B, T, 48, 128]",
        "k, v [B, T, 8, 128]",
        "top-2",
        "8 GeGLU experts",
        "[6144, 32768]",
        "[B, T, 131072]",
        "78.38 (= √6144)",
        "0.5774 (= 1/√3)",
        "0.08839 (= 1/√128)",
        "30·tanh(x / 30)",
        "int8",
        "nb 02",
        "nb 03",
        "nb 04",
        "nb 05",
        "nb 06",
        "nb 07",
    ):
        assert want in text, want
    tiny = GrokConfig.tiny(quantized=False, num_experts=6, num_selected_experts=3)
    small_text = _texts(viz.architecture(tiny))
    for want in (
        "2 × decoder layer",
        "[B, T, 32]",
        "q [B, T, 4, 8]",
        "top-3",
        "6 GeGLU experts",
        f"[32, {tiny.ffn_size}]",
        "[B, T, 256]",
    ):
        assert want in small_text, want
    for gone in ("6144", "131072", "top-2", "int8", "√"):  # no Grok-1 number or identity left
        assert gone not in small_text, gone
    assert pyplot.get_fignums() == open_before  # built without pyplot: nothing left open


def test_param_breakdown_log_and_linear():
    counts = {"experts": 3_000_000, "router": 30}
    assert viz.param_breakdown(counts).axes[0].get_xscale() == "log"
    linear = viz.param_breakdown(counts, log=False)
    _renders(linear)
    assert linear.axes[0].get_xscale() == "linear"


def test_router_probabilities_marks_the_top_k():
    p = np.array([0.05, 0.4, 0.05, 0.2, 0.1, 0.1, 0.05, 0.05])
    fig = viz.router_probabilities(p, 2, token="def", layer=3)
    _renders(fig)
    title = fig.axes[0].get_title()
    assert "layer 3" in title and "'def'" in title and "60%" in title, title
    bars = fig.axes[0].patches
    assert len(bars) == 8
    grey = bars[0].get_facecolor()
    coloured = [i for i, b in enumerate(bars) if b.get_facecolor() != grey]
    assert coloured == [1, 3], coloured  # the two chosen experts; the rest share one grey
    assert {t.get_text().split("\n")[0] for t in fig.axes[0].texts} == {"#1", "#2"}
    with pytest.raises(ValueError, match="k must be"):
        viz.router_probabilities(p, 9)
    # the model's own choice is drawn when given (here a tie the model broke the other way)
    tie = np.array([0.3, 0.3, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0])
    fig = viz.router_probabilities(tie, 2, experts=[1, 2])
    bars = fig.axes[0].patches
    grey = bars[0].get_facecolor()  # expert 0 is not chosen here
    assert [i for i, b in enumerate(bars) if b.get_facecolor() != grey] == [1, 2]
    assert "top-2 gates hold 50%" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="experts must be 2 expert ids in 0..7"):
        viz.router_probabilities(tie, 2, experts=[1, 8])


class _Tok:
    """A toy tokenizer: one id per character (+ BOS = 1), pieces are the characters."""

    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text, bos=False):
        return ([1] if bos else []) + [4 + (ord(c) % (self.vocab - 4)) for c in text]

    def piece(self, i):
        return "[BOS]" if i == 1 else chr(ord("a") + i % 26)


def test_routing_explorer_figures_and_widgets():
    cfg = GrokConfig.tiny(quantized=False, compute_dtype="float32")
    model = Grok(cfg, rngs=nnx.Rngs(0))
    ex = viz.RoutingExplorer(model, _Tok(cfg.vocab_size), "def f(x):", max_tokens=6)
    assert ex.ids[0] == 1 and len(ex.ids) == 6  # BOS + the first 5 characters
    L, T = cfg.num_layers, len(ex.ids)
    assert ex.router_probs.shape == (L, T, cfg.num_experts)
    assert ex.attention.shape[-2:] == (T, T)
    # the gates are the chosen experts' router probabilities (not renormalised)
    np.testing.assert_allclose(
        ex.gates, np.take_along_axis(ex.router_probs, ex.experts, -1), rtol=1e-6
    )
    figs = ex.figures(layer=1, token=2, head=cfg.num_q_heads - 1)
    assert set(figs) == {"routing", "router", "attention"}
    for f in figs.values():
        _renders(f)
    with pytest.raises(ValueError, match="layer must be"):
        ex.figures(layer=L)
    with pytest.raises(ValueError, match="head must be"):
        ex.figures(head=cfg.num_q_heads)

    pytest.importorskip("ipywidgets")
    ex.widget  # noqa: B018 - builds the widgets and draws the first figures
    before = {k: img.value for k, img in ex.images.items()}
    assert all(before.values()) and "layer 0" in ex.status.value
    assert "query head 0 (reads KV head 0)" in ex.status.value
    ex.head_slider.value = cfg.num_q_heads - 1
    assert (
        f"query head {cfg.num_q_heads - 1} (reads KV head {cfg.num_kv_heads - 1})"
        in ex.status.value
    )
    # shown at the figure's width in CSS pixels, drawn with twice as many: sharp when zoomed
    width = int(ex.images["router"].width)
    assert ex.images["router"].layout.height == "auto"
    assert _png_size(ex.images["router"].value)[0] == 2 * width
    ex.layer_slider.value = 1
    after = {k: img.value for k, img in ex.images.items()}
    assert after["router"] != before["router"] and "layer 1" in ex.status.value
    ex.token_picker.value = 1
    assert ex.images["attention"].value != after["attention"]
    ex.prompt_box.value = "import os"
    ex.run_button.click()
    assert ex.prompt == "import os" and len(ex.token_picker.options) == 6
    ex.prompt_box.value = ""
    ex.run_button.click()  # a bad prompt is reported in the widget, the last run is kept
    assert "cannot run" in ex.status.value and ex.prompt == "import os"
