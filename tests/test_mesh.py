"""Meshes: built over the devices there are (or simulated CPU ones, with a warning saying so),
parsed from the command line's ``data=1,model=8``, and clear errors when there are too few."""

import warnings

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from grok_flax.scale.mesh import make_mesh, mesh_devices, parse_mesh_spec
from grok_flax.scale.sharding import put_global


def test_parse_mesh_spec_and_make_mesh():
    assert parse_mesh_spec("data=2,model=4") == {"data": 2, "model": 4}
    assert parse_mesh_spec("model=8") == {"data": 1, "model": 8}
    assert parse_mesh_spec("2x4") == {"data": 2, "model": 4}
    for bad in ("data=0", "pipe=2", "data=1,data=2", "2x", "8"):
        with pytest.raises(ValueError):
            parse_mesh_spec(bad)
    assert make_mesh(2).shape == {"data": 2, "model": 4}
    assert make_mesh(2, 4).axis_names == ("data", "model")
    with pytest.raises(ValueError):
        make_mesh(4, 4)


def test_too_few_devices_says_how_to_simulate_them():
    with pytest.raises(
        ValueError,
        match=r"needs 64 devices, 8 available\. On a CPU, simulate "
        r"them: set XLA_FLAGS=--xla_force_host_platform_"
        r"device_count=64",
    ):
        make_mesh(8, 8)


# --- mesh_devices: 8 devices wherever a notebook runs ---


def test_mesh_devices_uses_the_default_platform_when_it_has_enough():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note on the real path
        assert mesh_devices(8) == jax.devices()
        assert mesh_devices(1) == jax.devices()


def _one_accelerator(monkeypatch, cpu_count):
    """jax.devices() as on a one-GPU machine; jax.devices("cpu") the first cpu_count CPUs."""
    import types

    real = jax.devices
    cpus = real("cpu")[:cpu_count]
    gpu = types.SimpleNamespace(platform="gpu", id=0)
    monkeypatch.setattr(
        jax, "devices", lambda backend=None: list(cpus) if backend == "cpu" else [gpu]
    )
    return cpus


def test_mesh_devices_falls_back_to_simulated_cpu_devices(monkeypatch):
    cpus = _one_accelerator(monkeypatch, 8)
    with pytest.warns(
        UserWarning,
        match=r"1 gpu device\(s\), fewer than the 8 this mesh "
        r"needs; using the 8 simulated CPU devices",
    ):
        devices = mesh_devices(8)
    assert devices == list(cpus) and all(d.platform == "cpu" for d in devices)
    mesh = make_mesh(1, 8, devices=devices)
    spec = jax.sharding.NamedSharding(mesh, P(None, "model"))
    x = put_global(np.arange(16.0).reshape(2, 8), spec)
    assert x.sharding.shard_shape(x.shape) == (2, 1)
    np.testing.assert_array_equal(jax.jit(lambda a: a.sum())(x), 120.0)


def test_mesh_devices_says_how_to_get_enough_cpu_devices(monkeypatch):
    _one_accelerator(monkeypatch, 2)
    with pytest.raises(
        ValueError,
        match=r"default platform \(gpu\) has 1 and the CPU 2\. "
        r"Simulate 8 CPU devices: call jax\.config\.update"
        r"\('jax_num_cpu_devices', 8\)",
    ):
        mesh_devices(8)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="XLA_FLAGS=--xla_force_host_platform_device_count=64"):
        mesh_devices(64)  # the CPU itself has only 8 here
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            mesh_devices(bad)
