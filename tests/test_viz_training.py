"""grok_flax.viz.training: notebook 10's pictures follow their numbers and refuse bad input."""

import numpy as np
import pytest

from grok_flax import viz


def _texts(fig):
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_balance_term_reads_one_and_e_over_k():
    for E, k in [(8, 2), (16, 1)]:
        fig = viz.balance_term(E, k)
        text = _texts(fig) + fig._suptitle.get_text()
        assert "E·Σ f·P = 1" in text and f"E·Σ f·P = {E / k:g}" in text, text
    with pytest.raises(ValueError, match="top_k"):
        viz.balance_term(4, 5)


def test_next_token_targets_counts_what_the_loss_counts():
    fig = viz.next_token_targets(["a", "b", "c", "<pad>"], num_pad=1)
    assert "2 targets counted, 1 pad target left out" in _texts(fig)
    with pytest.raises(ValueError, match="num_pad"):
        viz.next_token_targets(["a", "b"], num_pad=2)


def test_load_comparison_and_curves_draw_every_run():
    shares = {"a": np.full((2, 4), 0.25), "b": np.eye(4)[[0, 1]]}
    fig = viz.load_comparison(shares)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_legend().texts][1:] == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError, match="same"):
        viz.load_comparison({"a": np.ones((2, 4)), "b": np.ones((3, 4))})
    logs = {
        n: {"ce": np.linspace(8, 6, 30) + d, "aux": np.ones(30)} for n, d in [("x", 0), ("y", 0.01)]
    }
    fig = viz.training_curves(logs)
    diff = fig.axes[1].lines[0].get_ydata()
    np.testing.assert_allclose(diff, 0.01)  # the middle panel is the second run minus the first
    with pytest.raises(ValueError, match="exactly two"):
        viz.training_curves({"x": logs["x"]})
