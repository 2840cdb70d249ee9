"""The concept pictures of notebook 04 (grok_flax/viz/moe.py): drawn from the config's numbers,
without pyplot, and clear about bad input."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from grok_flax import GrokConfig, viz

G1, TINY = GrokConfig.grok_1(), GrokConfig.tiny()
ROUTED = np.array([[2, 0], [5, 2], [2, 7], [0, 3], [2, 5], [7, 2]])  # 6 tokens, top-2 of 8


def texts(fig: Figure) -> str:
    """Every string drawn on the figure (titles, labels, annotations, tick labels)."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def test_all_are_exported():
    for name in ("top_k_routing", "geglu_expert", "sparse_dispatch", "dispatch_work"):
        assert name in viz.moe.__all__ and callable(getattr(viz, name))


def test_top_k_routing_follows_the_config_and_the_token():
    g1 = texts(viz.top_k_routing(G1))
    assert "[6144 × 8]" in g1 and "Top-2 routing over 8 experts" in g1
    tiny = texts(viz.top_k_routing(TINY))
    assert f"[{TINY.emb_size} × {TINY.num_experts}]" in tiny and "[6144 × 8]" not in tiny
    p = np.array([0.05, 0.4, 0.05, 0.05, 0.3, 0.05, 0.05, 0.05])
    t = texts(viz.top_k_routing(G1, p, token="def"))
    assert "'def'" in t
    assert "Σ = 0.70" in t and "Σ = 1.00" in t  # raw gates, and renormalised
    assert "0.40·expert1(x) + 0.30·expert4(x)" in t


def test_top_k_routing_rejects_bad_probs():
    with pytest.raises(ValueError, match="one probability per expert"):
        viz.top_k_routing(G1, np.full(4, 0.25))
    with pytest.raises(ValueError, match="probability distribution"):
        viz.top_k_routing(G1, np.ones(8))


def test_geglu_expert_counts_the_parameters():
    t = texts(viz.geglu_expert(G1))
    assert "[6144 × 32768]" in t and "[32768 × 6144]" in t
    assert "603,979,776 parameters per expert" in t and "309.2 B" in t
    tiny = texts(viz.geglu_expert(TINY))
    assert "603,979,776" not in tiny
    assert f"{3 * TINY.emb_size * TINY.ffn_size:,} parameters per expert" in tiny


def test_sparse_dispatch_sorts_pads_and_tiles():
    t = texts(viz.sparse_dispatch(ROUTED, 8, 2, cfg=G1))
    # counts per expert: e0 2, e2 5, e3 1, e5 2, e7 2 -> tiles 1+3+1+1+1 = 7, 14 rows, 2 padding
    assert "12 pairs → 7 tiles of 2 rows (2 padding rows" in t
    assert "tile 3 → expert 2: [2 × 6144] @ [6144 × 32768]" in t
    assert t.count("pad (0)") == 2 and "96 rows" in t
    tiny = texts(viz.sparse_dispatch(ROUTED, 8, 4, cfg=TINY))
    assert f"[4 × {TINY.emb_size}]" in tiny and "6144" not in tiny
    assert "[2 × D] @ [D × F]" in texts(viz.sparse_dispatch(ROUTED, 8, 2))


@pytest.mark.parametrize(
    ("experts", "E", "tile", "match"),
    [
        (np.array([0, 1, 2]), 8, 2, "N tokens, k choices"),
        (np.array([[0, 9]]), 8, 2, "expert ids in 0..7"),
        (np.array([[0.5, 1.0]]), 8, 2, "integer"),
        (ROUTED, 8, 0, "at least 1 row"),
        (np.zeros((30, 2), int), 8, 2, "too many"),
    ],
)
def test_sparse_dispatch_rejects_bad_input(experts, E, tile, match):
    with pytest.raises(ValueError, match=match):
        viz.sparse_dispatch(experts, E, tile)


def test_dispatch_work_shows_e_times_the_arithmetic_and_the_bytes_crossover():
    t = texts(viz.dispatch_work(G1))
    assert "dense does 8× the work" in t and "B = 8/2 = 4: equal" in t
    assert "19.3" in t and "2.4" in t  # GFLOP per token and layer: all 8 vs the 2 chosen
    assert "B=1: gather reads 4× fewer" in t and "B=8: gather reads 2× more" in t
    assert "D = 6,144, F = 32,768" in t
    tiny = texts(viz.dispatch_work(TINY))
    assert f"D = {TINY.emb_size:,}" in tiny and "6,144" not in tiny
    with pytest.raises(ValueError, match="positive batch sizes"):
        viz.dispatch_work(G1, batches=[0, 2])
