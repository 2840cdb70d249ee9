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
*global* ``jax.devices()``, and each process builds only its own devices' shards of an array
(``put_global`` from a host array every process holds; ``checkpoint.load_checkpoint`` from
the blocks of the files those devices need).

**Axis types.** A mesh from ``jax.make_mesh`` has *Explicit* axes (shardings are part of the
arrays' types, and ops whose output sharding is ambiguous refuse to run); ``make_mesh`` here
and ``Mesh(...)`` give *Auto* axes (the compiler propagates shardings). The model runs on
both: ``Grok.__call__`` enters the mesh of its parameters (``forward_context``) and, on an
Explicit mesh, runs the forward pass with those axes made Auto (``jax.sharding.auto_axes``),
stating its outputs' shardings; inside, activations are pinned where layers meet
(``constrain``): the residual stream [B, T, D] is split over ``data`` by rows and replicated
over ``model``, so each attention and MoE block ends in exactly one all-reduce.
"""

from __future__ import annotations

import contextlib
import math
import sys

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
    "act_seq": None,  # activations: the token axis
    "act_embed": None,  # activations: the model width (replicated: tensor parallelism)
    "act_vocab": None,  # logits: the vocabulary
}

ACTIVATION = ("batch", "act_seq", "act_embed")  # the residual stream [B, T, D]
LOGITS = ("batch", "act_seq", "act_vocab")  # [B, T, V]

AXES = ("data", "model")


def mesh_devices(n: int = 8) -> list:
    """Devices for an ``n``-device mesh: ``jax.devices()`` when the default platform has at
    least ``n``, else the CPU's (simulated) devices, with a note on stderr saying so.

    For notebooks and examples that want 8 devices wherever they run: with 1–7 accelerators
    (one GPU, a Colab runtime) the mesh falls back to ``n`` simulated CPU devices, which exist
    if ``jax.config.update("jax_num_cpu_devices", n)`` (or ``XLA_FLAGS=--xla_force_host_
    platform_device_count=n``) ran before JAX started. Pass the result as ``make_mesh(...,
    devices=...)``. Raises ``ValueError`` naming that setting if the CPU has fewer than ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    default = list(jax.devices())
    if len(default) >= n:
        return default
    try:
        cpu = list(jax.devices("cpu"))
    except RuntimeError:  # no CPU backend (e.g. JAX_PLATFORMS=cuda)
        cpu = []
    platform = default[0].platform if default else "?"
    if len(cpu) < n:
        raise ValueError(
            f"a {n}-device mesh needs {n} devices: the default platform ({platform}) has "
            f"{len(default)} and the CPU {len(cpu)}. Simulate {n} CPU devices: call jax.config."
            f"update('jax_num_cpu_devices', {n}) first thing in a fresh process or kernel "
            f"(or set XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts)")
    print(f"note: {len(default)} {platform} device(s), fewer than the {n} this mesh needs; "
          f"using the {len(cpu)} simulated CPU devices instead (same programs, CPU speed)",
          file=sys.stderr)
    return cpu


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
        raise ValueError(
            f"mesh data={data} × model={model} needs {data * model} devices, "
            f"{len(devices)} available. On a CPU, simulate them: set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={data * model} (or call jax.config."
            f"update('jax_num_cpu_devices', {data * model})) before JAX starts")
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


def attach_mesh(module, mesh):
    """Remember the mesh a model was placed on (``module.mesh``), so its forward pass can
    state activation shardings even when traced (a tracer on an Auto mesh does not know its
    mesh). One-device meshes are not recorded."""
    if mesh is not None and mesh.size > 1 and hasattr(module, "embed"):
        module.mesh = mesh
    return module


def shard_module(module, mesh: Mesh):
    """Place every parameter/cache of ``module`` on ``mesh`` according to ``RULES``."""
    state = nnx.state(module)
    shardings = state_shardings(state, mesh)
    nnx.update(module, jax.device_put(state, shardings))
    return attach_mesh(module, mesh)


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


# --- running on a mesh: context, Explicit axes, activation shardings ---------------------

def mesh_of(array) -> Mesh | None:
    """The mesh ``array`` (a parameter) is sharded over, or None (one device / unknown).
    Concrete arrays give their ``Mesh``; traced ones on an Explicit mesh its ``AbstractMesh``
    (on an Auto mesh a tracer does not know its mesh: the caller's context says)."""
    sharding = getattr(array, "sharding", None)
    if isinstance(array, jax.core.Tracer) or sharding is None:
        try:
            mesh = jax.typeof(array).sharding.mesh
        except (AttributeError, TypeError):
            return None
        return None if mesh.empty else mesh
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh
    return None


def _explicit_axes(mesh) -> tuple[str, ...]:
    return tuple(n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
                 if t == jax.sharding.AxisType.Explicit)


@contextlib.contextmanager
def forward_context(mesh, tracing: bool):
    """Make ``mesh`` the current mesh (if it is not already), so activation shardings can be
    stated; a no-op for ``None``. ``tracing``: whether the caller is inside a jit trace."""
    if mesh is None:
        yield
        return
    abstract = mesh if isinstance(mesh, jax.sharding.AbstractMesh) else mesh.abstract_mesh
    current = jax.sharding.get_abstract_mesh()
    if not current.empty and current == abstract:
        yield
    elif isinstance(mesh, Mesh) and not tracing:
        with jax.set_mesh(mesh):
            yield
    else:
        with jax.sharding.use_abstract_mesh(abstract):
            yield


def run_auto(fn, mesh, out_specs, *args):
    """``fn(*args)`` with ``mesh``'s Explicit axes made Auto (``jax.sharding.auto_axes``);
    outputs get ``out_specs`` (a pytree prefix of PartitionSpecs). On an Auto mesh, or
    none, simply ``fn(*args)``."""
    axes = () if mesh is None else _explicit_axes(mesh)
    if not axes:
        return fn(*args)
    return jax.sharding.auto_axes(fn, axes=axes, out_sharding=out_specs)(*args)


def spec_of(array) -> P:
    """The PartitionSpec of an array in the current (Explicit) mesh's types, else P()."""
    try:
        return jax.typeof(array).sharding.spec
    except AttributeError:
        return P()


def constrain(x: jax.Array, logical: tuple[str, ...]) -> jax.Array:
    """Pin an activation's sharding by its logical axis names (``RULES``), on the current
    mesh; a no-op when no mesh is current (one device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = spec_for(logical, x.shape, mesh)
    if _explicit_axes(mesh):
        return jax.sharding.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, spec)


def put_global(x, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds identically -> a global ``jax.Array`` with
    ``sharding``; each process fills only its own devices' shards (works on one process
    too, where it is ``jax.device_put``)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
