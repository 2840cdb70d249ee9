"""Notebook 08's concept pictures (grok_flax/viz/checkpoint.py): they follow the config's
numbers, and the facts they re-derive (file order, file sizes, the loader's staging budget,
the generator's buckets and chunks, the sampling filters) agree with the library."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from grok_flax import viz
from grok_flax.checkpoint import inspect_checkpoint, release_names
from grok_flax.config import GrokConfig
from grok_flax.demo import demo_dir
from grok_flax.running import generate
from grok_flax.running.sampling import MASKED, top_k_top_p_filter
from grok_flax.viz import checkpoint as ck

DEMO = GrokConfig.from_json(demo_dir() / "config.json")


def texts(fig: Figure) -> str:
    out = []
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    return "\n".join(out)


def test_release_layout_follows_the_config():
    grok = texts(viz.release_layout())
    assert "770 files in ckpt-0/ (64 layers × 12 + 2)" in grok
    assert "[131072, 6144] float32, 3.22 GB" in grok
    assert "int8 weight payload [8, 6144, 32768]" in grok and "1.61 GB" in grok
    assert re.search(r"layer 10\n", grok) and "layer 63" not in grok  # sorted, cut with ⋮
    tiny = texts(viz.release_layout(GrokConfig.tiny()))
    assert "26 files in ckpt-0/ (2 layers × 12 + 2)" in tiny and "770 files" not in tiny


def test_release_files_are_the_release_order_and_sizes():
    for L in (4, 12, 64):
        assert [f[0] for f in ck._release_files(GrokConfig.grok_1(num_layers=L))] == [
            name for name, _, _ in release_names(L)
        ]
    table = inspect_checkpoint(demo_dir())
    files = ck._release_files(DEMO)
    assert [(r["name"], r["shape"], r["quantized"], r["bytes"]) for r in table] == files


def test_streaming_load_follows_the_config_and_the_loader():
    grok = texts(viz.streaming_load())
    assert "budget: the largest file, 3.22 GB" in grok  # the fp32 embedding, not an expert
    assert "3 of them go one layer at a time" in grok and "39.8 GB" in grok
    demo = texts(viz.streaming_load(DEMO))
    assert "0 of them" in demo and "the 64 MiB floor" in demo
    steps, budget = ck._load_units(DEMO, 8)
    # the loader's own rule (checkpoint/loader.py: _staging_budget)
    assert budget == max(64 << 20, max(r["bytes"] for r in inspect_checkpoint(demo_dir())))
    assert sum(s[1] for s in steps) == sum(r["bytes"] for r in inspect_checkpoint(demo_dir()))


def test_prefill_decode_matches_the_generator():
    fig = viz.prefill_decode(20, 9, chunk=8, min_bucket=16, max_len=64)
    title = texts(fig)
    T = generate._bucket(20, 16, 64)
    assert f"bucket {T}, 4 prefill call(s) of 8" in title and "8 decode steps" in title
    assert "decode 8" in title and "decode 9" not in title
    assert "bucket 16, 1 prefill" in texts(viz.prefill_decode(5, 3, chunk=512))


def test_sampling_cutoffs_keeps_what_the_library_keeps():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=300).astype(np.float32) * 3
    for t, k, p in ((1.0, 0, 0.9), (0.7, 20, 0.95), (1.3, 5, 1.0)):
        x = jnp.asarray(logits / t)[None]
        kept = int(
            (np.asarray(top_k_top_p_filter(x, jnp.asarray([k]), jnp.asarray([p]))) > MASKED).sum()
        )
        title = texts(viz.sampling_cutoffs(logits, temperature=t, top_k=k, top_p=p))
        assert f"{kept} of 300 tokens can be drawn" in title


def test_slice_memory_stacks_a_chips_share_against_its_memory():
    from grok_flax.running.plan import GiB, plan

    rows = []
    for label, data, hbm in (("4 x 8", 4, 16 * GiB), ("2 x 8", 2, 16 * GiB)):
        p = plan("grok-1", {"data": data, "model": 8}, context=8192, batch=data, compile=False)
        rows.append(dict(label=label, weights=p.weight_bytes, kv=p.kv, temp=0.5e9, memory=hbm))
    fig = viz.slice_memory(rows)
    (ax,) = fig.axes
    widths = [round(b.get_width(), 3) for b in ax.patches]  # per row: weights, KV, temp
    assert widths[0] == round(rows[0]["weights"] / 1e9, 3) and widths[3] == round(
        rows[1]["weights"] / 1e9, 3
    )
    text = texts(fig)
    assert "fits: " in text and "short by" in text  # 4×8 fits 16 GiB, 2×8 does not
    assert "4 x 8" in text and "16 GiB" in text


@pytest.mark.parametrize(
    "call",
    [
        lambda: viz.release_layout("grok-1"),
        lambda: viz.release_layout(max_rows=2),
        lambda: viz.streaming_load(devices=0),
        lambda: viz.prefill_decode(60, 10, max_len=64),
        lambda: viz.prefill_decode(0, 3),
        lambda: viz.sampling_cutoffs(np.zeros((2, 5))),
        lambda: viz.sampling_cutoffs(np.zeros(5), temperature=0.0),
        lambda: viz.sampling_cutoffs(np.zeros(5), top_p=0.0),
        lambda: viz.slice_memory([]),
        lambda: viz.slice_memory([dict(label="x", weights=1, kv=1, temp=1)]),
        lambda: viz.slice_memory([dict(label="x", weights=-1, kv=1, temp=1, memory=4)]),
    ],
)
def test_bad_input_is_a_clear_value_error(call):
    with pytest.raises(ValueError, match="must|need|expected|exceeds"):
        call()
