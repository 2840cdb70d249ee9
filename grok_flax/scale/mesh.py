"""Meshes: the ``(data, model)`` grid of devices the model is spread over.

- ``make_mesh(data, model)``: a mesh over the global ``jax.devices()`` (every host's, under
  ``jax.distributed``), ordered along the physical torus on a TPU;
- ``mesh_devices(n)``: ``n`` devices wherever the code runs — the accelerators if there are
  enough, else simulated CPU devices (with a warning saying so);
- ``parse_mesh_spec("data=1,model=8")``: the command line's mesh argument;
- ``topology_mesh("v5p:2x2x2", 1, 8)``: a mesh over a TPU slice's devices *without* a TPU
  (libtpu's deviceless topologies), for compiling with XLA:TPU ahead of time.

``make_mesh`` gives a mesh with *Auto* axes; ``jax.make_mesh(shape, ("data", "model"))``
gives *Explicit* ones. The model runs on both (``grok_flax.axes``).
"""

from __future__ import annotations

import os
import warnings

import jax
import numpy as np
from jax.sharding import Mesh

from grok_flax.axes import MESH_AXES

AXES = MESH_AXES  # ("data", "model")


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def mesh_devices(n: int = 8) -> list:
    """Devices for an ``n``-device mesh: ``jax.devices()`` when the default platform has at
    least ``n``, else the CPU's (simulated) devices, with a ``UserWarning`` saying so.

    For notebooks and examples that want 8 devices wherever they run: with 1–7 accelerators
    (one GPU, a Colab runtime) the mesh falls back to ``n`` simulated CPU devices, which exist
    if ``jax.config.update("jax_num_cpu_devices", n)`` (or ``XLA_FLAGS=--xla_force_host_
    platform_device_count=n``) ran before JAX started. Pass the result as ``make_mesh(...,
    devices=...)``. Raises ``ValueError`` naming that setting if the CPU has fewer than ``n``.
    """
    if not _positive_int(n):
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
            f"(or set XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts)"
        )
    warnings.warn(
        f"{len(default)} {platform} device(s), fewer than the {n} this mesh needs; "
        f"using the {len(cpu)} simulated CPU devices instead (same programs, CPU "
        f"speed)",
        stacklevel=2,
    )
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
        if not _positive_int(v):
            raise ValueError(f"mesh {name} must be a positive integer, got {v!r}")
    if data * model > len(devices):
        raise ValueError(
            f"mesh data={data} × model={model} needs {data * model} devices, "
            f"{len(devices)} available. On a CPU, simulate them: set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={data * model} (or call jax.config."
            f"update('jax_num_cpu_devices', {data * model})) before JAX starts"
        )
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


TPU_MISSING = (
    "compiling for a TPU target needs libtpu (XLA:TPU runs without a TPU through its "
    "deviceless topologies): pip install 'grok_flax[tpu]' (libtpu 0.0.52, which works with "
    "jax 0.12.1; jax 0.12.0.1 pairs with libtpu 0.0.50.1), and run with JAX_PLATFORMS=cpu"
)


def _share_libtpu() -> None:
    """libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) when it loads, which guards a
    real TPU's chips; a second process describing a deviceless topology (a second pytest
    worker, a second ``plan``) would fail on it. This process uses no TPU (JAX's backend is
    not "tpu"), so it opts out of the lock, unless the user set the variable themselves.

    It also tells libtpu it is not on a TPU host (no metadata server to ask, one local worker),
    which otherwise prints a screen of "could not determine TPU accelerator type / worker
    hostnames" errors at load. The accelerator type named does not change what is compiled:
    the devices compiled for are the topology's (checked: the same temporaries, FLOPs, bytes
    and cost-model times for v5e and v6e slices with and without it)."""
    if jax.default_backend() != "tpu":
        for name, value in (
            ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
            ("TPU_SKIP_MDS_QUERY", "1"),
            ("TPU_WORKER_HOSTNAMES", "localhost"),
            ("TPU_ACCELERATOR_TYPE", "v5p-8"),
        ):
            os.environ.setdefault(name, value)


def topology_mesh(target: str, data: int, model: int) -> tuple[Mesh, str]:
    """A ``(data, model)`` mesh over the devices of a TPU slice described by ``target``
    (libtpu's topology name, e.g. ``"v5p:2x2x2"``, ``"v5e:4x8"``, ``"v6e:4x4"``), with no TPU
    attached: the devices exist only to compile for (``jax.jit(...).lower(...).compile()``).
    -> (mesh, how the logical axes map onto the physical torus).

    The mesh must use every device of the slice. The devices are ordered along the torus
    (``mesh_utils.create_device_mesh``); when a logical axis cannot be laid on whole physical
    axes (``model=8`` on a 4×4 v6e slice) it retries allowing *split physical axes* (the
    8-device ring then spans two rows of the torus), and says so. Raises ``RuntimeError``
    naming what to install when libtpu is absent, ``ValueError`` for an unknown topology or a
    mesh of the wrong size."""
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        raise RuntimeError(TPU_MISSING)
    from jax.experimental import mesh_utils, topologies

    for name, v in (("data", data), ("model", model)):
        if not _positive_int(v):
            raise ValueError(f"mesh {name} must be a positive integer, got {v!r}")
    _share_libtpu()
    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=target)
    except Exception as e:  # noqa: BLE001 - libtpu's errors are plain RuntimeErrors
        raise ValueError(
            f"libtpu could not describe the TPU topology {target!r} (names such as "
            f"'v5p:2x2x2', 'v5e:4x8', 'v6e:4x4', 'v4:2x2x2'): {str(e).splitlines()[0][:240]}"
        ) from e
    devices = list(topo.devices)
    if data * model != len(devices):
        raise ValueError(
            f"{target} has {len(devices)} devices ({devices[0].device_kind}); a mesh "
            f"data={data} × model={model} must use all of them"
        )
    try:
        grid = mesh_utils.create_device_mesh((data, model), devices)
        how = "along the physical torus"
    except (ValueError, NotImplementedError, AssertionError):
        try:
            grid = mesh_utils.create_device_mesh(
                (data, model), devices, allow_split_physical_axes=True
            )
            how = "split physical axes (a logical axis spans parts of several torus axes)"
        except (ValueError, NotImplementedError, AssertionError) as e:
            per_chip = len(devices) // len({tuple(d.coords) for d in devices})
            if per_chip == 1:
                raise ValueError(
                    f"a data={data} × model={model} mesh cannot be laid on {target}: {e}"
                ) from e
            # v4's deviceless topology lists each chip's 2 TensorCores as devices, which
            # mesh_utils refuses: take them in the order libtpu lists them
            grid = np.array(devices).reshape(data, model)
            how = f"libtpu's device order ({per_chip} TensorCores per chip, not the torus)"
    return Mesh(grid, AXES), how


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


__all__ = ["AXES", "TPU_MISSING", "make_mesh", "mesh_devices", "parse_mesh_spec", "topology_mesh"]
