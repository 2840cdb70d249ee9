"""The ablation study (issue 26): each switch changes what it should and nothing else, the
defaults are the release, and the stored study (docs/ablation.json) is complete and
reproducible."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import nnx

from grok_flax.attention import soft_cap
from grok_flax.config import GrokConfig
from grok_flax.demo import ablate, train
from grok_flax.model import Grok, param_count

STUDY = ROOT / "docs" / "ablation.json"
SWITCHES = ("attn_logit_cap", "use_rope", "post_norms", "renormalize_gates")


def _tokens(cfg, B=2, T=12, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 1, cfg.vocab_size)


def _tiny(**kw):
    return GrokConfig.tiny(quantized=False, compute_dtype="float32", attention_impl="naive",
                           moe_impl="dense", **kw)  # fmt: skip


# ------------------------------------------------------------------------------ the defaults
def test_defaults_are_the_release():
    g = GrokConfig.grok_1()
    assert (g.attn_logit_cap, g.use_rope, g.post_norms, g.renormalize_gates) == (
        30.0, True, True, False,
    )  # fmt: skip
    assert (g.num_experts, g.num_selected_experts) == (8, 2)
    assert g.embedding_multiplier_scale == 78.38367176906169
    assert g.output_multiplier_scale == 0.5773502691896257
    assert train.TrainSettings().aux_weight == ablate.StudySettings().aux_weight == 0.01
    for preset in (GrokConfig.small(), GrokConfig.tiny(), ablate.study_config()):
        assert [getattr(preset, f) for f in SWITCHES] == [getattr(g, f) for f in SWITCHES]


def test_each_variant_changes_only_its_own_fields():
    base, s = ablate.study_config(), ablate.StudySettings()
    assert ablate.variant_config("baseline", base) == base
    assert ablate.variant_settings("baseline", s) == s
    names = [v.name for v in ablate.VARIANTS]
    assert len(set(names)) == len(names) == 10 and names[0] == "baseline"
    for v in ablate.VARIANTS[1:]:
        cfg, vs = ablate.variant_config(v, base), ablate.variant_settings(v, s)
        changed = {
            f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)
        }
        trained = {
            f.name for f in dataclasses.fields(vs) if getattr(vs, f.name) != getattr(s, f.name)
        }
        assert changed == set(v.config) and trained == set(v.training), v.name
        assert changed or trained, f"{v.name} changes nothing"


# ------------------------------------------------------------------------------ each switch
def test_renormalised_gates_sum_to_one_and_route_the_same():
    out = {}
    for renorm in (False, True):
        model = Grok(_tiny(renormalize_gates=renorm), rngs=nnx.Rngs(0))
        out[renorm] = model(_tokens(model.cfg), capture=("routing",))[1]
    raw, ren = out[False], out[True]
    # layer 0 routes the same tokens to the same experts with the same probabilities
    np.testing.assert_array_equal(raw["router_probs"][0], ren["router_probs"][0])
    np.testing.assert_array_equal(raw["experts"][0], ren["experts"][0])
    np.testing.assert_allclose(ren["gates"].sum(-1), 1.0, rtol=1e-6)
    assert float(raw["gates"].sum(-1).max()) < 1.0  # Grok-1: raw probabilities
    for c in (raw, ren):  # every layer: the gates are the chosen probabilities (÷ their sum)
        chosen = np.take_along_axis(np.asarray(c["router_probs"]), np.asarray(c["experts"]), -1)
        want = chosen / chosen.sum(-1, keepdims=True) if c is ren else chosen
        np.testing.assert_allclose(c["gates"], want, rtol=1e-6)


def test_no_cap_leaves_logits_uncapped():
    x = jnp.linspace(-200.0, 200.0, 101)
    assert soft_cap(x, None) is x
    assert float(jnp.abs(soft_cap(x, 30.0)).max()) < 30.0
    caught, weights = {}, {}
    for cap in (None, 30.0, 5.0):  # a multiplier large enough for logits beyond 30
        model = Grok(_tiny(attn_logit_cap=cap, attn_output_multiplier=40.0), rngs=nnx.Rngs(0))
        _, c = model(_tokens(model.cfg), capture=("attention", "attention_logit_max"))
        caught[cap], weights[cap] = np.asarray(c["attention_logit_max"]), np.asarray(c["attention"])
    # the diagnostic is read before the cap: layer 0 sees the same logits whatever the cap
    np.testing.assert_allclose(caught[None][0], caught[30.0][0], rtol=1e-6)
    assert caught[None].max() > 30.0
    T = weights[None].shape[-1]
    causal = np.tril(np.ones((T, T), bool))
    for cap in (30.0, 5.0):  # with a cap c, two visible keys' weights differ by ≤ e^(2c)
        w = np.where(causal, weights[cap], np.nan)
        ratio = np.nanmax(w, -1) / np.nanmin(w, -1)
        assert ratio.max() <= np.exp(2 * cap) * 1.001, cap
    w = np.where(causal, weights[None], np.nan)
    assert (np.nanmin(w, -1) < np.nanmax(w, -1) * np.exp(-60.0)).any()  # beyond what 30 allows


def test_small_logits_make_the_cap_inert():
    logits = {}
    for cap in (None, 30.0):
        model = Grok(_tiny(attn_logit_cap=cap, attn_output_multiplier=0.05), rngs=nnx.Rngs(0))
        logits[cap] = model(_tokens(model.cfg))
    np.testing.assert_allclose(logits[None], logits[30.0], atol=1e-4)


def test_pre_norm_only_drops_exactly_the_post_norms():
    sandwich = Grok(_tiny(), rngs=nnx.Rngs(0))
    pre = Grok(_tiny(post_norms=False), rngs=nnx.Rngs(0))
    assert sandwich.layers.post_attn_norm is not None and pre.layers.post_attn_norm is None
    assert pre.layers.post_moe_norm is None
    cfg = sandwich.cfg
    assert param_count(sandwich) - param_count(pre) == 2 * cfg.num_layers * cfg.emb_size
    mine = dict(nnx.to_flat_state(nnx.state(pre, nnx.Param)))
    for path, var in nnx.to_flat_state(
        nnx.state(sandwich, nnx.Param)
    ):  # the rest: the same weights
        if "post_attn_norm" in path or "post_moe_norm" in path:
            continue
        np.testing.assert_array_equal(var.get_value(), mine[path].get_value())
    assert not np.allclose(sandwich(_tokens(cfg)), pre(_tokens(cfg)))


def test_no_rope_sees_only_the_set_of_earlier_tokens():
    """One layer without RoPE: the last position's logits depend on the earlier tokens as a
    set (attention is permutation-invariant over its keys); with RoPE, on their order."""
    tokens = _tokens(_tiny(), B=1, T=10)
    shuffled = tokens.at[0, :-1].set(tokens[0, :-1][::-1])
    last = {}
    for rope in (True, False):
        model = Grok(_tiny(num_layers=1, use_rope=rope), rngs=nnx.Rngs(0))
        last[rope] = [np.asarray(model(t)[0, -1]) for t in (tokens, shuffled)]
    np.testing.assert_allclose(*last[False], atol=1e-5)
    assert not np.allclose(*last[True], atol=1e-3)


def test_routing_variants_change_k_and_e_only():
    base = ablate.study_config(vocab_size=256)
    for name, (E, k) in {"top_1": (8, 1), "experts_4": (4, 2)}.items():
        cfg = ablate.variant_config(name, base)
        model = nnx.eval_shape(lambda c=cfg: Grok(c, rngs=nnx.Rngs(0)))
        assert model.layers.router.w.shape == (cfg.num_layers, cfg.emb_size, E)
        assert model.layers.moe.linear.shape[1] == E and cfg.num_selected_experts == k
        assert cfg.ffn_size == base.ffn_size  # experts of the same width


def test_no_multipliers_scale_the_logits_and_nothing_else():
    a = Grok(_tiny(), rngs=nnx.Rngs(0))
    b = Grok(_tiny(output_multiplier_scale=1.0), rngs=nnx.Rngs(0))
    t = _tokens(a.cfg)
    np.testing.assert_allclose(b(t), a(t) / a.cfg.output_multiplier_scale, rtol=1e-5, atol=1e-6)


def test_no_balancing_term_trains_on_cross_entropy_alone():
    model = Grok(_tiny(), rngs=nnx.Rngs(0))
    t = _tokens(model.cfg)
    aux0 = ablate.variant_settings("no_balance", ablate.StudySettings()).aux_weight
    loss, m = train.lm_loss(model, t[:, :-1], t[:, 1:], aux0)
    assert aux0 == 0 and float(loss) == float(m["ce"]) and float(m["aux"]) > 0


def test_loss_spikes_rule():
    ce = [5.0] * 30
    ce[25] = 5.6
    assert ablate.loss_spikes(ce, window=20, nats=0.5) == [26]
    assert ablate.loss_spikes(ce, window=20, nats=0.7) == []


# ----------------------------------------------------------------------------- stored study
def _study():
    return json.loads(STUDY.read_text())


def test_stored_study_has_every_variant_on_three_seeds():
    study = _study()
    for key in ("command", "commit", "date", "seeds", "steps", "wall_seconds", "settings"):
        assert study.get(key) is not None, key
    assert {"platform", "cpu_count"} <= set(study["machine"])
    assert len(study["seeds"]) >= 3
    assert set(study["runs"]) == {v.name for v in ablate.VARIANTS}
    for name, runs in study["runs"].items():
        assert sorted(r["seed"] for r in runs) == sorted(study["seeds"]), name
        for r in runs:
            assert r["steps_done"] == study["steps"] or r["nonfinite_step"], (name, r["seed"])
    assert study["summary"] == json.loads(json.dumps(ablate.summarize(study["runs"])))
    assert "baseline" in ablate.table(study)


@pytest.mark.slow
def test_baseline_row_is_reproduced_by_a_short_rerun():
    """Seed 0's baseline, re-trained for the first ``eval_every`` steps of the same schedule,
    lands on the stored held-out CE at that step, well within the seeds' spread there."""
    study = _study()
    s = ablate.StudySettings(**study["settings"])
    first = {r["seed"]: r["heldout_curve"][0] for r in study["runs"]["baseline"]}
    step = first[0][0]
    at_step = np.array([c[1] for c in first.values()])
    spread = (at_step.max() - at_step.min()) / 2
    rerun = ablate.run_one("baseline", 0, s, ablate.load_data(s), stop_at=step)
    got = rerun["heldout_curve"][-1]
    assert got[0] == step
    assert abs(got[1] - first[0][1]) <= max(spread, 1e-3), (got, first[0], spread)


@pytest.mark.slow
def test_quick_mode_writes_a_study(tmp_path, capsys):
    out = tmp_path / "a.json"
    argv = ["--quick", "--variants", "no_balance", "--seeds", "0", "1", "--jobs", "1"]
    assert ablate.main([*argv, "--out", str(out)]) == 0
    study = json.loads(out.read_text())
    assert set(study["runs"]) == {"baseline", "no_balance"} and study["seeds"] == [0, 1]
    assert study["steps"] == ablate.StudySettings.quick().steps
    assert "--quick --variants no_balance" in study["command"]
    runs = study["runs"]["no_balance"]
    assert all(r["steps_done"] == study["steps"] for r in runs)
    assert "no balancing term" in capsys.readouterr().out
