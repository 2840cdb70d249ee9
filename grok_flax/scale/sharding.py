"""Placing arrays on a mesh: parameters and KV memory by their logical axes, host data by rows.

Every parameter and the KV memory name their axes (``logical=(...)`` metadata, see
``grok_flax.axes``); ``state_shardings`` turns a module's state into ``NamedSharding``s with
the one rule table, ``axes.RULES``. Quantized scales ``[..., G, out]`` follow their weight
but are never split along their block axis G, so block-scaled weights shard correctly
whatever the model-axis size: a device's shard of the weight may hold part of a block, one
block, or several, and always has all G scales. (The release splits ``linear_1``'s 8 scale
blocks over its 8 model-axis devices, one each; keeping all G on every device costs
``G × out`` bf16 values per weight and works on any mesh.)

The same code runs on one process or many (``jax.distributed``): meshes span the *global*
``jax.devices()``, and each process builds only its own devices' shards of an array
(``put_global`` from a host array every process holds; ``create_sharded`` computes each
shard where it lives; ``checkpoint.load_checkpoint`` reads the blocks of the files its
devices need).
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grok_flax.axes import spec_for
from grok_flax.model import Grok
from grok_flax.quant import QArray


def _variable_sharding(var, mesh: Mesh, what: str):
    logical = var.get_metadata().get("logical")
    value = var.get_value()
    if logical is None:
        return jax.tree.map(lambda _: NamedSharding(mesh, P()), value)
    if isinstance(value, QArray):
        w_spec = spec_for(logical, value.weight.shape, mesh, what=what)
        s_spec = list(w_spec) + [None] * (len(value.scales.shape) - len(w_spec))
        s_spec[-2] = None  # never split the scale blocks
        return QArray(NamedSharding(mesh, w_spec), NamedSharding(mesh, P(*s_spec)))
    return NamedSharding(mesh, spec_for(logical, value.shape, mesh, what=what))


def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def state_shardings(module_or_state, mesh: Mesh):
    """A pytree of ``NamedSharding`` shaped like ``nnx.state(module)``. A dimension the mesh
    cannot split as its rule asks is replicated, with a warning naming the parameter (as
    ``Module.path.to.it`` when given a module)."""
    if isinstance(module_or_state, nnx.State):
        state, owner = module_or_state, ""
    else:
        state, owner = nnx.state(module_or_state), type(module_or_state).__name__ + "."
    return jax.tree_util.tree_map_with_path(
        lambda path, v: v.replace(_variable_sharding(v, mesh, owner + _path_name(path))),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def attach_mesh(module, mesh):
    """Record on a ``Grok`` model the mesh its parameters were placed on (``Grok.mesh``), so
    its forward pass can state activation shardings even when traced (a tracer on an Auto
    mesh does not know its mesh). One-device meshes are not recorded; other modules are
    returned unchanged."""
    if isinstance(module, Grok):
        module.mesh = mesh if mesh is not None and mesh.size > 1 else None
    return module


def shard_module(module, mesh: Mesh):
    """Place every parameter/cache of ``module`` on ``mesh`` according to the rules."""
    shardings = state_shardings(module, mesh)
    nnx.update(module, jax.device_put(nnx.state(module), shardings))
    return attach_mesh(module, mesh)


def create_sharded(factory, mesh: Mesh):
    """The module ``factory()`` builds, made directly sharded over ``mesh``: each device
    computes only its own shards, nothing is materialised whole, and it works on many
    processes (e.g. ``create_sharded(lambda: KVMemory(cfg, B, S), mesh)``)."""
    abstract = nnx.eval_shape(factory)
    shardings = state_shardings(abstract, mesh)
    graphdef = nnx.graphdef(abstract)
    state = jax.jit(lambda: nnx.state(factory()), out_shardings=shardings)()
    return attach_mesh(nnx.merge(graphdef, state), mesh)


def abstract_state(module_or_state, mesh: Mesh):
    """``nnx.state`` of a (possibly abstract, ``nnx.eval_shape``-made) module as
    ``jax.ShapeDtypeStruct`` leaves carrying their ``NamedSharding``: the input of an
    ahead-of-time ``jax.jit(...).lower(...)`` for that mesh. No memory is allocated."""
    shardings = state_shardings(module_or_state, mesh)  # a module: warnings name it
    state = (
        module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(module_or_state)
    )
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings
    )


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of sharded arrays or ``ShapeDtypeStruct`` leaves
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
    """Activations/tokens: batch (the first axis) over ``data``, the rest replicated. Given
    ``batch`` (the row count), rows that ``data`` does not divide are replicated instead,
    with a warning."""
    rows = mesh.shape["data"] if batch is None else int(batch)
    spec = spec_for(
        ("batch",) + (None,) * (ndim - 1),
        (rows,) + (1,) * (ndim - 1),
        mesh,
        what=f"{ndim}-d input of {rows} rows",
    )
    return NamedSharding(mesh, spec)


def put_global(x, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds identically -> a global ``jax.Array`` with
    ``sharding``; each process fills only its own devices' shards (works on one process
    too, where it is ``jax.device_put``)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


__all__ = [
    "abstract_state",
    "attach_mesh",
    "batch_sharding",
    "bytes_per_device",
    "create_sharded",
    "put_global",
    "shard_module",
    "state_shardings",
]
