"""Concept pictures for notebook 10: training: the loss, the load-balancing term, the optimizer
step.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
