"""Concept pictures for notebook 03: attention: grouped-query heads, the capped online softmax, the
KV memory filling.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
