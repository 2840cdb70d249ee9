"""Concept pictures for notebook 06: the decoder layer: sandwich norms, the residual stream, layers
stacked and scanned.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
