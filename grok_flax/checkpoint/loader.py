"""Load a released Grok-1 checkpoint (``ckpt-0/tensor00000_000 …``) into a ``grok_flax.Grok``.

Loading is safe and bounded:

- no pickle is executed: :mod:`grok_flax.checkpoint.reader` walks each file's opcodes
  against an allow-list and only *locates* the raw bytes of each array;
- each device's shard is read straight from the files into a page-aligned host buffer
  (whole tensors with ``preadv`` on a thread pool, slices through a memory map), int8
  staying int8. On CPU those buffers *are* the arrays; on an accelerator they are staging,
  one parameter at a time, and a stacked parameter too big to stage goes one layer at a
  time into a donated device buffer — so host memory beyond the loaded arrays stays near
  one tensor;
- before anything is read, every file is checked against the model the config describes and
  *all* problems (missing, extra, mis-shaped, wrong dtype, unreadable) are raised at once.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from grok_flax.checkpoint.reader import parse_tensor_file, read_array, read_payload_into
from grok_flax.checkpoint.release import (
    FLOAT_DTYPES,
    TENSOR_FILE_RE,
    ArraySpec,
    CheckpointError,
    QuantizedSpec,
    get_path,
    layer_prefix,
    release_names,
    require_release_layout,
    tensor_file_name,
)
from grok_flax.config import GrokConfig
from grok_flax.model import Grok, abstract_model
from grok_flax.quant import QArray
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import attach_mesh, state_shardings

__all__ = ["checkpoint_dir", "inspect_checkpoint", "load_checkpoint"]


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The ``ckpt-0`` folder: ``path`` itself, or ``path/ckpt-0``."""
    p = Path(path)
    if (p / "ckpt-0").is_dir():
        return p / "ckpt-0"
    if p.is_dir() and any(TENSOR_FILE_RE.match(f.name) for f in p.iterdir()):
        return p
    raise CheckpointError(
        f"{p}: no checkpoint here (expected a ckpt-0/ folder or tensorNNNNN_000 files)"
    )


def _scan_files(ckpt: Path) -> tuple[dict[int, Path], list[str]]:
    files, problems = {}, []
    for f in sorted(ckpt.iterdir()):
        m = TENSOR_FILE_RE.match(f.name)
        if not m:
            continue
        index, shard = int(m.group(1)), int(m.group(2))
        if shard != 0:
            problems.append(
                f"{f.name}: shard {shard} (only single-shard _000 files exist in "
                f"the release format)"
            )
            continue
        files[index] = f
    return files, problems


def _parse_all(files: dict[int, Path]):
    specs, problems = {}, []
    for i, f in files.items():
        try:
            specs[i] = parse_tensor_file(f)
        except CheckpointError as e:
            problems.append(str(e))
    return specs, problems


_PREFETCH_BYTES = 1 << 30


def _prefetch(specs: dict, budget: int = _PREFETCH_BYTES) -> None:
    """Ask the kernel to start reading the first ``budget`` payload bytes (file order) into
    the page cache in the background (``POSIX_FADV_WILLNEED``); a hint only, never an error.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for spec in (a for i in sorted(specs) for a in _arrays(specs[i])):
        if budget <= 0:
            return
        if spec.inline_data is not None or not spec.nbytes:
            continue
        try:
            fd = os.open(spec.path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, spec.offset, min(spec.nbytes, budget), os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
        except OSError:
            return
        budget -= spec.nbytes


def _detect_layout(cfg: GrokConfig, specs: dict, order) -> GrokConfig:
    """Quantized or float linears, and each block-scaled weight's G, as the files say."""
    by_name = {name: specs.get(i) for i, (name, _, _) in enumerate(order)}
    linear_specs = [
        specs[i]
        for i, (_, path, _) in enumerate(order)
        if path[0] == "layers" and path[1] in ("attn", "moe") and i in specs
    ]
    if linear_specs and all(isinstance(s, QuantizedSpec) for s in linear_specs):
        changes = dict(quantized=True)
        for key, field in (
            ("multi_head_attention/linear/w", "attn_out_scale_blocks"),
            ("moe/linear_1/w", "moe_out_scale_blocks"),
        ):
            s = by_name.get(layer_prefix(0) + key)
            if isinstance(s, QuantizedSpec) and len(s.scales.shape) >= 2:
                changes[field] = int(s.scales.shape[-2])
        try:
            return dataclasses.replace(cfg, **changes)
        except ValueError:
            return cfg  # the per-tensor checks below say what is wrong
    if linear_specs and not any(isinstance(s, QuantizedSpec) for s in linear_specs):
        return dataclasses.replace(cfg, quantized=False)
    return cfg


def _check(name: str, spec, want, stacked: bool, problems: list[str]):
    """Compare one file's spec with the model's abstract value (one layer of it if
    ``stacked``); append what differs to ``problems``."""
    if stacked:
        want = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), want)
    if isinstance(want, QArray):
        if not isinstance(spec, QuantizedSpec):
            problems.append(
                f"{name}: expected a QuantizedWeight8bit, found a plain {spec.dtype} array"
            )
            return
        if spec.weight.dtype != np.int8:
            problems.append(f"{name}: weight dtype {spec.weight.dtype}, expected int8")
        if tuple(spec.weight.shape) != tuple(want.weight.shape):
            problems.append(
                f"{name}: weight shape {tuple(spec.weight.shape)}, expected "
                f"{tuple(want.weight.shape)}"
            )
        if tuple(spec.scales.shape) != tuple(want.scales.shape):
            problems.append(
                f"{name}: scales shape {tuple(spec.scales.shape)}, expected "
                f"{tuple(want.scales.shape)}"
            )
        if spec.scales.dtype.name not in FLOAT_DTYPES:
            problems.append(f"{name}: scales dtype {spec.scales.dtype} is not a float type")
        return
    shape = tuple(want.shape)
    if isinstance(spec, QuantizedSpec):
        problems.append(f"{name}: expected a float array {shape}, found a QuantizedWeight8bit")
        return
    if spec.dtype.name not in FLOAT_DTYPES:
        problems.append(
            f"{name}: dtype {spec.dtype}, expected a float type (float32/bfloat16/float16)"
        )
    if tuple(spec.shape) != shape:
        problems.append(f"{name}: shape {tuple(spec.shape)}, expected {shape}")


def _plan(path, cfg: GrokConfig):
    """Parse and validate every file; returns (cfg, abstract model, {model path: [specs]})."""
    ckpt = checkpoint_dir(path)
    files, problems = _scan_files(ckpt)
    require_release_layout(cfg)
    order = release_names(cfg.num_layers)
    specs, parse_problems = _parse_all(files)
    problems += parse_problems
    _prefetch(specs)  # the disk works while the model is traced and the files are checked
    cfg = _detect_layout(cfg, specs, order)
    abstract = abstract_model(cfg)
    state = nnx.state(abstract, nnx.Param)
    homes: dict[tuple[str, ...], list] = {}
    for i, (name, mpath, layer) in enumerate(order):
        fname = tensor_file_name(i)
        if i not in files:
            problems.append(f"{fname} ({name}): missing")
            continue
        if i not in specs:
            continue  # unreadable: already reported
        want = get_path(state, mpath).get_value()
        _check(f"{fname} ({name})", specs[i], want, layer is not None, problems)
        homes.setdefault(mpath, [None] * (cfg.num_layers if layer is not None else 1))
        homes[mpath][layer or 0] = specs[i]
    for i in sorted(set(files) - set(range(len(order)))):
        problems.append(
            f"{files[i].name}: extra file — the config describes {len(order)} "
            f"tensors ({cfg.num_layers} layers)"
        )
    if problems:
        raise CheckpointError(
            f"{ckpt}: {len(problems)} problem(s) with this checkpoint for "
            f"the given config:\n  - " + "\n  - ".join(problems)
        )
    return cfg, abstract, homes


def _read_into(out: np.ndarray, spec: ArraySpec, index: tuple) -> None:
    """Fill ``out`` with the ``index`` slice of the array ``spec`` describes.

    A whole, C-ordered array of the same dtype is read straight from the file into ``out``
    (one copy out of the page cache, as ``cat`` does); anything else — a slice of a sharded
    dimension, another dtype, Fortran order — goes through a memory map.
    """
    whole = all(s.indices(n) == (0, n, 1) for s, n in zip(index, spec.shape, strict=True))
    if (
        whole
        and spec.dtype == out.dtype
        and not spec.fortran_order
        and spec.inline_data is None
        and out.flags.c_contiguous
        and spec.nbytes
    ):
        read_payload_into(spec, out)
    else:
        out[...] = read_array(spec, mmap=True)[index]


def _host_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised, page-aligned host buffer.

    Page alignment lets JAX's CPU backend adopt the buffer as the device array without a
    copy, and nothing is zero-filled that the checkpoint overwrites anyway. (Transparent
    huge pages were tried: on VMs that report free memory to the host, each huge page is
    faulted in again on the host, and reading was 4–6× slower; docs/performance.md.)
    """
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < 1 << 16:  # small: 64-byte alignment inside an ordinary allocation
        raw = np.empty(nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        return raw[start : start + nbytes].view(dtype).reshape(shape)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype).reshape(shape)


@cache
def _pool() -> ThreadPoolExecutor:
    # reading releases the GIL: a few threads keep the page-cache copies on every core busy
    return ThreadPoolExecutor(
        max(2, min(8, os.cpu_count() or 1)), thread_name_prefix="grok_flax-load"
    )


@cache
def _layer_setter(sharding):
    """``stacked[i] = piece`` in place: the stacked buffer is donated, the output keeps its
    sharding, so XLA writes into the same memory instead of copying the whole stack."""

    def set_layer(stacked, piece, i):
        return jax.lax.dynamic_update_index_in_dim(stacked, piece, i, 0)

    return jax.jit(set_layer, donate_argnums=0, out_shardings=sharding)


@cache
def _zeros(shape, dtype, sharding):
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)


def _index_key(index: tuple) -> tuple:
    return tuple((s.start, s.stop, s.step) for s in index)


def _array_from_host_blocks(shape, sharding, dtype, fill):
    """Start building a ``shape`` array with ``sharding`` from host buffers, one per distinct
    local shard; returns ``finish()``, which waits for the reads and gives the array.

    ``fill(out, index)`` lists the read jobs that write the ``index`` block into ``out``;
    they run on a thread pool. Devices holding the same block (replication) share one host
    buffer: on CPU the devices adopt it without copying, an accelerator gets its own copy.
    """
    indices = sharding.addressable_devices_indices_map(tuple(shape))
    buffers: dict[tuple, np.ndarray] = {}
    jobs = []
    for index in indices.values():
        key = _index_key(index)
        if key not in buffers:
            out = _host_empty(sharding.shard_shape(tuple(shape)), dtype)
            buffers[key] = out
            jobs += [_pool().submit(*job) for job in fill(out, index)]

    def finish() -> jax.Array:
        for job in jobs:
            job.result()
        pieces = [jax.device_put(buffers[_index_key(i)], d) for d, i in indices.items()]
        return jax.make_array_from_single_device_arrays(tuple(shape), sharding, pieces)

    return finish


def _load_array(specs: list[ArraySpec], aval, sharding, stacked: bool, budget: int | None):
    """Start loading a device array of ``aval``'s shape/dtype with ``sharding``; returns
    ``finish()``, which gives the array once its reads are done.

    Each device's shard is assembled on the host straight from the files (for a stacked
    [L, ...] parameter, layer by layer into its slot) and handed to the device. On CPU that
    host buffer *is* the device memory (``budget=None``); on an accelerator a stacked
    parameter whose shard exceeds ``budget`` bytes is instead sent one layer at a time into
    a donated device buffer, so the host never holds more than one layer of it.
    """
    dtype = np.dtype(aval.dtype)
    shape = tuple(aval.shape)
    if not stacked:
        return _array_from_host_blocks(
            shape, sharding, dtype, lambda out, index: [(_read_into, out, specs[0], index)]
        )
    shard_shape = sharding.shard_shape(shape)
    if budget is None or int(np.prod(shard_shape)) * dtype.itemsize <= budget:

        def fill(out, index):
            layers = range(*index[0].indices(len(specs)))
            return [(_read_into, out[j], specs[i], index[1:]) for j, i in enumerate(layers)]

        return _array_from_host_blocks(shape, sharding, dtype, fill)
    layer_sharding = _drop_leading(sharding)
    out = _zeros(shape, dtype, sharding)()
    set_layer = _layer_setter(sharding)
    for i, spec in enumerate(specs):
        piece = _array_from_host_blocks(
            shape[1:], layer_sharding, dtype, lambda o, index, s=spec: [(_read_into, o, s, index)]
        )()
        out = set_layer(out, piece, np.int32(i))
        del piece
        out.block_until_ready()  # don't let pieces pile up behind asynchronous dispatch
    return lambda: out


def _staging_budget(mesh, largest_tensor: int) -> int | None:
    """Host bytes one stacked parameter's shard may be staged in before it goes to a device.

    On CPU the staged buffers become the arrays themselves (no bound: ``None``); on an
    accelerator, the largest single tensor of the checkpoint, at least 64 MiB.
    """
    if all(d.platform == "cpu" for d in mesh.devices.flat):
        return None
    return max(64 << 20, largest_tensor)


def _drop_leading(sharding):
    spec = tuple(sharding.spec) + (None,) * (len(sharding.spec) == 0)
    return NamedSharding(sharding.mesh, PartitionSpec(*spec[1:]))


def load_checkpoint(
    path: str | os.PathLike, config: GrokConfig, mesh=None, *, progress: bool = True
) -> Grok:
    """Read an official-format checkpoint into a ``Grok`` model, sharded over ``mesh``.

    ``path`` is the folder holding ``ckpt-0/`` or ``ckpt-0/`` itself. Whether linears are
    int8 (as released) or float, and the scale-block counts G, are taken from the files; every
    other shape must match ``config`` or a ``CheckpointError`` lists all differences.
    """
    cfg, abstract, homes = _plan(path, config)
    mesh = make_mesh(1, 1, jax.devices()[:1]) if mesh is None else mesh
    graphdef, state = nnx.split(abstract)
    shardings = state_shardings(state, mesh)
    sizes = {mpath: [_spec_bytes(s) for s in specs] for mpath, specs in homes.items()}
    budget = _staging_budget(mesh, max(max(v) for v in sizes.values()))
    bar = _progress(sum(sum(v) for v in sizes.values()), progress)
    t0 = time.perf_counter()
    pending = []
    for mpath, specs in homes.items():
        var = get_path(state, mpath)
        aval, shard = var.get_value(), get_path(shardings, mpath).get_value()
        stacked = mpath[0] == "layers"
        if isinstance(aval, QArray):
            parts = (
                _load_array([s.weight for s in specs], aval.weight, shard.weight, stacked, budget),
                _load_array([s.scales for s in specs], aval.scales, shard.scales, stacked, budget),
            )
            finish = _join_quantized(*parts)
        else:
            finish = _load_array(specs, aval, shard, stacked, budget)
        pending.append((var, finish, sum(sizes[mpath])))
        if budget is not None:  # accelerator: one parameter's host staging at a time
            _finish(*pending.pop(), bar)
    for p in pending:  # CPU: every read was queued at once, so the pool never idles
        _finish(*p, bar)
    if bar is not None:
        bar.close()
    model = nnx.merge(graphdef, state)
    model.load_seconds = time.perf_counter() - t0
    return attach_mesh(model, mesh)


def _join_quantized(weight, scales):
    return lambda: QArray(weight=weight(), scales=scales())


def _finish(var, finish, nbytes: int, bar) -> None:
    var.set_value(finish())
    if bar is not None:
        bar.update(nbytes)


def _arrays(spec) -> tuple[ArraySpec, ...]:
    """The arrays one tensor file holds: int8 weight and scales, or one float array."""
    return (spec.weight, spec.scales) if isinstance(spec, QuantizedSpec) else (spec,)


def _spec_bytes(spec) -> int:
    return sum(a.nbytes for a in _arrays(spec))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="loading")


def inspect_checkpoint(path: str | os.PathLike, num_layers: int | None = None) -> list[dict]:
    """The tensor table (no data read): file, name, shape, dtype, quantized, bytes.

    Names come from the release order for ``num_layers`` (inferred from the file count if
    not given: 12 tensors per layer + 2)."""
    ckpt = checkpoint_dir(path)
    files, problems = _scan_files(ckpt)
    if num_layers is None:
        num_layers = max(0, (len(files) - 2) // 12)
    order = release_names(num_layers)
    rows = []
    for i, f in sorted(files.items()):
        name = order[i][0] if i < len(order) else "?"
        try:
            spec = parse_tensor_file(f)
        except CheckpointError as e:
            rows.append(dict(file=f.name, name=name, error=str(e)))
            continue
        if isinstance(spec, QuantizedSpec):
            rows.append(
                dict(
                    file=f.name,
                    name=name,
                    shape=tuple(spec.weight.shape),
                    dtype="int8",
                    quantized=True,
                    scales=tuple(spec.scales.shape),
                    scales_dtype=str(spec.scales.dtype),
                    bytes=_spec_bytes(spec),
                )
            )
        else:
            rows.append(
                dict(
                    file=f.name,
                    name=name,
                    shape=tuple(spec.shape),
                    dtype=str(spec.dtype),
                    quantized=False,
                    bytes=spec.nbytes,
                )
            )
    return rows
