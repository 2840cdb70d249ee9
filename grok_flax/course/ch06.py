"""Checkers for the "Try this" exercises of notebook 06:
`notebooks/06_assembling_grok1.ipynb`."""

from __future__ import annotations

import math
from functools import cache

from grok_flax.course import exercise


@cache
def _grok1():
    """Grok-1's config, its parameter count (abstract model) and its sizes."""
    from grok_flax.config import GrokConfig
    from grok_flax.model import abstract_model, param_count

    cfg = GrokConfig.grok_1()
    return cfg, param_count(abstract_model(cfg))


def _expert_params(cfg) -> int:
    """One expert's parameters: linear, linear_v [D, F] and linear_1 [F, D]."""
    return 3 * cfg.emb_size * cfg.ffn_size


def _top1_fraction() -> float:
    cfg, total = _grok1()
    unused = cfg.num_layers * (cfg.num_experts - 1) * _expert_params(cfg)
    return (total - unused) / total


def _top2_fraction() -> float:
    cfg, total = _grok1()
    unused = cfg.num_layers * (cfg.num_experts - 2) * _expert_params(cfg)
    return (total - unused) / total


@exercise(
    "06",
    task="The fraction (0 to 1) of Grok-1's 315,684,820,992 parameters that one token uses "
    "when the router picks ONE expert per layer instead of two.",
    wrong=[
        _top2_fraction,  # the top-2 value, unchanged
        lambda: 1 / 8,  # only the experts, one of eight
        lambda: 100 * _top1_fraction(),  # a percentage
    ],
    praise="Stored weights don't change (the router still scores all 8 experts); the work per "
    "token falls from 26.5% to 14.3% of them.",
)
def top1_active_fraction(answer) -> str | None:
    try:
        x = float(answer)
    except (TypeError, ValueError):
        return f"give one number between 0 and 1, not {type(answer).__name__}"
    right = _top1_fraction()
    if math.isclose(x, right, rel_tol=1e-3):
        return None
    if 1 < x <= 100 and math.isclose(x / 100, right, rel_tol=1e-3):
        return "that looks like a percentage: give the fraction (between 0 and 1)."
    if math.isclose(x, _top2_fraction(), rel_tol=1e-3):
        return (
            "that is the top-2 fraction (26.5%): with top-1 each layer uses 1 expert, so 7 of "
            "its 8 experts are idle, not 6."
        )
    if math.isclose(x, 1 / 8, rel_tol=1e-3):
        return (
            "1/8 counts only the experts. Every token also uses all the attention weights, the "
            "embedding, the routers and the norms: add them to one expert per layer."
        )
    return (
        f"expected (all parameters − the idle experts' ones) / all parameters; yours, {x:.4g}, "
        f"is {'too high' if x > right else 'too low'}. Idle per layer: 7 experts × 3 matrices."
    )


def _four_expert_count() -> int:
    cfg, total = _grok1()
    gone = cfg.num_layers * 4 * (_expert_params(cfg) + cfg.emb_size)  # experts + router columns
    return total - gone


@exercise(
    "06",
    task="The number of parameters of Grok-1 with 4 experts per layer instead of 8 "
    "(g1.replace(num_experts=4)), as an integer.",
    wrong=[
        lambda: _grok1()[1] // 2,  # half of everything
        lambda: _four_expert_count() + _grok1()[0].num_layers * 4 * _grok1()[0].emb_size,
        lambda: _grok1()[1] - 4 * (_expert_params(_grok1()[0]) + _grok1()[0].emb_size),
    ],
    praise="Each layer loses 4 experts (3 matrices of 6144 × 32768 each) and 4 router columns "
    "of 6144: 154.6 B parameters, almost half the model.",
)
def four_expert_count(answer) -> str | None:
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if not isinstance(answer, int):
        return f"give a whole number of parameters (an int), not {type(answer).__name__}"
    cfg, total = _grok1()
    right = _four_expert_count()
    if answer == right:
        return None
    per_layer = 4 * (_expert_params(cfg) + cfg.emb_size)
    if answer == total // 2:
        return (
            "that halves everything, but only the experts (and the router's columns) go: the "
            "embedding, attention and norms are untouched."
        )
    if answer == right + cfg.num_layers * 4 * cfg.emb_size:
        return (
            "close: you removed the 4 experts' weights but not the router's 4 columns, "
            f"[{cfg.emb_size}] each, in each of the {cfg.num_layers} layers."
        )
    if answer == total - per_layer:
        return f"that removes 4 experts from ONE layer; there are {cfg.num_layers} layers."
    return (
        f"expected {total:,} minus, in each of {cfg.num_layers} layers, 4 experts × 3 matrices "
        f"of {cfg.emb_size} × {cfg.ffn_size} and 4 router columns; yours is off by "
        f"{answer - right:+,}."
    )


# --------------------------------------------------------------------------------------------
# rebuilding one layer from the stack
# --------------------------------------------------------------------------------------------
@cache
def _stacked_model():
    from flax import nnx

    from grok_flax.config import GrokConfig
    from grok_flax.model import Grok

    cfg = GrokConfig.tiny(quantized=False, compute_dtype="float32", num_layers=3)
    return Grok(cfg, rngs=nnx.Rngs(7))


def _slice(model, i):
    """Layer i's arrays of the stacked model, flattened by path."""
    import jax
    from flax import nnx

    state = nnx.state(model.layers, nnx.Param)
    return {p: jax.tree.map(lambda a: a[i], v.get_value()) for p, v in nnx.to_flat_state(state)}


def _merge(model, i):
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model.layers)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


@exercise(
    "06",
    task="A function layer_from_stack(model, i) that returns layer i of a Grok model as an "
    "ordinary DecoderLayer (weights without the leading [L] axis), as the scan body does.",
    wrong=[
        lambda: lambda model, i: _merge(model, 0),  # always the first layer
        lambda: lambda model, i: model.layers,  # still stacked
        lambda: lambda model, i: _merge(model, i - 1),  # off by one
    ],
    praise="That is what each step of the scan does with its slice of the stacked weights.",
)
def layer_from_stack(answer) -> str | None:
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grok_flax.layer import DecoderLayer

    if not callable(answer):
        return "give a function (model, i) -> DecoderLayer, not a value"
    model = _stacked_model()
    cfg = model.cfg
    L = cfg.num_layers
    for i in (1, 2, 0):
        layer = answer(model, i)
        if not isinstance(layer, DecoderLayer):
            return (
                f"layer_from_stack(model, {i}) returned {type(layer).__name__}, not a DecoderLayer"
            )
        shape = tuple(layer.router.w.get_value().shape)
        if shape != (cfg.emb_size, cfg.num_experts):
            return (
                f"its router.w is {list(shape)}, still stacked over the {L} layers: take slice "
                "i of every array of the state (jax.tree.map(lambda a: a[i], state))"
            )
        got = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(layer, nnx.Param))}
        for j in (i, *(j for j in range(L) if j != i)):
            want = _slice(model, j)
            same = got.keys() == want.keys() and all(
                np.array_equal(np.asarray(got[p]), np.asarray(want[p])) for p in want
            )
            if same and j == i:
                break
            if same:
                return f"layer_from_stack(model, {i}) has the weights of layer {j}, not {i}"
        else:
            return f"layer_from_stack(model, {i}) has weights that match no layer of the model"
    # the right weights, and it runs as a layer: one call, against the scan body's own rebuild
    h = jnp.ones((1, 4, cfg.emb_size), jnp.float32)
    out, _, _ = layer(h, jnp.arange(4)[None], k_valid=jnp.ones((1, 4), bool))
    ref, _, _ = _merge(model, i)(h, jnp.arange(4)[None], k_valid=jnp.ones((1, 4), bool))
    if not np.allclose(np.asarray(out), np.asarray(ref), atol=1e-5):
        return f"layer {i} has the right weights but computes something else"
    return None
