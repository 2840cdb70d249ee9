"""grok_flax.viz.ablation: notebook 11's pictures follow their numbers and refuse bad input."""

import numpy as np
import pytest

from grok_flax import viz
from grok_flax.config import GrokConfig


def _texts(fig):
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_switches_follow_the_config():
    g = _texts(viz.ablation_switches(GrokConfig.grok_1()))
    assert "embed × 78.4" in g and "un-embed × 0.577" in g, g
    assert "30·tanh(x/30)" in g and "top-2 of 8 experts" in g and "top-2 of 4" in g
    assert "base 10,000" in g and "balancing weight 0.01" in g
    t = _texts(viz.ablation_switches(GrokConfig.tiny(num_experts=4), aux_weight=0.1, tight_cap=3))
    assert "embed × 3" in t and "top-2 of 4 experts" in t and "top-2 of 2" in t
    assert "balancing weight 0.1" in t and "3·tanh(x/3)" in t
    s = _texts(viz.ablation_switches(GrokConfig.tiny(attn_logit_cap=None, use_rope=False)))
    assert "logits → no cap" in s and "no RoPE" in s
    with pytest.raises(ValueError, match="GrokConfig"):
        viz.ablation_switches({"emb_size": 64})
    with pytest.raises(ValueError, match="aux_weight"):
        viz.ablation_switches(GrokConfig.tiny(), aux_weight=-1)


def test_effects_are_paired_differences_with_the_seed_band():
    ce = {"baseline": [5.0, 5.2, 5.1], "a": [5.1, 5.3, 5.2], "b": [4.9, 5.2, 5.1]}
    fig = viz.ablation_effects(ce, labels={"a": "variant A"})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "variant A"]
    texts = _texts(fig)
    assert "+0.100" in texts and "-0.033" in texts  # the paired means
    assert "baseline ± 0.100" in ax.get_legend().texts[0].get_text()  # half the range
    with pytest.raises(ValueError, match="same seeds"):
        viz.ablation_effects({"baseline": [1, 2, 3], "a": [1, 2]})
    with pytest.raises(ValueError, match="no 'baseline'"):
        viz.ablation_effects({"a": [1, 2, 3]})
    with pytest.raises(ValueError, match="nothing to compare"):
        viz.ablation_effects({"baseline": [1.0, 2.0]})
    nan = viz.ablation_effects({"baseline": [1.0, 2.0], "x": [np.nan, np.nan]})
    assert "diverged" in _texts(nan)
