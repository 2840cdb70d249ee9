import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import Grok, GrokConfig
from grok_flax.checkpoint import (
    CheckpointError,
    inspect_checkpoint,
    load_checkpoint,
    release_names,
    save_checkpoint,
)
from grok_flax.checkpoint.writer import write_array_file, write_quantized_file
from grok_flax.quant import QArray
from grok_flax.scale.mesh import make_mesh

CFG = GrokConfig.tiny(compute_dtype="float32", num_layers=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    model = Grok(CFG, rngs=nnx.Rngs(0))
    save_checkpoint(model, path)
    return model, path


def _leaves(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_release_order_is_lexicographic_over_layers():
    names = [n for n, _, _ in release_names(12)]
    layers = [n.split("/")[1] for n in names if n.startswith("transformer/")][::12]
    assert layers[:4] == [
        "decoder_layer_0",
        "decoder_layer_1",
        "decoder_layer_10",
        "decoder_layer_11",
    ]
    assert names[0] == "language_model/in_out_embed/embeddings"
    assert len(names) == 12 * 12 + 2


def test_round_trip_is_exact(saved):
    model, path = saved
    loaded = load_checkpoint(path, CFG, progress=False)
    for a, b in zip(_leaves(model), _leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.layers.moe.linear_1.get_value().weight.dtype == jnp.int8
    toks = jnp.array([[5, 6, 7, 8]])
    np.testing.assert_array_equal(model(toks), loaded(toks))


def test_load_accepts_ckpt0_folder_and_mesh(saved):
    model, path = saved
    mesh = make_mesh(2, 4)
    loaded = load_checkpoint(path / "ckpt-0", CFG, mesh=mesh, progress=False)
    w = loaded.layers.moe.linear.get_value().weight
    assert w.sharding.mesh.shape == {"data": 2, "model": 4}
    assert len(w.addressable_shards) == 8
    toks = jnp.array([[5, 6, 7, 8]])
    np.testing.assert_allclose(
        nnx.jit(lambda m, t: m(t))(loaded, toks), model(toks), rtol=1e-4, atol=1e-4
    )


def test_arrays_adopt_the_host_buffers_on_cpu(saved):
    # on CPU the page-aligned host buffer a shard is read into *is* the device array
    import grok_flax.checkpoint.loader as ckpt

    _, path = saved
    seen = []
    original = ckpt._host_empty

    def recording(shape, dtype):
        out = original(shape, dtype)
        seen.append(out)
        return out

    ckpt._host_empty = recording
    try:
        loaded = load_checkpoint(path, CFG, progress=False)
    finally:
        ckpt._host_empty = original
    w = loaded.layers.moe.linear.get_value().weight
    host = {a.ctypes.data for a in seen}
    assert w.addressable_shards[0].data.unsafe_buffer_pointer() in host


@pytest.mark.parametrize("mesh_shape", [(1, 1), (2, 4)])
def test_layer_by_layer_staging_equals_whole_shards(saved, monkeypatch, mesh_shape):
    # the accelerator path (stacked parameters sent one layer at a time into a donated
    # buffer), forced on CPU, gives the same arrays with the same shardings
    import grok_flax.checkpoint.loader as ckpt

    model, path = saved
    mesh = make_mesh(*mesh_shape)
    whole = load_checkpoint(path, CFG, mesh=mesh, progress=False)
    monkeypatch.setattr(ckpt, "_staging_budget", lambda mesh, largest: 0)
    layered = load_checkpoint(path, CFG, mesh=mesh, progress=False)
    for a, b, c in zip(_leaves(model), _leaves(whole), _leaves(layered), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        assert b.sharding == c.sharding


def test_every_problem_is_listed_at_once(saved, tmp_path):
    _, src = saved
    bad = tmp_path / "ckpt-0"
    bad.mkdir()
    for f in (src / "ckpt-0").iterdir():
        os.link(f, bad / f.name)
    os.remove(bad / "tensor00005_000")  # missing
    os.remove(bad / "tensor00001_000")
    write_array_file(bad / "tensor00001_000", np.ones((7,), np.float32))  # mis-shaped
    os.remove(bad / "tensor00003_000")
    write_array_file(bad / "tensor00003_000", np.ones((4, 32, 8), np.float32))  # not quantized
    write_array_file(bad / "tensor00099_000", np.ones((2,), np.float32))  # extra
    os.remove(bad / "tensor00009_000")
    write_array_file(bad / "tensor00009_000", np.ones((32,), np.int32))  # wrong dtype
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path, CFG, progress=False)
    msg = str(e.value)
    for needle in [
        "tensor00005_000",
        "missing",
        "tensor00001_000",
        "shape (7,)",
        "tensor00003_000",
        "QuantizedWeight8bit",
        "tensor00099_000",
        "extra",
        "tensor00009_000",
        "int32",
        "5 problem",
    ]:
        assert needle in msg, (needle, msg)


def test_config_mismatch_is_reported(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(path, CFG.replace(emb_size=64), progress=False)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path, CFG.replace(num_layers=4), progress=False)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_file_is_refused_and_never_run(saved, tmp_path):
    _, src = saved
    bad = tmp_path / "ckpt-0"
    bad.mkdir()
    for f in (src / "ckpt-0").iterdir():
        os.link(f, bad / f.name)
    marker = tmp_path / "PWNED"
    evil = _Evil()
    evil.marker = marker
    os.remove(bad / "tensor00002_000")
    (bad / "tensor00002_000").write_bytes(pickle.dumps(evil))
    with pytest.raises(CheckpointError, match=r"tensor00002_000.*(os|posix)\.system"):
        load_checkpoint(tmp_path, CFG, progress=False)
    assert not marker.exists()


def test_float_linears_and_detected_block_counts(tmp_path):
    cfg = CFG.replace(quantized=False)
    model = Grok(cfg, rngs=nnx.Rngs(1))
    save_checkpoint(model, tmp_path)  # quantizes the float linears, as the format requires
    loaded = load_checkpoint(tmp_path, cfg, progress=False)
    assert isinstance(loaded.layers.attn.query.get_value(), QArray)
    assert loaded.cfg.quantized and loaded.cfg.attn_out_scale_blocks == cfg.attn_out_scale_blocks
    toks = jnp.array([[3, 4, 5, 6, 7]])
    a, b = model(toks), loaded(toks)
    assert float(jnp.abs(a - b).max()) < 0.05 * float(jnp.abs(a).max())


def test_inspect_reads_no_data(saved):
    _, path = saved
    rows = inspect_checkpoint(path)
    assert len(rows) == 2 + 12 * 3
    q = next(r for r in rows if r["name"].endswith("decoder_layer_0/moe/linear_1/w"))
    assert q["quantized"] and q["dtype"] == "int8" and q["scales"][-2] == 4
    emb = rows[0]
    assert emb["shape"] == (256, 32) and emb["dtype"] == "float32"


def test_quantized_file_with_wrong_blocks_is_an_error(saved, tmp_path):
    _, src = saved
    bad = tmp_path / "ckpt-0"
    bad.mkdir()
    for f in (src / "ckpt-0").iterdir():
        os.link(f, bad / f.name)
    name = [
        i
        for i, (n, _, _) in enumerate(release_names(3))
        if n == "transformer/decoder_layer_1/multi_head_attention/linear/w"
    ][0]
    f = bad / f"tensor{name:05d}_000"
    os.remove(f)
    write_quantized_file(f, np.ones((32, 32), np.int8), np.ones((2, 32), np.float32))
    with pytest.raises(CheckpointError, match="scales shape"):
        load_checkpoint(tmp_path, CFG, progress=False)
