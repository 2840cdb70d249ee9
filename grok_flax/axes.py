"""Logical axes: every array names its dimensions, and one table says where each name lives.

A parameter is created with the names of its axes (``nnx.Param(w, logical=("embed",
"q_heads"))``); the decoder layers' parameters, stacked by ``nnx.vmap``, add ``"layers"`` in
front. ``RULES`` maps each name onto the axes of a ``(data, model)`` mesh the way the release
shards Grok-1: heads and the expert width over ``model`` (tensor parallelism), the model
width of weights over ``data``, the batch over ``data``. The model's code never names a
device or a mesh axis: it names logical axes, and ``spec_for`` turns them into a
``PartitionSpec`` for whatever mesh is current.

This is the part of sharding the model itself needs — the rule table, ``spec_for``,
``constrain`` for activations, and ``run_on_mesh`` for the forward pass. Building meshes and
placing arrays on them (one host or many) is ``grok_flax.scale``'s job.

**A dimension the mesh does not divide** is replicated over the mesh axes that do not divide
it, with a ``UserWarning`` naming the array, the dimension and the mesh axes (for a rule
naming several axes, the largest trailing group of them that divides is used).

**Axis types.** A mesh from ``jax.make_mesh`` has *Explicit* axes (shardings are part of the
arrays' types, and ops whose output sharding is ambiguous refuse to run); ``Mesh(...)`` and
``grok_flax.make_mesh`` give *Auto* axes (the compiler propagates shardings). The model runs
on both: ``run_on_mesh`` makes the mesh current and, on an Explicit mesh, runs the forward
pass with those axes made Auto (``jax.sharding.auto_axes``), stating its outputs' shardings.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import flax
import jax
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

_LIBRARIES = tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, flax)) + (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,  # grok_flax itself
)

MESH_AXES = ("data", "model")  # the mesh axes the rules name

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
    "layers": None,  # the stacked-layer axis of the decoder's parameters and the KV memory
    "kv_seq": None,  # KV memory slots
    "head_dim": None,  # per-head features
    "act_seq": None,  # activations: the token axis
    "act_embed": None,  # activations: the model width (replicated: tensor parallelism)
    "act_vocab": None,  # logits: the vocabulary
}

ACTIVATION = ("batch", "act_seq", "act_embed")  # the residual stream [B, T, D]
LOGITS = ("batch", "act_seq", "act_vocab")  # [B, T, V]


def _split_over(name: str, dim: int, mesh, used: set[str], what: str):
    """The mesh axes dimension ``name`` (size ``dim``) is split over, or None; warns when
    the rule names a mesh axis (of size > 1) that this dimension cannot be split over."""
    axes = None if name is None else RULES[name]
    if axes is None:
        return None
    wanted = (axes,) if isinstance(axes, str) else tuple(axes)
    group = None
    # the whole group, then ever shorter trailing groups (("data","model") -> ("model",))
    for start in range(len(wanted)):
        candidate = wanted[start:]
        size = math.prod(mesh.shape[a] for a in candidate)
        if size > 1 and not used & set(candidate) and dim % size == 0:
            group = candidate
            break
    dropped = [a for a in wanted if a not in (group or ()) and mesh.shape[a] > 1]
    if dropped:
        why = ", ".join(
            f"{a}={mesh.shape[a]}" + (" (already used)" if a in used else "") for a in dropped
        )
        warnings.warn(
            f"{what}: axis {name!r} of size {dim} is not split over mesh axis "
            f"{why}: replicated over it",
            skip_file_prefixes=_LIBRARIES,  # point at the caller's line, not ours or JAX's
        )
    return group


def spec_for(logical: tuple[str, ...], shape: tuple[int, ...], mesh, what: str = "array") -> P:
    """The ``PartitionSpec`` of an array of ``shape`` whose axes are named ``logical`` (one
    name per axis; ``None``: replicated), on ``mesh`` (a ``Mesh`` or ``AbstractMesh``).
    ``what`` names the array in the warning given when a dimension cannot be split as its
    rule asks."""
    logical = tuple(logical)
    if len(logical) != len(shape):
        raise ValueError(
            f"{what}: {len(logical)} axis names {logical} for an array of shape {tuple(shape)}"
        )
    unknown = [n for n in logical if n is not None and n not in RULES]
    if unknown:
        raise ValueError(
            f"{what}: unknown logical axis name(s) {unknown}; known: {', '.join(RULES)}"
        )
    used: set[str] = set()
    parts = []
    for name, dim in zip(logical, shape, strict=True):
        group = _split_over(name, int(dim), mesh, used, what)
        used |= set(group or ())
        parts.append(None if group is None else group[0] if len(group) == 1 else group)
    return P(*parts)


def explicit_axes(mesh) -> tuple[str, ...]:
    """The names of ``mesh``'s axes of type Explicit (none on an Auto mesh)."""
    return tuple(
        n
        for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if t == jax.sharding.AxisType.Explicit
    )


def mesh_of(array) -> Mesh | AbstractMesh | None:
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


def spec_of(array) -> P:
    """The PartitionSpec of an array in the current (Explicit) mesh's types, else P()."""
    try:
        return jax.typeof(array).sharding.spec
    except AttributeError:
        return P()


def constrain(x: jax.Array, logical: tuple[str, ...]) -> jax.Array:
    """Pin an activation's sharding by its logical axis names, on the current mesh; a no-op
    when no mesh is current (one device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = spec_for(logical, x.shape, mesh, what=f"activation {list(logical)}")
    if explicit_axes(mesh):
        return jax.sharding.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, spec)


@contextlib.contextmanager
def _current(mesh, tracing: bool):
    """Make ``mesh`` the current mesh (if it is not already); a no-op for ``None``."""
    if mesh is None:
        yield
        return
    abstract = mesh if isinstance(mesh, AbstractMesh) else mesh.abstract_mesh
    current = jax.sharding.get_abstract_mesh()
    if not current.empty and current == abstract:
        yield
    elif isinstance(mesh, Mesh) and not tracing:
        with jax.set_mesh(mesh):
            yield
    else:
        with jax.sharding.use_abstract_mesh(abstract):
            yield


def run_on_mesh(mesh, fn, out_specs, *args):
    """``fn(*args)`` with ``mesh`` current, so ``constrain`` can pin activations; on a mesh
    with Explicit axes, run with those axes made Auto (``jax.sharding.auto_axes``) and the
    outputs given ``out_specs(mesh)`` (a pytree prefix of PartitionSpecs). ``mesh=None``
    (one device): simply ``fn(*args)``. ``args`` may hold ``nnx`` modules (pytrees)."""
    if mesh is None:
        return fn(*args)
    tracing = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args))
    with _current(mesh, tracing):
        axes = explicit_axes(mesh)
        if not axes:
            return fn(*args)
        return jax.sharding.auto_axes(fn, axes=axes, out_sharding=out_specs(mesh))(*args)


__all__ = [
    "ACTIVATION",
    "LOGITS",
    "MESH_AXES",
    "RULES",
    "constrain",
    "explicit_axes",
    "mesh_of",
    "run_on_mesh",
    "spec_for",
    "spec_of",
]
