"""Convert a model between the official ``ckpt-0`` format, safetensors and orbax — exactly.

- **safetensors**: one tensor per released parameter, named as in the release
  (``transformer/decoder_layer_3/moe/linear/w``); a quantized weight becomes two tensors,
  ``<name>.weight`` (int8) and ``<name>.scales`` (bf16). The config travels as JSON in the
  file's metadata.
- **orbax**: the model's ``nnx`` parameter state (stacked layers, int8 weights and scales as
  they are) saved with ``orbax.checkpoint``; the config sits beside it in ``config.json``.

Every conversion keeps dtypes and bits: official → safetensors → orbax → official gives back
identical files' arrays (``tests/test_convert.py``).

    python -m grok_flax convert SRC DST [--config FILE.json]

SRC/DST kinds are told apart by name: ``*.safetensors`` is a safetensors file, a folder named
``*.orbax`` (or holding ``_CHECKPOINT_METADATA``) is orbax, anything else is an official
checkpoint folder (holding ``ckpt-0/``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from grok_flax.checkpoint.loader import load_checkpoint
from grok_flax.checkpoint.release import (
    CheckpointError,
    get_path,
    release_names,
    require_release_layout,
)
from grok_flax.checkpoint.writer import save_checkpoint
from grok_flax.config import GrokConfig
from grok_flax.model import Grok, abstract_model
from grok_flax.quant import QArray
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import attach_mesh, state_shardings


def _params(model):
    return nnx.state(model, nnx.Param)


def save_safetensors(model: Grok, path: str | os.PathLike) -> Path:
    """Write ``model``'s parameters to one safetensors file, named as in the release (a
    quantized weight as ``<name>.weight`` and ``<name>.scales``), its config in the metadata."""
    from safetensors.numpy import save_file

    require_release_layout(model.cfg)
    state, tensors = _params(model), {}
    for name, mpath, layer in release_names(model.cfg.num_layers):
        value = get_path(state, mpath).get_value()
        if layer is not None:
            value = jax.tree.map(lambda a, i=layer: a[i], value)
        if isinstance(value, QArray):
            tensors[name + ".weight"] = np.asarray(value.weight)
            tensors[name + ".scales"] = np.asarray(value.scales)
        else:
            tensors[name] = np.asarray(value)
    path = Path(path)
    save_file(tensors, str(path), metadata={"grok_flax_config": model.cfg.to_json()})
    return path


def _model_from_tensors(cfg: GrokConfig, fetch, mesh=None) -> Grok:
    """Build a model of ``cfg`` whose every released tensor comes from ``fetch(name)``;
    all missing or mis-shaped tensors are reported together."""
    abstract = abstract_model(cfg)
    graphdef, state = nnx.split(abstract)
    require_release_layout(cfg)
    per_path: dict = {}
    problems = []
    for name, mpath, layer in release_names(cfg.num_layers):
        want = get_path(state, mpath).get_value()
        if layer is not None:
            want = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), want)
        parts = (
            {"weight": name + ".weight", "scales": name + ".scales"}
            if isinstance(want, QArray)
            else {"": name}
        )
        got = {}
        for field, key in parts.items():
            target = getattr(want, field) if field else want
            arr = fetch(key)
            if arr is None:
                problems.append(f"{key}: missing")
            elif arr.shape != tuple(target.shape) or arr.dtype != np.dtype(target.dtype):
                problems.append(
                    f"{key}: {arr.dtype}{list(arr.shape)}, expected "
                    f"{np.dtype(target.dtype)}{list(target.shape)}"
                )
            else:
                got[field] = arr
        value = QArray(got.get("weight"), got.get("scales")) if "weight" in parts else got.get("")
        per_path.setdefault(mpath, []).append(value)
    if problems:
        raise CheckpointError(f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    mesh = make_mesh(1, 1, jax.devices()[:1]) if mesh is None else mesh
    shardings = state_shardings(state, mesh)
    for mpath, values in per_path.items():
        value = (
            values[0] if mpath[0] != "layers" else jax.tree.map(lambda *xs: np.stack(xs), *values)
        )
        sharding = get_path(shardings, mpath).get_value()
        get_path(state, mpath).set_value(jax.device_put(value, sharding))
    return attach_mesh(nnx.merge(graphdef, state), mesh)


def load_safetensors(path: str | os.PathLike, config: GrokConfig | None = None, mesh=None) -> Grok:
    """A model from a file ``save_safetensors`` wrote (config from its metadata unless
    given), placed on ``mesh``; missing, mis-shaped and extra tensors are all reported at once."""
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        meta = f.metadata() or {}
        if config is None:
            if "grok_flax_config" not in meta:
                raise ValueError(f"{path}: no config in the file's metadata; pass config=")
            config = GrokConfig.from_json(meta["grok_flax_config"])
        keys = set(f.keys())
        model = _model_from_tensors(config, lambda k: f.get_tensor(k) if k in keys else None, mesh)
        expected = {
            n + s
            for n, _, _ in release_names(config.num_layers)
            for s in ("", ".weight", ".scales")
        }
        extra = sorted(keys - expected)
    if extra:
        raise CheckpointError(f"{path}: tensors the config has no place for: {extra[:10]}")
    return model


def save_orbax(model: Grok, path: str | os.PathLike) -> Path:
    """Save ``model``'s parameter state with ``orbax.checkpoint`` under ``path/params`` and its
    config as ``path/config.json``."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    state = nnx.state(model, nnx.Param)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / "params", state)
        ckptr.wait_until_finished()
    (path / "config.json").write_text(model.cfg.to_json())
    return path


def load_orbax(path: str | os.PathLike, config: GrokConfig | None = None, mesh=None) -> Grok:
    """A model from a folder ``save_orbax`` wrote, restored straight into the shardings of
    ``mesh`` (one device when None)."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if config is None:
        config = GrokConfig.from_json(path / "config.json")
    abstract = abstract_model(config)
    graphdef, state = nnx.split(abstract)
    params = nnx.state(abstract, nnx.Param)
    mesh = make_mesh(1, 1, jax.devices()[:1]) if mesh is None else mesh
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        params,
        state_shardings(params, mesh),
    )
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path / "params", target)
    nnx.update(abstract, restored)
    return attach_mesh(abstract, mesh)


def _format_of(path: Path) -> str:
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix == ".orbax" or (path / "params" / "_CHECKPOINT_METADATA").exists():
        return "orbax"
    return "official"


def _check_destination(path: Path) -> None:
    """A destination is a ``*.safetensors`` file, a ``*.orbax`` folder, or a folder (no
    suffix) for the official format; anything else is refused before any work is done."""
    if path.suffix in (".safetensors", ".orbax"):
        return
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{path} is a file: the destination must be a folder for the "
            f"official format, a *.safetensors file or a *.orbax folder"
        )
    if path.suffix:
        raise ValueError(
            f"unknown destination format {path.suffix!r} ({path}): name a folder "
            f"without a suffix for the official format, or a *.safetensors "
            f"file, or a *.orbax folder"
        )


def load_any(path: str | os.PathLike, config: GrokConfig | None = None, mesh=None) -> Grok:
    """A model from any of the three formats, told apart by the path's name (see above); an
    official checkpoint needs ``config`` or a ``config.json`` beside ``ckpt-0/``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    kind = _format_of(path)
    if kind == "safetensors":
        return load_safetensors(path, config, mesh)
    if kind == "orbax":
        return load_orbax(path, config, mesh)
    if config is None:
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{path}: an official checkpoint needs a config (--config)")
        config = GrokConfig.from_json(cfg_file)
    return load_checkpoint(path, config, mesh=mesh, progress=False)


def save_any(model: Grok, path: str | os.PathLike) -> Path:
    """Write ``model`` in the format ``path``'s name asks for (the destination is checked
    first: a file, or a suffix other than ``.safetensors`` / ``.orbax``, is refused)."""
    path = Path(path)
    _check_destination(path)
    kind = _format_of(path)
    if kind == "safetensors":
        return save_safetensors(model, path)
    if kind == "orbax":
        return save_orbax(model, path)
    out = save_checkpoint(model, path)
    (path / "config.json").write_text(model.cfg.to_json())
    return out


def convert(src, dst, config: GrokConfig | None = None) -> Path:
    """Read ``src`` in its format, write ``dst`` in its own (chosen by its name); both paths
    are checked before anything is read."""
    _check_destination(Path(dst))
    return save_any(load_any(src, config), dst)


__all__ = [
    "convert",
    "load_any",
    "load_orbax",
    "load_safetensors",
    "save_any",
    "save_orbax",
    "save_safetensors",
]
