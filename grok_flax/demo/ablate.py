"""Which of Grok-1's details matter? Train a small Grok with one detail changed at a time.

    python -m grok_flax.demo.ablate --out docs/ablation.json          # the study
    python -m grok_flax.demo.ablate --quick --variants baseline no_cap --out /tmp/a.json

Every run trains the same small sibling of the demo architecture (``train.model_config(
smoke=True)``: 2 layers, D = 64, 4 query / 2 key-value heads, 8 experts, top-2, the soft cap,
sandwich norms, RoPE, the multipliers) on the standard-library corpus with the bundled
tokenizer. For one seed, every variant starts from the same initialisation (where the shapes
agree) and sees the same batches in the same order; only the one detail differs. The
variants (``VARIANTS``) are config switches or training options that exist for this
(``GrokConfig.attn_logit_cap``, ``use_rope``, ``post_norms``, ``renormalize_gates``,
``num_selected_experts``, ``num_experts``, the two multipliers; ``aux_weight``), never edits
of the model code: at their defaults the model is the release.

Measured per run, on held-out windows (files training never saw):

- held-out cross-entropy (nats per token);
- expert load: each expert's share of the (token, choice) assignments, per layer (min, max);
- attention sharpness: the fraction of (query position, head) rows that put ≥ 90% of their
  weight on a single key, over query positions ≥ 16 (earlier rows see so few keys that they
  are sharp by arithmetic);
- the largest absolute attention logit *before* the soft cap (``attention_logit_max``);
- the gates' total weight per token (the sum of the chosen top-k probabilities);

and during training, stability: the number of *loss spikes* — steps whose training
cross-entropy exceeds the mean of the previous ``spike_window`` (20) steps by more than
``spike_nats`` (1 nat: the baseline's batch-to-batch noise has a standard deviation of about
0.3 nats, and its largest excursion in a trial run was 0.8) — and whether a loss became NaN
or infinite (the run stops there).

Per variant the JSON holds every seed's values and, per metric, the mean and the *spread*
(half the range over seeds), and the paired difference from the baseline (same seed, same
batches): its mean and spread. ``--jobs`` runs variants in parallel processes; the numbers do
not depend on it (each run is its own deterministic computation).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_flax.config import GrokConfig
from grok_flax.demo import corpus, train

__all__ = [
    "VARIANTS",
    "StudyData",
    "StudySettings",
    "Variant",
    "load_data",
    "loss_spikes",
    "measure",
    "run_one",
    "run_study",
    "study_config",
    "summarize",
    "table",
    "variant_config",
    "variant_settings",
]


# ---------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One detail changed: ``config`` holds the ``GrokConfig`` fields it sets, ``training``
    the ``StudySettings`` fields (e.g. ``aux_weight``); everything else stays the baseline's."""

    name: str  # identifier: the --variants name and the JSON key
    label: str  # short label for tables and figures
    detail: str  # what is changed, in one sentence
    config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "baseline (Grok-1's choices)", "nothing: cap 30, sandwich norms, RoPE, "
            "raw top-2 gates of 8 experts, multipliers, balancing term 0.01"),
    Variant("no_cap", "no soft cap", "attention logits uncapped", {"attn_logit_cap": None}),
    Variant("cap_5", "cap 5", "logits squashed by 5·tanh(x/5)", {"attn_logit_cap": 5.0}),
    Variant("pre_norm", "pre-norm only", "no post-attention / post-MoE RMSNorm",
            {"post_norms": False}),
    Variant("no_rope", "no RoPE", "no rotary embedding: only the causal mask orders tokens",
            {"use_rope": False}),
    Variant("renorm_gates", "renormalised gates", "top-2 gates divided by their sum",
            {"renormalize_gates": True}),
    Variant("top_1", "top-1 routing", "one expert per token (half the active expert weights)",
            {"num_selected_experts": 1}),
    Variant("experts_4", "top-2 of 4 experts", "4 experts, top-2: the same active parameters, "
            "half the stored expert weights", {"num_experts": 4}),
    Variant("no_balance", "no balancing term", "aux_weight 0: the router is free to collapse",
            training={"aux_weight": 0.0}),
    Variant("no_multipliers", "no multipliers", "embedding and output multipliers 1.0",
            {"embedding_multiplier_scale": 1.0, "output_multiplier_scale": 1.0}),
)  # fmt: skip
_BY_NAME = {v.name: v for v in VARIANTS}


@dataclass(frozen=True)
class StudySettings:
    """The study's schedule, data and measurement rules (the defaults are the stored study's)."""

    steps: int = 200
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 1e-2  # above train.py's 3e-3: short runs, and stress for the stability details
    warmup_steps: int = 20
    aux_weight: float = 0.01  # train.TrainSettings' default (Switch Transformer)
    train_docs: int = 100  # the first N training files of the stdlib corpus
    heldout_docs: int = 20  # the first N held-out files
    eval_windows: int = 128  # held-out windows of seq_len tokens, evenly spaced
    eval_every: int = 50  # held-out CE on the way (the curve a short re-run is checked on)
    sharp_threshold: float = 0.9  # a row is "sharp" if its largest weight is at least this
    sharp_min_position: int = 16  # rows at earlier query positions are not counted
    spike_window: int = 20
    spike_nats: float = 1.0

    @classmethod
    def quick(cls) -> StudySettings:
        """A few steps on few files: checks the pipeline, measures nothing."""
        return cls(steps=12, warmup_steps=3, train_docs=8, heldout_docs=4, eval_windows=8,
                   eval_every=6, spike_window=4)  # fmt: skip


def study_config(vocab_size: int = 4096, seq_len: int = 64) -> GrokConfig:
    """The baseline architecture: the smoke sibling of the demo model (``train.model_config``)."""
    return train.model_config(smoke=True, vocab_size=vocab_size, seq_len=seq_len)


def variant_config(variant: Variant | str, base: GrokConfig) -> GrokConfig:
    """``base`` with the variant's config fields changed (and only those)."""
    v = _BY_NAME[variant] if isinstance(variant, str) else variant
    return base.replace(**v.config)


def variant_settings(variant: Variant | str, settings: StudySettings) -> StudySettings:
    """``settings`` with the variant's training options changed (and only those)."""
    v = _BY_NAME[variant] if isinstance(variant, str) else variant
    return dataclasses.replace(settings, **v.training)


def _train_settings(s: StudySettings, seed: int, vocab_size: int) -> train.TrainSettings:
    return train.TrainSettings(
        steps=s.steps, batch_size=s.batch_size, seq_len=s.seq_len, lr=s.lr,
        warmup_steps=s.warmup_steps, aux_weight=s.aux_weight, seed=seed, vocab_size=vocab_size,
    )  # fmt: skip


# -------------------------------------------------------------------------------------- data
@dataclass
class StudyData:
    """The token streams: training, and the fixed held-out windows [N, seq_len + 1]."""

    train: np.ndarray
    heldout: np.ndarray
    vocab_size: int


def load_data(settings: StudySettings) -> StudyData:
    """The first ``train_docs`` / ``heldout_docs`` files of the stdlib corpus, encoded with the
    bundled tokenizer (the demo model's, 4,096 pieces)."""
    from grok_flax.demo import demo_dir
    from grok_flax.running.tokenizer import Tokenizer

    tok = Tokenizer(demo_dir() / "tokenizer.model")
    docs = corpus.stdlib_documents(split="train", limit=settings.train_docs)
    held = corpus.stdlib_documents(split="heldout", limit=settings.heldout_docs)
    stream = corpus.encode_documents(tok, docs)
    windows = train.heldout_windows(
        corpus.encode_documents(tok, held), settings.seq_len, settings.eval_windows
    )
    return StudyData(stream, windows, tok.vocab_size)


# ------------------------------------------------------------------------------- measurement
@nnx.jit
def _probe(model, inputs, targets):
    logits, cap = model(inputs, capture=("attention", "attention_logit_max", "routing"))
    ce, n = train.cross_entropy(logits, targets, model.cfg.pad_token)
    return ce * n, n, cap


def measure(model, windows: np.ndarray, settings: StudySettings, batch: int = 16) -> dict:
    """Held-out CE and the routing / attention statistics of ``model`` on ``windows``
    [N, T+1]: per layer the experts' smallest and largest share of the assignments, the
    fraction of sharp attention rows, the largest logit before the cap, the mean gate total."""
    cfg = model.cfg
    L, E = cfg.num_layers, cfg.num_experts
    total = count = 0.0
    counts = np.zeros((L, E))
    sharp = np.zeros(L)
    rows = 0
    logit_max = np.zeros(L)
    gate_sum = np.zeros(L)
    tokens = 0
    for i in range(0, len(windows), batch):
        w = windows[i : i + batch]
        s, n, cap = _probe(model, jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:]))
        total, count = total + float(s), count + float(n)
        valid = w[:, :-1] > cfg.pad_token  # [B, T]
        experts = np.asarray(cap["experts"])  # [L, B, T, k]
        for layer in range(L):
            counts[layer] += np.bincount(experts[layer][valid].ravel(), minlength=E)
        gate_sum += np.asarray(cap["gates"]).sum(-1)[:, valid].sum(-1)
        tokens += int(valid.sum())
        att = np.asarray(cap["attention"])[..., settings.sharp_min_position :, :]  # [L,B,K,R,T',S]
        keep = valid[None, :, None, None, settings.sharp_min_position :]
        top = att.max(-1)
        sharp += ((top >= settings.sharp_threshold) & keep).sum(axis=(1, 2, 3, 4))
        rows += int(keep.sum()) * att.shape[2] * att.shape[3]
        logit_max = np.maximum(logit_max, np.asarray(cap["attention_logit_max"]).max(-1))
    share = counts / counts.sum(-1, keepdims=True)
    return dict(
        heldout_ce=total / max(count, 1.0),
        load_min=share.min(-1).tolist(),
        load_max=share.max(-1).tolist(),
        sharp=(sharp / max(rows, 1)).tolist(),
        logit_max=logit_max.tolist(),
        gate_sum=(gate_sum / max(tokens, 1)).tolist(),
    )


def loss_spikes(ce: Sequence[float], window: int = 20, nats: float = 0.5) -> list[int]:
    """The (1-based) steps whose loss exceeds the mean of the previous ``window`` steps by
    more than ``nats``."""
    ce = np.asarray(ce, np.float64)
    return [t + 1 for t in range(window, len(ce)) if ce[t] > ce[t - window : t].mean() + nats]


# -------------------------------------------------------------------------------------- runs
@functools.cache
def _step_fn(aux_weight: float):
    return train.make_train_step(aux_weight)  # one jitted step per aux weight, per process


_TX: dict = {}


def _optimizer(model, ts: train.TrainSettings):
    """``train.make_optimizer``'s optimizer; its transformation is built once per schedule and
    re-used for later seeds, so the jitted step (keyed on it) compiles once per variant."""
    key = dataclasses.replace(ts, seed=0)
    if key not in _TX:
        opt, _ = train.make_optimizer(model, ts)
        _TX[key] = opt.tx
        return opt
    return nnx.Optimizer(model, _TX[key], wrt=nnx.Param)


def run_one(
    variant: Variant | str,
    seed: int,
    settings: StudySettings,
    data: StudyData,
    *,
    stop_at: int | None = None,
) -> dict:
    """Train one variant from ``seed`` (the ``steps``-long schedule, stopped after ``stop_at``
    steps if given) and measure it: the per-seed record of the JSON."""
    v = _BY_NAME[variant] if isinstance(variant, str) else variant
    s = variant_settings(v, settings)
    cfg = variant_config(v, study_config(data.vocab_size, s.seq_len))
    ts = _train_settings(s, seed, data.vocab_size)
    t0 = time.perf_counter()
    model = train.init_model(cfg, seed, ts.embed_init_std)
    optimizer = _optimizer(model, ts)
    step = _step_fn(s.aux_weight)
    rng = np.random.default_rng(seed)  # the batches: the same for every variant of a seed
    ce_log, aux_log, curve, nonfinite = [], [], [], None
    for i in range(stop_at or s.steps):
        x, y = train.sample_batch(rng, data.train, s.batch_size, s.seq_len)
        m = step(model, optimizer, jnp.asarray(x), jnp.asarray(y))
        ce, aux = float(m["ce"]), float(m["aux"])
        ce_log.append(ce)
        aux_log.append(aux)
        if not (math.isfinite(ce) and math.isfinite(float(m["loss"]))):
            nonfinite = i + 1
            break
        if (i + 1) % s.eval_every == 0:
            curve.append([i + 1, train.evaluate_loss(model, data.heldout)])
    seconds = time.perf_counter() - t0
    stats = measure(model, data.heldout, s) if nonfinite is None else {}
    return dict(
        variant=v.name,
        seed=seed,
        steps_done=len(ce_log),
        nonfinite_step=nonfinite,
        spikes=loss_spikes(ce_log, s.spike_window, s.spike_nats),
        train_ce_last20=float(np.mean(ce_log[-20:])),
        aux_last20=float(np.mean(aux_log[-20:])),
        heldout_curve=curve,
        train_ce=[round(c, 3) for c in ce_log],
        seconds=round(seconds, 1),
        **stats,
    )


def _run_variant(name: str, seeds: Sequence[int], settings: StudySettings) -> list[dict]:
    data = load_data(settings)
    return [run_one(name, seed, settings, data) for seed in seeds]


# ---------------------------------------------------------------------------------- summary
_SCALARS = {  # per-run scalar -> how it is made from the per-layer values
    "heldout_ce": lambda r: r["heldout_ce"],
    "load_min": lambda r: min(r["load_min"]),
    "load_max": lambda r: max(r["load_max"]),
    "sharp": lambda r: float(np.mean(r["sharp"])),
    "logit_max": lambda r: max(r["logit_max"]),
    "gate_sum": lambda r: float(np.mean(r["gate_sum"])),
    "spikes": lambda r: len(r["spikes"]),
}


def _mean_spread(values) -> dict:
    a = np.asarray(values, np.float64)
    if not np.all(np.isfinite(a)):
        return dict(mean=None, spread=None, values=[None if not np.isfinite(x) else x for x in a])
    return dict(mean=float(a.mean()), spread=float((a.max() - a.min()) / 2), values=a.tolist())


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per variant: each scalar's mean and spread (half the range over seeds; per-layer values
    reduced as: load min of layers' min, max of max, sharpness mean, logit max), the paired
    difference in held-out CE from the baseline's same seed, NaN runs and total spikes."""
    base = {r["seed"]: r for r in runs.get("baseline", [])}
    out = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["nonfinite_step"] is None]
        row = {k: _mean_spread([f(r) for r in ok]) for k, f in _SCALARS.items()} if ok else {}
        paired = [r["heldout_ce"] - base[r["seed"]]["heldout_ce"] for r in ok if r["seed"] in base]
        row["delta_ce"] = _mean_spread(paired) if paired else None
        row["seeds"] = [r["seed"] for r in rs]
        row["nonfinite_runs"] = sum(r["nonfinite_step"] is not None for r in rs)
        out[name] = row
    return out


def table(study: dict) -> str:
    """The study's summary as a plain-text table (one line per variant)."""
    head = (f"{'variant':<28}{'held-out CE':>15}{'Δ vs base':>16}{'load min…max':>15}"
            f"{'sharp':>8}{'max logit':>11}{'spikes':>8}{'NaN':>5}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for name, row in study["summary"].items():
        label = _BY_NAME[name].label if name in _BY_NAME else name
        if not row.get("heldout_ce"):
            lines.append(f"{label:<28}{'(no finite run)':>15}")
            continue
        ce, d = row["heldout_ce"], row["delta_ce"]
        dtext = "" if d is None or d["mean"] is None else f"{d['mean']:+.3f} ± {d['spread']:.3f}"
        lines.append(
            f"{label:<28}{ce['mean']:>8.3f} ± {ce['spread']:.3f}{dtext:>16}"
            f"{row['load_min']['mean']:>8.1%}…{row['load_max']['mean']:<6.1%}"
            f"{row['sharp']['mean']:>8.1%}{row['logit_max']['mean']:>11.1f}"
            f"{sum(row['spikes']['values']):>8.0f}{row['nonfinite_runs']:>5}"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- study
def _git_commit() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
        return sha, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return None, None


def run_study(
    settings: StudySettings = StudySettings(),
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] | None = None,
    jobs: int = 2,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Every variant on every seed (``jobs`` variants at a time, each in its own process);
    returns the JSON-ready study: provenance, settings, per-seed runs and the summary."""
    names = list(variants or [v.name for v in VARIANTS])
    unknown = sorted(set(names) - set(_BY_NAME))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(_BY_NAME)}")
    if "baseline" not in names:
        names.insert(0, "baseline")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    if jobs <= 1:
        for name in names:
            runs[name] = _run_variant(name, seeds, settings)
            if progress:
                print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
        from grok_flax.demo import ablate as this  # by its module name, also under -m

        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {n: pool.submit(this._run_variant, n, list(seeds), settings) for n in names}
            for name in names:
                runs[name] = futures[name].result()
                if progress:
                    print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    sha, dirty = _git_commit()
    cfg = study_config(4096, settings.seq_len)
    return dict(
        command=command,
        commit=sha,
        worktree_dirty=dirty,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            jax=jax.__version__,
            backend=jax.default_backend(),
            python=sys.version.split()[0],
            load_average_before=[round(x, 2) for x in load_before],
            load_average_after=[round(x, 2) for x in os.getloadavg()],
        ),
        wall_seconds=round(wall, 1),
        jobs=jobs,
        seeds=list(seeds),
        steps=settings.steps,
        settings=dataclasses.asdict(settings),
        model=dict(
            (k, getattr(cfg, k))
            for k in (
                "num_layers",
                "emb_size",
                "key_size",
                "num_q_heads",
                "num_kv_heads",
                "num_experts",
                "num_selected_experts",
                "ffn_size",
                "attn_logit_cap",
                "embedding_multiplier_scale",
                "output_multiplier_scale",
            )
        ),  # fmt: skip
        variants={n: dataclasses.asdict(_BY_NAME[n]) for n in names},
        runs=runs,
        summary=summarize(runs),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m grok_flax.demo.ablate``: run the study and write its JSON."""
    p = argparse.ArgumentParser(
        prog="python -m grok_flax.demo.ablate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="docs/ablation.json", help="the JSON written")
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=None, choices=[v.name for v in VARIANTS],
                   help="default: all (the baseline is always run)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once (processes)")
    p.add_argument("--quick", action="store_true", help="a few steps on few files (tests)")
    args = p.parse_args(argv)
    s = StudySettings.quick() if args.quick else StudySettings()
    if args.steps is not None:
        s = dataclasses.replace(s, steps=args.steps)
    command = " ".join(["python -m grok_flax.demo.ablate", *(argv or sys.argv[1:])])
    study = run_study(s, args.seeds, args.variants, args.jobs, command=command)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(study, indent=1) + "\n")
    print(table(study))
    print(f"wrote {out}: {len(study['runs'])} variants × {len(args.seeds)} seeds, "
          f"{s.steps} steps each, in {study['wall_seconds'] / 60:.1f} min")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
