"""Train the bundled demo model: a small Grok-1-architecture model on the Python stdlib.

One command rebuilds ``grok_flax/demo/bundled/`` from scratch (corpus, tokenizer, training, int8
export), CPU only, with a fixed seed::

    python -m grok_flax.demo.train --out grok_flax/demo/bundled --steps 1800 --seed 0 \\
        --plot docs/demo_loss.png

``--smoke`` is the same pipeline on a tiny config for a couple of minutes' worth of CI.

What is trained is exactly ``grok_flax.Grok`` (``GrokConfig.small()``) with float linears
(``quantized=False``) in float32; ``save_checkpoint`` then writes the release format with the
linears quantized to int8 (block counts from the config), as the bundled model ships.

The loss is next-token cross-entropy (pad targets ignored) plus a Switch-Transformer style
router load-balancing term, ``aux_weight · E · Σ_e f_e · P_e`` per layer (f_e: the fraction of
the token→expert assignments that went to expert e, P_e: the mean router probability of e),
averaged over layers; it is 1 when routing is uniform. Grok-1's released code is inference
only and has no such term — it is here so that the 8 experts don't collapse onto one or two.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_flax.config import GrokConfig
from grok_flax.demo import corpus
from grok_flax.model import Grok, param_count


@dataclass(frozen=True)
class TrainSettings:
    """The training run's settings; the defaults are the bundled model's (its schedule)."""

    steps: int = 1800  # the bundled model's schedule (42 min on 2 idle CPU cores)
    batch_size: int = 4
    seq_len: int = 256  # tokens per training window (the model sees seq_len inputs)
    lr: float = 3e-3
    warmup_steps: int = 40
    end_lr_ratio: float = 0.1  # cosine decays to lr · end_lr_ratio
    weight_decay: float = 0.1  # on the linear weights only (not embedding, norms, router)
    clip_norm: float = 1.0
    aux_weight: float = 0.01  # router load-balancing loss weight (Switch Transformer: 0.01)
    embed_init_std: float = 0.25  # embedding init std (×embedding_multiplier_scale at input)
    seed: int = 0
    eval_every: int = 50
    eval_windows: int = 16  # held-out windows for the in-training evaluations
    vocab_size: int = 4096
    minutes: float | None = None  # optional wall-clock cap: stop early (recorded) if reached
    stop_at: int | None = None  # stop after this many steps of the ``steps``-long schedule


# ----------------------------------------------------------------------------------- configs
def model_config(smoke: bool = False, vocab_size: int = 4096, seq_len: int = 256) -> GrokConfig:
    """The architecture trained: ``GrokConfig.small()`` (or a tiny one for smoke runs), with
    float linears, float32 compute and the training-friendly algorithms (same function)."""
    if smoke:
        cfg = GrokConfig.small(
            num_layers=2,
            emb_size=64,
            key_size=16,
            num_q_heads=4,
            num_kv_heads=2,
            widening_factor=2.0,
            embedding_multiplier_scale=8.0,
            output_multiplier_scale=0.125,
            attn_output_multiplier=0.25,
            moe_out_scale_blocks=4,
            attn_out_scale_blocks=4,
        )
    else:
        cfg = GrokConfig.small()
    return cfg.replace(
        vocab_size=vocab_size,
        sequence_len=seq_len,
        quantized=False,
        compute_dtype="float32",
        attention_impl="naive",
        moe_impl="tiled",
        moe_tile=128,
    )


def release_config(cfg: GrokConfig) -> GrokConfig:
    """The config written next to the checkpoint: int8 linears and the inference defaults."""
    return cfg.replace(
        quantized=True,
        compute_dtype="auto",
        attention_impl="chunked",
        moe_impl="sparse",
        moe_tile=GrokConfig.moe_tile,
        attention_chunk=min(GrokConfig.attention_chunk, cfg.sequence_len),
    )


# ------------------------------------------------------------------------------------ losses
def cross_entropy(logits, targets, pad_id: int = corpus.PAD_ID):
    """Mean next-token cross-entropy (nats) over non-pad targets; also returns the count."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    mask = (targets != pad_id).astype(jnp.float32)
    n = jnp.sum(mask)
    return jnp.sum((logz - picked) * mask) / jnp.maximum(n, 1.0), n


def load_balance_loss(router_probs, experts, mask):
    """Switch-Transformer load balancing, averaged over layers.

    router_probs [L, B, T, E], experts [L, B, T, k], mask [B, T] (tokens that count).
    Per layer: E · Σ_e f_e · P_e with f_e the share of the k·tokens assignments that went to
    expert e and P_e the mean router probability of e; 1.0 for perfectly uniform routing.
    """
    E = router_probs.shape[-1]
    m = mask.astype(jnp.float32)[None, :, :, None]  # [1, B, T, 1]
    n = jnp.maximum(jnp.sum(mask), 1.0)
    assign = jax.nn.one_hot(experts, E, dtype=jnp.float32).mean(axis=-2)  # [L, B, T, E]
    f = jnp.sum(assign * m, axis=(1, 2)) / n  # [L, E]
    p = jnp.sum(router_probs.astype(jnp.float32) * m, axis=(1, 2)) / n  # [L, E]
    return jnp.mean(E * jnp.sum(f * p, axis=-1))


def lm_loss(model: Grok, inputs, targets, aux_weight: float):
    """(total loss, metrics) for one batch: cross-entropy + aux_weight × load balancing."""
    logits, caught = model(inputs, capture=("routing",))
    ce, n = cross_entropy(logits, targets, model.cfg.pad_token)
    aux = load_balance_loss(caught["router_probs"], caught["experts"], inputs > model.cfg.pad_token)
    loss = ce + aux_weight * aux
    return loss, dict(loss=loss, ce=ce, aux=aux, tokens=n)


# ------------------------------------------------------------------------------ model & opt
def init_model(cfg: GrokConfig, seed: int, embed_init_std: float) -> Grok:
    """``Grok(cfg)`` with the embedding re-drawn at ``embed_init_std``.

    The model's own init draws N(0, 1) embeddings; with the input multiplier (~sqrt(D)) the
    residual stream would start ~sqrt(D) times larger than what each sandwich-normed block
    adds, so the blocks could barely move it and tied un-embedding would predict the input
    token again. A smaller std starts the blocks and the embedding on an equal footing.
    """
    model = Grok(cfg, rngs=nnx.Rngs(seed))
    key = jax.random.fold_in(jax.random.key(seed), 1)
    emb = jax.random.normal(key, model.embed[...].shape, jnp.float32) * embed_init_std
    model.embed.set_value(emb.astype(model.embed[...].dtype))
    return model


def decay_mask(params):
    """Weight decay on the attention and expert linears only.

    Chosen by where a parameter lives, not by its rank: with stacked layers the RMSNorm
    scales are ``[L, D]`` and the router is ``[L, D, E]``, as many axes as a linear weight.
    """

    def decay(path, leaf):
        names = {str(getattr(p, "key", getattr(p, "name", p))) for p in path}
        return bool(names & {"attn", "moe"}) and "scale" not in names

    return jax.tree_util.tree_map_with_path(decay, params)


def make_optimizer(model: Grok, s: TrainSettings):
    """AdamW (weight decay on the attention and expert linears only: ``decay_mask``) after
    global-norm clipping, on a warm-up + cosine schedule: (``nnx.Optimizer``, the schedule)."""
    import optax

    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=s.lr,
        warmup_steps=min(s.warmup_steps, max(s.steps - 1, 1)),
        decay_steps=max(s.steps, 2),
        end_value=s.lr * s.end_lr_ratio,
    )
    tx = optax.chain(
        optax.clip_by_global_norm(s.clip_norm),
        optax.adamw(
            schedule, b1=0.9, b2=0.95, eps=1e-8, weight_decay=s.weight_decay, mask=decay_mask
        ),
    )
    return nnx.Optimizer(model, tx, wrt=nnx.Param), schedule


def make_train_step(aux_weight: float):
    """The jitted training step: the loss (cross-entropy + ``aux_weight`` × the
    load-balancing term), its gradient, one optimizer update; returns the step's metrics."""

    @nnx.jit
    def train_step(model, optimizer, inputs, targets):
        def loss_fn(m):
            return lm_loss(m, inputs, targets, aux_weight)

        (_, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return metrics

    return train_step


@nnx.jit
def _eval_step(model, inputs, targets):
    logits = model(inputs)
    ce, n = cross_entropy(logits, targets, model.cfg.pad_token)
    return ce * n, n


# -------------------------------------------------------------------------------------- data
def heldout_windows(stream: np.ndarray, seq_len: int, max_windows: int | None = None):
    """Non-overlapping [N, seq_len + 1] windows of a token stream, in order (consecutive
    windows share their boundary token). With ``max_windows``, that many evenly spaced ones,
    so a subset still spans every document."""
    n = (len(stream) - 1) // seq_len
    starts = np.arange(n)
    if max_windows is not None and max_windows < n:
        starts = np.linspace(0, n - 1, max_windows).round().astype(int)
    idx = starts[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return stream[idx]


def evaluate_loss(model: Grok, windows: np.ndarray, batch_size: int = 8) -> float:
    """Token-weighted mean cross-entropy (nats) of next-token prediction over ``windows``."""
    total, count = 0.0, 0.0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size]
        if len(w) < batch_size:  # pad the last batch with pad rows (ignored targets)
            w = np.concatenate([w, np.zeros((batch_size - len(w), w.shape[1]), w.dtype)])
        s, n = _eval_step(model, jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:]))
        total += float(s)
        count += float(n)
    return total / max(count, 1.0)


def sample_batch(rng: np.random.Generator, stream: np.ndarray, batch: int, seq_len: int):
    """``batch`` random windows of the token stream: (inputs, targets) [batch, seq_len], the
    targets shifted by one token."""
    starts = rng.integers(0, len(stream) - seq_len - 1, size=batch)
    w = stream[starts[:, None] + np.arange(seq_len + 1)[None, :]]
    return w[:, :-1], w[:, 1:]


@dataclass
class Data:
    """The tokenized corpus: the tokenizer's file, the train and held-out token streams, and
    how many files each holds."""

    tokenizer_path: Path
    train: np.ndarray
    heldout: np.ndarray
    train_docs: int
    heldout_docs: int


def prepare_data(
    out: Path, vocab_size: int, doc_limit: int | None = None, tokenizer_max_bytes: int | None = None
) -> Data:
    """Corpus -> ``out/tokenizer.model`` -> token streams (train, held-out)."""
    import sentencepiece as spm

    train_docs = corpus.stdlib_documents(split="train", limit=doc_limit)
    held_docs = corpus.stdlib_documents(split="heldout", limit=doc_limit)
    if not train_docs or not held_docs:
        raise RuntimeError(f"no stdlib sources found under {corpus.stdlib_root()}")
    model_path = corpus.train_tokenizer(
        train_docs, out / "tokenizer", vocab_size, max_bytes=tokenizer_max_bytes
    )
    vocab_file = out / "tokenizer.vocab"
    if vocab_file.exists():
        vocab_file.unlink()
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    return Data(
        model_path,
        corpus.encode_documents(sp, train_docs),
        corpus.encode_documents(sp, held_docs),
        len(train_docs),
        len(held_docs),
    )


# ------------------------------------------------------------------------------------ export
def export(model: Grok, out: Path, float_out: Path | None = None) -> GrokConfig:
    """Write ``out/ckpt-0`` (int8 linears) and ``out/config.json``; optionally the float
    weights to ``float_out/ckpt-0`` (for measuring the cost of quantisation)."""
    ckpt = out / "ckpt-0"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    from grok_flax.checkpoint import save_checkpoint

    save_checkpoint(model, out)
    cfg = release_config(model.cfg)
    cfg.to_json(out / "config.json")
    if float_out is not None:
        if (float_out / "ckpt-0").exists():
            shutil.rmtree(float_out / "ckpt-0")
        save_checkpoint(model, float_out, quantize_floats=False)
        model.cfg.replace(compute_dtype="auto").to_json(float_out / "config.json")
    return cfg


def bundle_bytes(out: Path) -> int:
    """Bytes of every file under ``out`` (the bundled model's size)."""
    return sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------- train
def train(
    out: str | os.PathLike,
    settings: TrainSettings = TrainSettings(),
    *,
    smoke: bool = False,
    plot: str | os.PathLike | None = None,
    float_out: str | os.PathLike | None = None,
    doc_limit: int | None = None,
    final_eval_windows: int = 256,
    progress: bool = True,
) -> dict:
    """The whole pipeline; returns (and writes to ``out/train_summary.json``) a summary."""
    s = settings
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(
        out, s.vocab_size, doc_limit=doc_limit, tokenizer_max_bytes=2_000_000 if smoke else None
    )
    cfg = model_config(smoke, s.vocab_size, s.seq_len)
    model = init_model(cfg, s.seed, s.embed_init_std)
    optimizer, schedule = make_optimizer(model, s)
    step_fn = make_train_step(s.aux_weight)
    rng = np.random.default_rng(s.seed)
    eval_w = heldout_windows(data.heldout, s.seq_len, s.eval_windows)
    unigram = corpus.unigram_loss(
        data.train, heldout_windows(data.heldout, s.seq_len)[:, 1:], cfg.vocab_size
    )
    n_params = param_count(model)
    log: list[dict] = []
    evals: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.steps, desc="train", unit="step", dynamic_ncols=True)
    t_train = time.perf_counter()
    stopped_early = None
    for step in range(s.steps):
        x, y = sample_batch(rng, data.train, s.batch_size, s.seq_len)
        m = step_fn(model, optimizer, jnp.asarray(x), jnp.asarray(y))
        m = {k: float(v) for k, v in m.items()}
        m.update(step=step + 1, lr=float(schedule(step)), time=time.perf_counter() - t_train)
        log.append(m)
        last = step + 1 == s.steps
        if s.eval_every and ((step + 1) % s.eval_every == 0 or last):
            evals.append(dict(step=step + 1, heldout_ce=evaluate_loss(model, eval_w)))
        if bar is not None:
            post = dict(ce=f"{m['ce']:.3f}", aux=f"{m['aux']:.3f}")
            if evals:
                post["heldout"] = f"{evals[-1]['heldout_ce']:.3f}"
            bar.set_postfix(post)
            bar.update(1)
        why = None
        if s.minutes is not None and not last and m["time"] > 60 * s.minutes:
            why = f"--minutes {s.minutes}"
        if s.stop_at is not None and not last and step + 1 >= s.stop_at:
            why = f"--stop-at {s.stop_at}"
        if why:
            stopped_early = (
                f"stopped by {why} after {step + 1} of {s.steps} steps (reproduce "
                f"with --steps {s.steps} --stop-at {step + 1})"
            )
            if not evals or evals[-1]["step"] != step + 1:
                evals.append(dict(step=step + 1, heldout_ce=evaluate_loss(model, eval_w)))
            break
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - t_train

    release = export(model, out, Path(float_out) if float_out else None)
    final_w = heldout_windows(data.heldout, s.seq_len, final_eval_windows)
    float_loss = evaluate_loss(model, final_w)
    from grok_flax.checkpoint import load_checkpoint

    q_model = load_checkpoint(out, release.replace(compute_dtype="float32"), progress=False)
    int8_loss = evaluate_loss(q_model, final_w)
    summary = dict(
        command=" ".join(["python -m grok_flax.demo.train", *sys.argv[1:]]) if not smoke else None,
        settings=dataclasses.asdict(s),
        smoke=smoke,
        python=sys.version.split()[0],
        train_docs=data.train_docs,
        heldout_docs=data.heldout_docs,
        train_tokens=int(len(data.train)),
        heldout_tokens=int(len(data.heldout)),
        tokens_seen=int(len(log) * s.batch_size * s.seq_len),
        steps_done=len(log),
        stopped_early=stopped_early,
        params=n_params,
        train_seconds=train_seconds,
        total_seconds=time.perf_counter() - t_start,
        heldout_eval_tokens=int((final_w[:, 1:] != corpus.PAD_ID).sum()),
        unigram_ce=unigram,
        heldout_ce_float=float_loss,
        heldout_ce_int8=int8_loss,
        heldout_ppl_int8=math.exp(int8_loss),
        unigram_ppl=math.exp(unigram),
        bundle_bytes=bundle_bytes(out),
        evals=evals,
        log=[{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in log],
    )
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if plot is not None:
        plot_loss(summary, plot)
    return summary


def plot_loss(summary: dict, path: str | os.PathLike) -> None:
    """Draw the training run's cross-entropy and load-balancing curves to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    log = summary["log"]
    steps = np.array([r["step"] for r in log])
    ce = np.array([r["ce"] for r in log])
    aux = np.array([r["aux"] for r in log])
    k = max(1, min(20, len(ce) // 10))
    smooth = np.convolve(ce, np.ones(k) / k, mode="valid")
    fig = Figure(figsize=(11, 4))
    a1, a2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[3, 2]))
    a1.plot(steps, ce, color="0.8", lw=0.8, label="train CE (per batch)")
    a1.plot(steps[k - 1 :], smooth, color="C0", label=f"train CE ({k}-step mean)")
    ev = summary["evals"]
    a1.plot(
        [e["step"] for e in ev],
        [e["heldout_ce"] for e in ev],
        "o-",
        color="C3",
        ms=3,
        label="held-out CE",
    )
    a1.axhline(
        summary["unigram_ce"],
        color="k",
        ls="--",
        lw=1,
        label=f"unigram baseline ({summary['unigram_ce']:.2f})",
    )
    a1.set_xlabel("step")
    a1.set_ylabel("cross-entropy (nats/token)")
    a1.set_ylim(0, max(9.0, float(ce[:5].max()) if len(ce) else 9.0))
    a1.legend()
    a1.set_title("demo model: next-token loss")
    a2.plot(steps, aux, color="C2")
    a2.axhline(1.0, color="k", ls=":", lw=1, label="uniform routing (1.0)")
    a2.set_xlabel("step")
    a2.set_title("router load-balancing term E·Σ f·P")
    a2.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------- cli
def main(argv: list[str] | None = None) -> int:
    """``python -m grok_flax.demo.train``: train the demo model and write it as ``bundled/``
    is written."""
    d = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m grok_flax.demo.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (ckpt-0/, tokenizer.model, config.json, "
        "train_summary.json); default: a temp dir with --smoke, else required",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny config, few docs and steps: the CI check of the pipeline",
    )
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {d.steps})")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock cap on training; stops early (and says so) if reached",
    )
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this many steps of the --steps-long schedule (the exact "
        "replay of a run that --minutes cut short)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--aux-weight", type=float, default=d.aux_weight)
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--embed-init-std", type=float, default=d.embed_init_std)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--plot", default=None, help="loss-curve PNG (default: OUT/loss_curve.png)")
    p.add_argument(
        "--float-out",
        default=None,
        help="also write the float (unquantized) weights here, outside the bundle",
    )
    args = p.parse_args(argv)
    if args.smoke:
        s = TrainSettings(
            steps=args.steps or 30,
            batch_size=args.batch_size,
            seq_len=args.seq_len or 64,
            lr=args.lr,
            warmup_steps=5,
            aux_weight=args.aux_weight,
            seed=args.seed,
            eval_every=10,
            eval_windows=4,
            vocab_size=args.vocab_size or 512,
            minutes=args.minutes,
            stop_at=args.stop_at,
        )
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="grok_smoke_"))
    else:
        if args.out is None:
            p.error("--out is required (e.g. --out grok_flax/demo/bundled)")
        s = TrainSettings(
            steps=args.steps or d.steps,
            batch_size=args.batch_size,
            seq_len=args.seq_len or d.seq_len,
            lr=args.lr,
            aux_weight=args.aux_weight,
            seed=args.seed,
            vocab_size=args.vocab_size or d.vocab_size,
            minutes=args.minutes,
            embed_init_std=args.embed_init_std,
            warmup_steps=args.warmup_steps,
            stop_at=args.stop_at,
        )
        out = Path(args.out)
    summary = train(
        out,
        s,
        smoke=args.smoke,
        plot=args.plot or out / "loss_curve.png",
        float_out=args.float_out,
        doc_limit=40 if args.smoke else None,
        final_eval_windows=8 if args.smoke else 256,
    )
    print(
        f"wrote {out}: {summary['bundle_bytes'] / 1e6:.2f} MB; "
        f"{summary['steps_done']} steps in {summary['train_seconds'] / 60:.1f} min; "
        f"held-out CE float {summary['heldout_ce_float']:.3f} / int8 "
        f"{summary['heldout_ce_int8']:.3f} nats (unigram {summary['unigram_ce']:.3f})"
    )
    if summary["stopped_early"]:
        print(summary["stopped_early"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
