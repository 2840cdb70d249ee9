"""The demo-model pipeline (corpus, tokenizer, training, export) and the bundled model."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from grok_flax.demo import corpus
from grok_flax.demo.train import (
    TrainSettings,
    cross_entropy,
    decay_mask,
    heldout_windows,
    load_balance_loss,
    train,
)

MAX_BUNDLE_BYTES = 25 * 1024 * 1024


def test_cross_entropy_ignores_pad_targets():
    logits = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    ce, n = cross_entropy(logits, jnp.asarray([[1, 0]]), pad_id=0)
    assert float(n) == 1.0
    np.testing.assert_allclose(float(ce), -np.log(0.25), rtol=1e-6)


def test_load_balance_loss_is_one_when_uniform_and_e_when_collapsed():
    L, B, T, E = 2, 1, 8, 4
    uniform = jnp.full((L, B, T, E), 1.0 / E)
    spread = jnp.broadcast_to(
        jnp.stack([jnp.arange(T) % E, (jnp.arange(T) + 1) % E], -1), (L, B, T, 2)
    )
    mask = jnp.ones((B, T), bool)
    np.testing.assert_allclose(float(load_balance_loss(uniform, spread, mask)), 1.0, rtol=1e-6)
    collapsed = jnp.zeros((L, B, T, E)).at[..., 0].set(1.0)
    assert float(load_balance_loss(collapsed, jnp.zeros((L, B, T, 2), int), mask)) == E
    # masked tokens don't count
    half = jnp.arange(T)[None, :] < T // 2
    probs = jnp.where(half[None, ..., None], collapsed, uniform)
    experts = jnp.where(half[None, ..., None], 0, spread)
    np.testing.assert_allclose(float(load_balance_loss(probs, experts, ~half)), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_weight_decay_only_on_attention_and_expert_linears():
    """Stacked layers make the norm scales [L, D] and the router [L, D, E]: rank alone would
    decay them (the first demo model was trained that way); where they live decides."""
    import jax
    from flax import nnx

    from grok_flax.demo.train import init_model, model_config

    for scan in (True, False):
        model = init_model(model_config(smoke=True).replace(scan_layers=scan), 0, 0.25)
        mask = decay_mask(nnx.state(model, nnx.Param))
        decayed = {
            jax.tree_util.keystr(p) for p, d in jax.tree_util.tree_leaves_with_path(mask) if d
        }
        every = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(mask)}
        assert decayed and all(
            ("'attn'" in p or "'moe'" in p) and "scale" not in p for p in decayed
        ), decayed
        linears = {
            p
            for p in every
            if any(
                f"'{n}'" in p for n in ("query", "key", "value", "linear", "linear_v", "linear_1")
            )
        }
        assert decayed == linears, decayed ^ linears
        assert not any("norm" in p or "router" in p or "embed" in p for p in decayed)


@pytest.mark.slow
def test_smoke_training_run(tmp_path):
    """The real pipeline on a tiny config: tokenizer, a few steps, int8 export, reload."""
    import sentencepiece as spm

    from grok_flax.demo import load

    s = TrainSettings(
        steps=24,
        batch_size=4,
        seq_len=64,
        lr=3e-3,
        warmup_steps=4,
        eval_every=0,
        vocab_size=512,
        seed=0,
    )
    summary = train(
        tmp_path,
        s,
        smoke=True,
        doc_limit=16,
        final_eval_windows=4,
        progress=False,
        plot=tmp_path / "loss.png",
    )
    ce = [r["ce"] for r in summary["log"]]
    assert len(ce) == 24
    assert np.mean(ce[-5:]) < np.mean(ce[:5]) - 0.1, ce
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps_done"] == 24

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert sp.get_piece_size() == 512
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    text = "def f(x):\n    return {'ü': x ** 2}  # ☃\n\tpass\n"
    assert sp.decode(sp.encode(text)) == text  # whitespace and bytes survive

    model, tok, cfg = load(tmp_path)
    assert cfg.quantized and cfg.num_experts == 8 and cfg.num_selected_experts == 2
    assert tok.bos_id == 1 and tok.vocab_size == 512
    ids = jnp.asarray([tok.encode("import os\n", bos=True)])
    assert bool(jnp.isfinite(model(ids)).all())
    # the int8 export costs little against the float weights it came from
    assert abs(summary["heldout_ce_int8"] - summary["heldout_ce_float"]) < 0.05


def _bundle_ready():
    from grok_flax.demo import DEMO_DIR, DEMO_FILES

    return all((DEMO_DIR / f).exists() for f in DEMO_FILES)


def test_bundled_demo_model_size_and_quality():
    """The shipped model: ≤ 25 MB, and far better than a unigram model on held-out code."""
    from grok_flax.demo import DEMO_DIR, load

    assert _bundle_ready(), f"{DEMO_DIR} is incomplete: run python -m grok_flax.demo.train"
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size <= MAX_BUNDLE_BYTES, f"bundle is {size / 1e6:.1f} MB"

    model, tok, cfg = load()
    assert cfg.quantized and cfg.num_experts == 8 and cfg.num_selected_experts == 2
    assert cfg.num_q_heads % cfg.num_kv_heads == 0 and cfg.num_kv_heads >= 2
    # 8 evenly spaced 256-token windows of the held-out files (never trained on)
    held = corpus.encode_documents(tok, corpus.stdlib_documents(split="heldout"))
    windows = heldout_windows(held, 256, max_windows=8)
    ce, n = cross_entropy(model(jnp.asarray(windows[:, :-1])), jnp.asarray(windows[:, 1:]))
    # baseline: a unigram model fitted to the held-out files themselves (in-sample, so
    # stronger than the usual unigram of the training stream)
    unigram = corpus.unigram_loss(held, windows[:, 1:], cfg.vocab_size)
    assert float(ce) < unigram - 1.0, (float(ce), unigram)


def test_heldout_split_is_by_file():
    held = corpus.stdlib_documents(split="heldout", limit=5)
    train = corpus.stdlib_documents(split="train", limit=20)
    assert held and train
    assert all(corpus.is_heldout(d.path) for d in held)
    assert not any(corpus.is_heldout(d.path) for d in train)
    assert all("test" not in d.path.split("/")[:-1] for d in held + train)


def test_heldout_windows_cover_the_stream_in_order():
    s = np.arange(1, 12, dtype=np.int32)
    w = heldout_windows(s, 4)
    assert w.tolist() == [[1, 2, 3, 4, 5], [5, 6, 7, 8, 9]]


def test_distinct_2_counts_repeated_pairs():
    from grok_flax.demo.eval import distinct_2

    assert distinct_2([1, 2, 3, 4]) == 1.0
    assert distinct_2([5, 5, 5, 5, 5]) == 0.25  # one distinct pair of four
    assert distinct_2([1, 2, 1, 2, 1]) == 0.5
    assert distinct_2([7]) == 1.0
