"""Logical axes -> mesh axes: the one rule table, the stacked-layer axis named, and a warning
(never a silent replication) when a mesh does not divide a dimension."""

import warnings

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_flax import Grok, GrokConfig, KVMemory
from grok_flax.axes import ACTIVATION, RULES, constrain, spec_for
from grok_flax.scale.mesh import make_mesh
from grok_flax.scale.sharding import state_shardings


def _quiet(logical, shape, mesh):
    """spec_for, asserting it warns about nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return spec_for(logical, shape, mesh)


def test_spec_rules_any_mesh():
    m18, m24, m81, m11 = (make_mesh(*s) for s in [(1, 8), (2, 4), (8, 1), (1, 1)])
    assert _quiet(("embed", "q_heads"), (64, 6144), m18) == P(None, "model")
    assert _quiet(("embed", "q_heads"), (64, 6144), m24) == P("data", "model")
    assert _quiet(("embed", "q_heads"), (64, 6144), m81) == P("data", None)
    assert _quiet(("embed", "q_heads"), (64, 6144), m11) == P(None, None)
    kv = ("layers", "batch", "kv_seq", "kv_heads", "head_dim")
    assert _quiet(kv, (3, 8, 16, 8, 8), m24) == P(None, "data", None, "model", None)
    assert _quiet(("layers", "experts", "embed", "ffn"), (64, 8, 32, 48), m18) == P(
        None, None, None, "model"
    )
    # embedding columns over data × model
    assert _quiet(("vocab", "embed_vocab"), (256, 32), m24) == P(None, ("data", "model"))
    assert _quiet((None, "act_seq", "act_embed"), (2, 3, 4), m24) == P(None, None, None)


def test_a_dimension_the_mesh_does_not_divide_is_replicated_with_a_warning():
    m18, m24 = make_mesh(1, 8), make_mesh(2, 4)
    with pytest.warns(
        UserWarning,
        match=r"^w: axis 'kv_heads' of size 12 is not split over "
        r"mesh axis model=8: replicated over it$",
    ):
        assert spec_for(("embed", "kv_heads"), (6, 12), m18, what="w") == P(None, None)
    # KV memory [L, B, S, K, H]: 2 kv heads on model=4, batch 1 on data=2
    kv = ("layers", "batch", "kv_seq", "kv_heads", "head_dim")
    with pytest.warns(UserWarning) as caught:
        assert spec_for(kv, (3, 1, 16, 2, 8), m24) == P(None, None, None, None, None)
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "axis 'batch' of size 1 is not split over mesh axis data=2: replicated over it",
        "axis 'kv_heads' of size 2 is not split over mesh axis model=4: replicated over it",
    ]
    # a rule over several axes keeps the largest trailing group that divides, and says so
    with pytest.warns(UserWarning, match="size 12 is not split over mesh axis data=2"):
        assert spec_for(("vocab", "embed_vocab"), (256, 12), m24) == P(None, "model")
    with pytest.warns(UserWarning, match="not split over mesh axis data=2, model=4"):
        assert spec_for(("vocab", "embed_vocab"), (256, 6), m24) == P(None, None)


def test_every_axis_must_be_named():
    mesh = make_mesh(1, 8)
    unnamed = r"2 axis names \('embed', 'ffn'\) for an array of shape \(64, 8, 32, 48\)"
    with pytest.raises(ValueError, match=unnamed):
        spec_for(("embed", "ffn"), (64, 8, 32, 48), mesh)
    with pytest.raises(ValueError, match="unknown logical axis name"):
        spec_for(("embed", "heads"), (4, 4), mesh)


def test_stacked_layers_name_their_axis():
    """Every decoder parameter carries "layers" first: nothing is inferred from the rank."""
    model = nnx.eval_shape(lambda: Grok(GrokConfig.tiny(), rngs=nnx.Rngs(0)))
    for path, var in nnx.to_flat_state(nnx.state(model.layers)):
        logical = var.get_metadata()["logical"]
        value = var.get_value()
        shape = value.weight.shape if hasattr(value, "weight") else value.shape
        assert logical[0] == "layers" and len(logical) == len(shape), (path, logical, shape)
    assert set(RULES) >= {
        name for _, v in nnx.to_flat_state(nnx.state(model)) for name in v.get_metadata()["logical"]
    }


def test_placement_warns_naming_the_parameter():
    cfg = GrokConfig.tiny()  # 2 kv heads
    with pytest.warns(
        UserWarning,
        match=r"KVMemory\.k: axis 'kv_heads' of size 2 is not "
        r"split over mesh axis model=8",
    ):
        state_shardings(KVMemory(cfg, 1, 8), make_mesh(1, 8))


def test_constrain_is_a_no_op_without_a_mesh_and_pins_with_one():
    x = jnp.ones((2, 3, 4))
    assert constrain(x, ACTIVATION) is x
    mesh = make_mesh(2, 4)
    with jax.set_mesh(mesh):
        y = jax.jit(lambda a: constrain(a * 2, ACTIVATION))(x)
    assert y.sharding.spec[0] == "data" and y.sharding.shard_shape(y.shape) == (1, 3, 4)
