"""Sharding: logical axis names -> mesh axes, in one place.

Every parameter and the KV memory name their axes when they are created (``logical=(...)``
on the ``nnx.Param``/``nnx.Cache``). ``RULES`` maps those names onto a ``(data, model)``
mesh the way the release shards Grok-1: heads and the expert width split over ``model``
(tensor parallelism), the model width of weights over ``data``, the batch over ``data``.
Any mesh shape works: a dimension that a mesh axis does not divide is replicated instead.
Quantized scales ``[..., G, out]`` follow their weight but are never split along G, so
block-scaled weights (G = 8) shard correctly whatever the model-axis size.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grok_flax.quant import QArray

RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": "data",  # activations and KV memory rows
    "embed": "data",  # model width D of linear weights (as the release: P("data", "model"))
    "q_heads": "model",  # query heads × head size
    "kv_heads": "model",  # key/value heads (and their × head size)
    "ffn": "model",  # expert hidden width F
    "experts": None,  # expert index E (all experts on every device, split inside)
    "vocab": None,  # embedding rows
    "embed_vocab": ("data", "model"),  # embedding columns (release: P(None, ("data","model")))
    "embed_norm": None,  # RMSNorm scales
    "layers": None,  # the stacked-layer axis
    "kv_seq": None,  # KV memory slots
    "head_dim": None,  # per-head features
}


def make_mesh(data: int = 1, model: int | None = None, devices=None) -> Mesh:
    """A ``(data, model)`` mesh; ``model`` defaults to all remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    if model is None:
        model = len(devices) // data
    if data < 1 or model < 1 or data * model > len(devices):
        raise ValueError(f"mesh data={data} × model={model} needs {data * model} devices, "
                         f"{len(devices)} available")
    grid = np.array(devices[: data * model]).reshape(data, model)
    return Mesh(grid, ("data", "model"))


def parse_mesh_spec(text: str) -> dict[str, int]:
    """'data=1,model=8' -> {'data': 1, 'model': 8}."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("data", "model") or not value.strip().isdigit():
            raise ValueError(f"bad mesh spec {text!r}: expected e.g. 'data=1,model=8'")
        out[name] = int(value)
    return {"data": out.get("data", 1), "model": out.get("model", 1)}


def spec_for(logical: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    """PartitionSpec for one array from its axis names (leading unnamed axes: layers)."""
    names = ("layers",) * (len(shape) - len(logical)) + tuple(logical)
    used: set[str] = set()
    parts = []
    for name, dim in zip(names, shape, strict=True):
        axes = RULES.get(name)
        if axes is None:
            parts.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        size = math.prod(mesh.shape[a] for a in axes_t)
        if size == 1 or dim % size or used & set(axes_t):
            parts.append(None)  # replicate what the mesh axis does not divide
            continue
        used |= set(axes_t)
        parts.append(axes if isinstance(axes, str) else axes_t)
    return P(*parts)


def _variable_sharding(var, mesh: Mesh):
    logical = var.get_metadata().get("logical")
    value = var.get_value()
    if logical is None:
        return jax.tree.map(lambda _: NamedSharding(mesh, P()), value)
    if isinstance(value, QArray):
        w_spec = spec_for(logical, value.weight.shape, mesh)
        s_spec = list(w_spec) + [None] * (len(value.scales.shape) - len(w_spec))
        s_spec[-2] = None  # never split the scale blocks
        return QArray(NamedSharding(mesh, w_spec), NamedSharding(mesh, P(*s_spec)))
    return NamedSharding(mesh, spec_for(logical, value.shape, mesh))


def state_shardings(module_or_state, mesh: Mesh):
    """A pytree of ``NamedSharding`` shaped like ``nnx.state(module)``."""
    state = module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(
        module_or_state)
    return jax.tree.map(lambda v: v.replace(_variable_sharding(v, mesh)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_module(module, mesh: Mesh):
    """Place every parameter/cache of ``module`` on ``mesh`` according to ``RULES``."""
    state = nnx.state(module)
    shardings = state_shardings(state, mesh)
    nnx.update(module, jax.device_put(state, shardings))
    return module


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Activations/tokens: batch over ``data`` (when it divides), the rest replicated."""
    return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))
