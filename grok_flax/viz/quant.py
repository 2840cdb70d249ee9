"""Concept pictures for notebook 05: int8 weights: the block-scale layout.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
