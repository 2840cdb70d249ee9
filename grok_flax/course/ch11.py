"""Checkers for the "Try this" exercises of notebook 11:
`notebooks/11_ablations.ipynb`."""

from __future__ import annotations

import numpy as np

from grok_flax.course import exercise
from grok_flax.demo import ablate

_BASE_ROPE = ablate.study_config().rope_base
_H = ablate.study_config().key_size


def _wavelength(base: float) -> float:
    """Positions per turn of the slowest RoPE pair: 2π·base^((H-2)/H)."""
    return 2 * np.pi * base ** ((_H - 2) / _H)


def _variant(config=None, training=None, name="rope_base_100"):
    return ablate.Variant(name, "RoPE base 100", "a much smaller RoPE base", config or {},
                          training or {})  # fmt: skip


@exercise(
    "11",
    task="Make an ablate.Variant (a new name) that changes only the RoPE base, to 100 — "
    "RoPE kept, every other field of the config and of the training as the baseline's.",
    wrong=[
        lambda: _variant({"use_rope": False}),
        lambda: _variant({"rope_base": 1_000_000.0}),
        lambda: _variant({"rope_base": 100.0, "sequence_len": 128}),
        lambda: _variant({"rope_base": 100.0}, name="baseline"),
        lambda: _variant({"rope_base": 100.0}, training={"lr": 3e-3}),
    ],
    praise=f"With base 100 the study model's slowest pair (H = {_H}) turns once every "
    f"~{_wavelength(100.0):,.0f} positions instead of ~{_wavelength(_BASE_ROPE):,.0f}: run it "
    "with ablate.run_one(my_variant, 0, settings, data) to see whether a 64-token model cares.",
)
def small_rope_base(answer) -> str | None:
    if not isinstance(answer, ablate.Variant):
        return (
            f"expected an ablate.Variant(name, label, detail, config, training), got "
            f"{type(answer).__name__}"
        )
    if answer.name in {v.name for v in ablate.VARIANTS}:
        return f"the name {answer.name!r} is taken by a variant of the study: give a new one"
    if answer.training:
        return (
            f"it also changes the training ({sorted(answer.training)}): an ablation changes "
            "one detail, so the same batches and schedule can show its effect alone"
        )
    changed = set(answer.config)
    if "use_rope" in changed:
        return "use_rope switches RoPE off altogether (that is the no_rope variant); keep RoPE "
    if changed != {"rope_base"}:
        extra = sorted(changed - {"rope_base"})
        return (
            f"it changes {extra or 'nothing'} — change rope_base only, or the effect can't be "
            "told apart from the others"
            if extra
            else "its config changes nothing: set rope_base"
        )
    base = answer.config["rope_base"]
    if not base < _BASE_ROPE:
        return (
            f"rope_base {base:g} is not smaller than the baseline's {_BASE_ROPE:,.0f}: a larger "
            "base makes the slow pairs slower still (long-context models do that)"
        )
    if not np.isclose(base, 100.0):
        return f"rope_base {base:g}: the task asks for 100"
    ablate.variant_config(answer, ablate.study_config())  # must be a valid config
    return None


_CONFIGS = [
    ablate.study_config(),
    ablate.variant_config("top_1", ablate.study_config()),
    ablate.variant_config("experts_4", ablate.study_config()),
]


def _expert_params(cfg):
    per_expert = 3 * cfg.emb_size * cfg.ffn_size  # linear, linear_v (D×F) and linear_1 (F×D)
    return cfg.num_experts * per_expert, cfg.num_selected_experts * per_expert


@exercise(
    "11",
    task="Write expert_params(cfg) -> (stored, active): the expert weights one MoE layer "
    "stores, and those one token multiplies by.",
    wrong=[
        lambda: lambda c: (3 * c.num_experts * c.emb_size * c.ffn_size,) * 2,
        lambda: (
            lambda c: (
                2 * c.num_experts * c.emb_size * c.ffn_size,
                2 * c.num_selected_experts * c.emb_size * c.ffn_size,
            )
        ),
        lambda: (
            lambda c: (
                3 * c.num_experts * c.emb_size * c.ffn_size,
                3 * c.emb_size * c.ffn_size,
            )
        ),
    ],
    praise="Top-2 of 4 stores half the expert weights of top-2 of 8 and uses exactly as many "
    "per token; top-1 of 8 stores as many and uses half. Grok-1: 4.8B stored per layer, 1.2B "
    "active.",
)
def expert_params(answer) -> str | None:
    from grok_flax.config import GrokConfig

    for cfg in [*_CONFIGS, GrokConfig.grok_1()]:
        stored, active = (int(x) for x in answer(cfg))
        want_s, want_a = _expert_params(cfg)
        E, k, D, F = cfg.num_experts, cfg.num_selected_experts, cfg.emb_size, cfg.ffn_size
        where = f"for E={E}, k={k}, D={D}, F={F}"
        if stored == want_s * 2 // 3 or active == want_a * 2 // 3:
            return (
                f"{where}: you count two matrices per expert; the GeGLU expert has three "
                "(linear and linear_v, D×F each, and linear_1, F×D)"
            )
        if stored != want_s:
            return f"{where}: stored should be E × 3·D·F = {want_s:,}, you gave {stored:,}"
        if active == stored and k < E:
            return f"{where}: a token uses only its k = {k} chosen experts, not all {E}"
        if active != want_a:
            return f"{where}: active should be k × 3·D·F = {want_a:,}, you gave {active:,}"
    return None


def _toy_study():
    base = [5.40, 5.46, 5.43]
    variant = [5.45, 5.50, 5.49]  # +0.05, +0.04, +0.06: paired spread 0.01, unpaired 0.055
    runs = {
        n: [dict(seed=s, heldout_ce=ce) for s, ce in zip((0, 1, 2), vals, strict=True)]
        for n, vals in [("baseline", base), ("x", variant)]
    }
    return dict(runs=runs)


def _paired(study, name):
    base = {r["seed"]: r["heldout_ce"] for r in study["runs"]["baseline"]}
    d = np.array([r["heldout_ce"] - base[r["seed"]] for r in study["runs"][name]])
    return float(d.mean()), float((d.max() - d.min()) / 2)


def _unpaired(study, name):
    b = np.array([r["heldout_ce"] for r in study["runs"]["baseline"]])
    v = np.array([r["heldout_ce"] for r in study["runs"][name]])
    return float(v.mean() - b.mean()), float((v.max() - v.min()) / 2 + (b.max() - b.min()) / 2)


@exercise(
    "11",
    task="Write paired_delta(study, name) -> (mean, spread) of the per-seed differences "
    "variant − baseline in held-out CE (same seed subtracted; spread = half their range).",
    wrong=[
        lambda: _unpaired,
        lambda: lambda st, n: (_paired(st, n)[0], 0.0),
        lambda: lambda st, n: (-_paired(st, n)[0], _paired(st, n)[1]),
    ],
    praise="Pairing takes out what the seed does to both runs alike (the start and the "
    "batches), so the differences usually vary less than either run's values.",
)
def paired_delta(answer) -> str | None:
    study = _toy_study()
    mean, spread = (float(x) for x in answer(study, "x"))
    want_m, want_s = _paired(study, "x")
    if np.isclose(mean, -want_m):
        return "the sign is reversed: take variant − baseline (> 0 means the variant is worse)"
    if not np.isclose(mean, want_m):
        return f"on a toy study the mean difference is {want_m:+.3f}, you gave {mean:+.3f}"
    if np.isclose(spread, _unpaired(study, "x")[1]):
        return (
            "that spread adds the two runs' own spreads, as if they were unrelated; subtract "
            "seed by seed first, then take half the range of the differences"
        )
    if not np.isclose(spread, want_s):
        return (
            f"on a toy study the differences are +0.05, +0.04, +0.06: half their range is "
            f"{want_s:.3f}, you gave {spread:.3f}"
        )
    return None
