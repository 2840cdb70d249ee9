"""Checkers for the "Try this" exercises of notebook 10:
`notebooks/10_training.ipynb`."""

from __future__ import annotations

import numpy as np

from grok_flax.course import exercise

_CASES = [(8, 2), (8, 1), (16, 2), (64, 6), (4, 4)]


def _wrong_collapse_value(E, k):
    return E / k


@exercise(
    "10",
    task="Give a function (E, k) -> the balancing term E·Σ f·P when top-k always picks experts "
    "0…k-1 but the router's probabilities are all 1/E.",
    wrong=[lambda: _wrong_collapse_value, lambda: lambda E, k: float(E)],
    praise="The term reads 1, the value of perfect balance, although the load has collapsed: "
    "f enters only through its product with P, so the term sees the collapse only once the "
    "probabilities follow it — which is also why its gradient (through P) can undo it.",
)
def blind_spot(answer) -> str | None:
    for E, k in _CASES:
        got = float(answer(E, k))
        if not np.isclose(got, 1.0):
            if np.isclose(got, E / k):
                return (
                    f"for E={E}, k={k} you gave {got:g} = E/k, the value when the probabilities "
                    "collapse too. Here every Pₑ = 1/E: what is E·Σₑ fₑ·(1/E)?"
                )
            return f"for E={E}, k={k} you gave {got:g}; work out E·Σₑ fₑ·Pₑ with Pₑ = 1/E."
    return None


def _first_choice(probs):
    probs = np.asarray(probs)
    E = probs.shape[-1]
    flat = probs.reshape(probs.shape[0], -1, E)
    return np.stack([np.bincount(p.argmax(-1), minlength=E) / p.shape[0] for p in flat])


def _wrong_top2(probs):
    probs = np.asarray(probs)
    E = probs.shape[-1]
    flat = probs.reshape(probs.shape[0], -1, E)
    top2 = np.argsort(-flat, -1)[..., :2]
    return np.stack([np.bincount(t.ravel(), minlength=E) / t.size for t in top2])


def _wrong_mean_probability(probs):
    probs = np.asarray(probs)
    return probs.reshape(probs.shape[0], -1, probs.shape[-1]).mean(1)


@exercise(
    "10",
    task="Write first_choice(probs): router probabilities [L, B, T, E] -> [L, E], each "
    "layer's share of tokens whose single most likely expert is e.",
    wrong=[lambda: _wrong_top2, lambda: _wrong_mean_probability],
    praise="Each row sums to 1: with top-1 routing these shares are the whole load.",
)
def first_choice_shares(answer) -> str | None:
    rng = np.random.default_rng(10)
    for shape in [(2, 3, 5, 8), (1, 1, 7, 4)]:
        logits = rng.normal(0, 2, shape)
        logits[0, ..., 1] += 1.5  # an expert that layer 0 prefers: shares must show it
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        want = _first_choice(probs)
        got = np.asarray(answer(probs), np.float64)
        if got.shape != want.shape:
            return (
                f"for probabilities of shape {shape} expected shape {want.shape}, got {got.shape}"
            )
        if np.allclose(got, _wrong_top2(probs)) and not np.allclose(got, want):
            return "those are the shares of both choices (top-2); count only the first choice"
        if np.allclose(got, _wrong_mean_probability(probs)) and not np.allclose(got, want):
            return (
                "that is the mean router probability Pₑ, not a count: take each token's argmax "
                "and count how often each expert wins"
            )
        if not np.allclose(got, want):
            return (
                f"for probabilities of shape {shape} your shares differ from the argmax counts "
                f"(largest error {np.abs(got - want).max():.3f})"
            )
    return None


def _rank_rule_extra() -> set[str]:
    from flax import nnx

    from grok_flax.demo import train
    from grok_flax.model import abstract_model

    cfg = train.model_config(smoke=True)
    params = nnx.state(abstract_model(cfg), nnx.Param)
    decayed = dict(train.decay_mask(params).flat_state())
    extra = set()
    for path, var in params.flat_state():
        value = var.get_value() if hasattr(var, "get_value") else var
        mask = decayed[path]
        mask = mask.get_value() if hasattr(mask, "get_value") else mask
        if len(value.shape) >= 2 and path[0] != "embed" and not bool(mask):
            extra.add(".".join(map(str, path)))
    return extra


@exercise(
    "10",
    task="The set of parameter paths (like 'layers.router.w') that a '≥ 2 axes, except the "
    "embedding' rule would decay but train.decay_mask does not, in the tiny smoke model.",
    wrong=[lambda: {"layers.router.w"}, lambda: set(), lambda: {"final_norm.scale"}],
    praise="The router and all four stacked norm scales: stacking the layers gives them a "
    "leading [L] axis, so a rule by rank would decay gains that should stay near 1.",
)
def rank_rule_extra(answer) -> str | None:
    want = _rank_rule_extra()
    got = {str(a) for a in answer}
    if got == want:
        return None
    missing, extra = sorted(want - got), sorted(got - want)
    if not got:
        return "the rank rule does decay some parameters the mask spares: look at the shapes"
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (hint: one of them is {missing[0]!r})")
    if extra:
        parts.append(f"{len(extra)} that don't belong: {extra}")
    return "; ".join(parts)
