"""Sharding: logical axis names -> mesh axes, in one place.

Every parameter and the KV memory name their axes when they are created (``logical=(...)``
on the ``nnx.Param``/``nnx.Cache``). ``RULES`` maps those names onto a ``(data, model)``
mesh the way the release shards Grok-1: heads and the expert width split over ``model``
(tensor parallelism), the model width of weights over ``data``, the batch over ``data``.

Any mesh shape works: a dimension that its mesh axes do not divide is replicated instead
(for a rule naming several axes, the largest trailing group of them that divides is used).
Quantized scales ``[..., G, out]`` follow their weight but are never split along G, so
block-scaled weights (G = 8) shard correctly whatever the model-axis size: a device's shard
of the weight may hold part of a block, one block, or several, and always has all G scales.

The same code runs on one process or many (``jax.distributed``): meshes are built over the
*global* ``jax.devices()``, and arrays are made from per-device callbacks that each process
answers only for its own devices (``put_global``, ``checkpoint.load_checkpoint``).
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

AXES = ("data", "model")


def make_mesh(data: int = 1, model: int | None = None, devices=None) -> Mesh:
    """A ``(data, model)`` mesh; ``model`` defaults to all remaining devices.

    ``devices`` defaults to the global ``jax.devices()`` — on several processes (after
    ``jax.distributed.initialize``) that is every host's devices, process by process, so with
    ``model`` = devices per host the model axis stays inside a host (fast links) and ``data``
    spans hosts. On TPU, when the mesh covers all devices, ``mesh_utils.create_device_mesh``
    orders them along the physical torus.
    """
    all_devices = devices is None
    devices = list(jax.devices() if devices is None else devices)
    if model is None:
        model = len(devices) // max(int(data), 1)
    for name, v in (("data", data), ("model", model)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"mesh {name} must be a positive integer, got {v!r}")
    if data * model > len(devices):
        raise ValueError(f"mesh data={data} × model={model} needs {data * model} devices, "
                         f"{len(devices)} available")
    grid = None
    if all_devices and data * model == len(devices) and devices[0].platform == "tpu":
        try:
            from jax.experimental import mesh_utils

            grid = mesh_utils.create_device_mesh((data, model), devices)
        except (ValueError, NotImplementedError, AssertionError):
            grid = None
    if grid is None:
        grid = np.array(devices[: data * model]).reshape(data, model)
    return Mesh(grid, AXES)


def parse_mesh_spec(text: str) -> dict[str, int]:
    """'data=1,model=8' (or '1x8', data × model) -> {'data': 1, 'model': 8}."""
    text = text.strip()
    bad = ValueError(f"bad mesh spec {text!r}: expected e.g. 'data=1,model=8' or '1x8'")
    if "=" not in text and "x" in text.lower():
        parts = text.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise bad
        out = dict(zip(AXES, (int(p) for p in parts), strict=True))
    else:
        out = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in AXES or not value.strip().isdigit() or name in out:
                raise bad
            out[name] = int(value)
    if any(v < 1 for v in out.values()):
        raise bad
    return {"data": out.get("data", 1), "model": out.get("model", 1)}


def _mesh_axes_for(axes, dim: int, mesh: Mesh, used: set[str]):
    """The mesh axes a dimension of size ``dim`` is split over under a rule, or None."""
    if axes is None:
        return None
    axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
    # the whole group, then ever shorter trailing groups (("data","model") -> ("model",))
    for start in range(len(axes_t)):
        group = axes_t[start:]
        size = math.prod(mesh.shape[a] for a in group)
        if size == 1 or used & set(group) or dim % size:
            continue
        return group
    return None


def spec_for(logical: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    """PartitionSpec for one array from its axis names (leading unnamed axes: layers)."""
    if len(logical) > len(shape):
        raise ValueError(f"{len(logical)} axis names {logical} for a {len(shape)}-d array")
    names = ("layers",) * (len(shape) - len(logical)) + tuple(logical)
    used: set[str] = set()
    parts = []
    for name, dim in zip(names, shape, strict=True):
        group = _mesh_axes_for(RULES.get(name), int(dim), mesh, used)
        if group is None:
            parts.append(None)  # replicate what the mesh axes do not divide
            continue
        used |= set(group)
        parts.append(group[0] if len(group) == 1 else group)
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


def create_sharded(factory, mesh: Mesh):
    """The module ``factory()`` builds, made directly sharded over ``mesh``: each device
    computes only its own shards, nothing is materialised whole, and it works on many
    processes (e.g. ``create_sharded(lambda: KVMemory(cfg, B, S), mesh)``)."""
    graphdef, state = nnx.split(nnx.eval_shape(factory))
    shardings = state_shardings(state, mesh)
    state = jax.jit(lambda: nnx.state(factory()), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def abstract_state(module_or_state, mesh: Mesh):
    """``nnx.state`` of a (possibly abstract, ``nnx.eval_shape``-made) module as
    ``jax.ShapeDtypeStruct`` leaves carrying their ``NamedSharding``: the input of an
    ahead-of-time ``jax.jit(...).lower(...)`` for that mesh. No memory is allocated."""
    state = module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(
        module_or_state)
    shardings = state_shardings(state, mesh)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        state, shardings)


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of sharded arrays / ``ShapeDtypeStruct``s
    (leaves without a sharding count whole). Shards here are always even."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = tuple(leaf.shape)
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            shape = sharding.shard_shape(shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def batch_sharding(mesh: Mesh, ndim: int = 2, batch: int | None = None) -> NamedSharding:
    """Activations/tokens: batch over ``data``, the rest replicated. Given ``batch`` (the
    row count), rows that ``data`` does not divide are replicated instead."""
    if batch is not None and batch % mesh.shape["data"]:
        return NamedSharding(mesh, P(*([None] * ndim)))
    return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))


def put_global(x, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds identically -> a global ``jax.Array`` with
    ``sharding``; each process fills only its own devices' shards (works on one process
    too, where it is ``jax.device_put``)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
