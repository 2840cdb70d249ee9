"""Load (and write) the released Grok-1 checkpoint: ``ckpt-0/tensor00000_000 …``.

The release stores one pickle per parameter; file i holds the i-th parameter of the original
Haiku model's tree flattened in *sorted* order, so the layers come lexicographically
(decoder_layer_0, _1, _10, _11, …, _19, _2, _20 …). ``release_names`` rebuilds that order
and ``PARAM_HOMES`` says where each released tensor lives in ``grok_flax.Grok``.

Loading is safe and bounded:
- no pickle is executed: ``ckpt_format`` walks each file's opcodes against an allow-list
  and only *locates* the raw bytes of each array;
- the bytes are memory-mapped and each device's shard is built straight from its slice
  (``jax.make_array_from_callback``), one layer at a time into the stacked parameter, int8
  staying int8 — so host memory beyond the loaded arrays stays near one tensor;
- before anything is read, every file is checked against the model the config describes and
  *all* problems (missing, extra, mis-shaped, wrong dtype, unreadable) are raised at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from functools import cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_flax.ckpt_format import (
    ArraySpec,
    CheckpointError,
    QuantizedSpec,
    parse_tensor_file,
    read_array,
    tensor_file_name,
    write_array_file,
    write_quantized_file,
)
from grok_flax.config import GrokConfig
from grok_flax.model import Grok, abstract_model
from grok_flax.quant import QArray, quantize

__all__ = ["CheckpointError", "PARAM_HOMES", "checkpoint_dir", "inspect_checkpoint",
           "load_checkpoint", "release_names", "save_checkpoint"]

# model parameter path -> name in the release (per layer under transformer/decoder_layer_N/)
PARAM_HOMES: dict[tuple[str, ...], str] = {
    ("embed",): "language_model/in_out_embed/embeddings",
    ("final_norm", "scale"): "language_model/rms_norm/scale",
    ("layers", "attn", "query"): "multi_head_attention/query/w",
    ("layers", "attn", "key"): "multi_head_attention/key/w",
    ("layers", "attn", "value"): "multi_head_attention/value/w",
    ("layers", "attn", "linear"): "multi_head_attention/linear/w",
    ("layers", "moe", "linear"): "moe/linear/w",
    ("layers", "moe", "linear_v"): "moe/linear_v/w",
    ("layers", "moe", "linear_1"): "moe/linear_1/w",
    ("layers", "router", "w"): "router/w",
    ("layers", "pre_attn_norm", "scale"): "rms_norm/scale",
    ("layers", "post_attn_norm", "scale"): "rms_norm_1/scale",
    ("layers", "pre_moe_norm", "scale"): "rms_norm_2/scale",
    ("layers", "post_moe_norm", "scale"): "rms_norm_3/scale",
}
_LAYER_PREFIX = "transformer/decoder_layer_{}/"
_FLOAT_FILE_DTYPES = {np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.float16)}
_SCALE_DTYPES = _FLOAT_FILE_DTYPES
_TENSOR_RE = re.compile(r"^tensor(\d{5})_(\d{3})$")


def release_names(num_layers: int) -> list[tuple[str, tuple[str, ...], int | None]]:
    """[(release name, model path, layer or None)] in checkpoint file order."""
    entries = []
    for path, name in PARAM_HOMES.items():
        if path[0] == "layers":
            for i in range(num_layers):
                entries.append((_LAYER_PREFIX.format(i) + name, path, i))
        else:
            entries.append((name, path, None))
    # Haiku params are {module: {param: value}}; jax flattens dicts by sorted keys.
    entries.sort(key=lambda e: tuple(e[0].rsplit("/", 1)))
    return entries


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The ``ckpt-0`` folder: ``path`` itself, or ``path/ckpt-0``."""
    p = Path(path)
    if (p / "ckpt-0").is_dir():
        return p / "ckpt-0"
    if p.is_dir() and any(_TENSOR_RE.match(f.name) for f in p.iterdir()):
        return p
    raise CheckpointError(f"{p}: no checkpoint here (expected a ckpt-0/ folder or "
                          f"tensorNNNNN_000 files)")


def _scan_files(ckpt: Path) -> tuple[dict[int, Path], list[str]]:
    files, problems = {}, []
    for f in sorted(ckpt.iterdir()):
        m = _TENSOR_RE.match(f.name)
        if not m:
            continue
        index, shard = int(m.group(1)), int(m.group(2))
        if shard != 0:
            problems.append(f"{f.name}: shard {shard} (only single-shard _000 files exist in "
                            f"the release format)")
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


def _detect_layout(cfg: GrokConfig, specs: dict, order) -> GrokConfig:
    """Quantized or float linears, and each block-scaled weight's G, as the files say."""
    by_name = {name: specs.get(i) for i, (name, _, _) in enumerate(order)}
    linear_specs = [specs[i] for i, (_, path, _) in enumerate(order)
                    if path[0] == "layers" and path[1] in ("attn", "moe") and i in specs]
    if linear_specs and all(isinstance(s, QuantizedSpec) for s in linear_specs):
        changes = dict(quantized=True)
        for key, field in (("multi_head_attention/linear/w", "attn_out_scale_blocks"),
                           ("moe/linear_1/w", "moe_out_scale_blocks")):
            s = by_name.get(_LAYER_PREFIX.format(0) + key)
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
            problems.append(f"{name}: expected a QuantizedWeight8bit, found a plain "
                            f"{spec.dtype} array")
            return
        if spec.weight.dtype != np.int8:
            problems.append(f"{name}: weight dtype {spec.weight.dtype}, expected int8")
        if tuple(spec.weight.shape) != tuple(want.weight.shape):
            problems.append(f"{name}: weight shape {tuple(spec.weight.shape)}, expected "
                            f"{tuple(want.weight.shape)}")
        if tuple(spec.scales.shape) != tuple(want.scales.shape):
            problems.append(f"{name}: scales shape {tuple(spec.scales.shape)}, expected "
                            f"{tuple(want.scales.shape)}")
        if spec.scales.dtype not in _SCALE_DTYPES:
            problems.append(f"{name}: scales dtype {spec.scales.dtype} is not a float type")
        return
    shape = tuple(want.shape)
    if isinstance(spec, QuantizedSpec):
        problems.append(f"{name}: expected a float array {shape}, found a QuantizedWeight8bit")
        return
    if spec.dtype not in _FLOAT_FILE_DTYPES:
        problems.append(f"{name}: dtype {spec.dtype}, expected a float type "
                        f"(float32/bfloat16/float16)")
    if tuple(spec.shape) != shape:
        problems.append(f"{name}: shape {tuple(spec.shape)}, expected {shape}")


def _plan(path, cfg: GrokConfig):
    """Parse and validate every file; returns (cfg, abstract model, {model path: [specs]})."""
    ckpt = checkpoint_dir(path)
    files, problems = _scan_files(ckpt)
    order = release_names(cfg.num_layers)
    specs, parse_problems = _parse_all(files)
    problems += parse_problems
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
        want = _get(state, mpath).get_value()
        _check(f"{fname} ({name})", specs[i], want, layer is not None, problems)
        homes.setdefault(mpath, [None] * (cfg.num_layers if layer is not None else 1))
        homes[mpath][layer or 0] = specs[i]
    for i in sorted(set(files) - set(range(len(order)))):
        problems.append(f"{files[i].name}: extra file — the config describes {len(order)} "
                        f"tensors ({cfg.num_layers} layers)")
    if problems:
        raise CheckpointError(f"{ckpt}: {len(problems)} problem(s) with this checkpoint for "
                              f"the given config:\n  - " + "\n  - ".join(problems))
    return cfg, abstract, homes


def _get(state, path):
    node = state
    for p in path:
        node = node[p]
    return node


def _read_slice(spec: ArraySpec, index: tuple, dtype) -> np.ndarray:
    """The ``index`` slice of a memory-mapped array, converted to ``dtype``."""
    return np.asarray(read_array(spec, mmap=True)[index]).astype(dtype, copy=False)


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


def _load_array(specs: list[ArraySpec], aval, sharding, stacked: bool, budget: int):
    """A device array of ``aval``'s shape/dtype with ``sharding``, built shard by shard.

    A stacked [L, ...] parameter whose per-device shard fits ``budget`` bytes is assembled on
    the host shard by shard (one copy from the memory map); a bigger one is filled one layer
    at a time into a donated device buffer, so the host never holds more than one layer.
    """
    dtype = np.dtype(aval.dtype)
    if not stacked:
        def cb(index):
            return _read_slice(specs[0], index, dtype)
        return jax.make_array_from_callback(aval.shape, sharding, cb)
    shard_shape = sharding.shard_shape(tuple(aval.shape))
    if int(np.prod(shard_shape)) * dtype.itemsize <= budget:
        def stacked_cb(index):
            layers = range(*index[0].indices(len(specs)))
            out = np.empty((len(layers), *shard_shape[1:]), dtype)
            for j, i in enumerate(layers):
                out[j] = _read_slice(specs[i], index[1:], dtype)
            return out
        return jax.make_array_from_callback(aval.shape, sharding, stacked_cb)
    layer_shape = aval.shape[1:]
    layer_sharding = _drop_leading(sharding)
    out = _zeros(tuple(aval.shape), dtype, sharding)()
    set_layer = _layer_setter(sharding)
    for i, spec in enumerate(specs):
        piece = jax.make_array_from_callback(
            layer_shape, layer_sharding, lambda index, s=spec: _read_slice(s, index, dtype))
        out = set_layer(out, piece, np.int32(i))
        del piece
        out.block_until_ready()  # don't let pieces pile up behind asynchronous dispatch
    return out


def _drop_leading(sharding):
    from jax.sharding import NamedSharding, PartitionSpec

    spec = tuple(sharding.spec) + (None,) * (len(sharding.spec) == 0)
    return NamedSharding(sharding.mesh, PartitionSpec(*spec[1:]))


def load_checkpoint(path: str | os.PathLike, config: GrokConfig, mesh=None, *,
                    progress: bool = True) -> Grok:
    """Read an official-format checkpoint into a ``Grok`` model, sharded over ``mesh``.

    ``path`` is the folder holding ``ckpt-0/`` or ``ckpt-0/`` itself. Whether linears are
    int8 (as released) or float, and the scale-block counts G, are taken from the files; every
    other shape must match ``config`` or a ``CheckpointError`` lists all differences.
    """
    from grok_flax.sharding import make_mesh, state_shardings

    cfg, abstract, homes = _plan(path, config)
    mesh = make_mesh(1, 1, jax.devices()[:1]) if mesh is None else mesh
    graphdef, state = nnx.split(abstract)
    shardings = state_shardings(state, mesh)
    sizes = [_spec_bytes(s) for specs in homes.values() for s in specs]
    total = sum(sizes)
    # host staging bound: the largest single tensor of the checkpoint (at least 64 MiB)
    budget = max(64 << 20, max(sizes))
    bar = _progress(total, progress)
    t0 = time.perf_counter()
    for mpath, specs in homes.items():
        var = _get(state, mpath)
        aval, shard = var.get_value(), _get(shardings, mpath).get_value()
        stacked = mpath[0] == "layers"
        if isinstance(aval, QArray):
            value = QArray(
                weight=_load_array([s.weight for s in specs], aval.weight, shard.weight,
                                   stacked, budget),
                scales=_load_array([s.scales for s in specs], aval.scales, shard.scales,
                                   stacked, budget))
        else:
            value = _load_array(specs, aval, shard, stacked, budget)
        var.set_value(value)
        if bar is not None:
            bar.update(sum(_spec_bytes(s) for s in specs))
    if bar is not None:
        bar.close()
    model = nnx.merge(graphdef, state)
    model.load_seconds = time.perf_counter() - t0
    return model


def _spec_bytes(spec) -> int:
    if isinstance(spec, QuantizedSpec):
        return spec.weight.nbytes + spec.scales.nbytes
    return spec.nbytes


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
            rows.append(dict(file=f.name, name=name, shape=tuple(spec.weight.shape),
                             dtype="int8", quantized=True, scales=tuple(spec.scales.shape),
                             scales_dtype=str(spec.scales.dtype), bytes=_spec_bytes(spec)))
        else:
            rows.append(dict(file=f.name, name=name, shape=tuple(spec.shape),
                             dtype=str(spec.dtype), quantized=False, bytes=spec.nbytes))
    return rows


def save_checkpoint(model: Grok, path: str | os.PathLike, *, quantize_floats: bool = True,
                    progress: bool = False) -> Path:
    """Write ``model`` in the official format to ``path/ckpt-0/``.

    Quantized linears are written as they are; float linears are quantized first (the
    release format stores linears as QuantizedWeight8bit) unless ``quantize_floats=False``.
    Embedding, norms and router are written as float32, as released.
    """
    cfg = model.cfg
    ckpt = Path(path) / "ckpt-0"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = nnx.state(model, nnx.Param)
    order = release_names(cfg.num_layers)
    blocks = {("layers", "attn", "linear"): cfg.attn_out_scale_blocks,
              ("layers", "moe", "linear_1"): cfg.moe_out_scale_blocks}
    for i, (_, mpath, layer) in enumerate(order):
        value = _get(state, mpath).get_value()
        if layer is not None:
            value = jax.tree.map(lambda a, j=layer: a[j], value)
        f = ckpt / tensor_file_name(i)
        is_linear = mpath[0] == "layers" and mpath[1] in ("attn", "moe")
        if isinstance(value, QArray):
            write_quantized_file(f, np.asarray(value.weight), np.asarray(value.scales))
        elif is_linear and quantize_floats:
            q = quantize(value, blocks.get(mpath, 1))
            write_quantized_file(f, np.asarray(q.weight), np.asarray(q.scales))
        else:
            write_array_file(f, np.asarray(value, dtype=np.float32))
    return ckpt
