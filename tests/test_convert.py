import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grok_flax import Grok, GrokConfig
from grok_flax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from grok_flax.checkpoint.convert import convert, load_orbax, load_safetensors, save_safetensors

CFG = GrokConfig.tiny(compute_dtype="float32")


def _same(a, b):
    la = jax.tree.leaves(nnx.state(a, nnx.Param))
    lb = jax.tree.leaves(nnx.state(b, nnx.Param))
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_official_safetensors_orbax_official_round_trip(tmp_path):
    model = Grok(CFG, rngs=nnx.Rngs(0))
    save_checkpoint(model, tmp_path / "official")
    (tmp_path / "official" / "config.json").write_text(CFG.to_json())
    convert(tmp_path / "official", tmp_path / "m.safetensors")
    st = load_safetensors(tmp_path / "m.safetensors")
    _same(model, st)
    convert(tmp_path / "m.safetensors", tmp_path / "m.orbax")
    ob = load_orbax(tmp_path / "m.orbax")
    _same(model, ob)
    convert(tmp_path / "m.orbax", tmp_path / "back")
    _same(model, load_checkpoint(tmp_path / "back", CFG, progress=False))
    assert st.layers.moe.linear_1.get_value().scales.dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", ["explicit", pytest.param("grok_flax", marks=pytest.mark.slow)])
def test_converted_model_loads_onto_a_mesh(tmp_path, kind):
    import jax

    from grok_flax.scale.mesh import make_mesh

    model = Grok(CFG, rngs=nnx.Rngs(0))
    save_checkpoint(model, tmp_path / "official")
    (tmp_path / "official" / "config.json").write_text(CFG.to_json())
    convert(tmp_path / "official", tmp_path / "m.safetensors")
    mesh = jax.make_mesh((2, 4), ("data", "model")) if kind == "explicit" else make_mesh(2, 4)
    sharded = load_safetensors(tmp_path / "m.safetensors", mesh=mesh)
    toks = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
    np.testing.assert_allclose(
        np.asarray(sharded(toks)), np.asarray(model(toks)), rtol=2e-5, atol=2e-5
    )


def test_safetensors_problems_are_listed(tmp_path):
    model = Grok(CFG, rngs=nnx.Rngs(0))
    save_safetensors(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="problem"):
        load_safetensors(tmp_path / "m.safetensors", CFG.replace(emb_size=64))
