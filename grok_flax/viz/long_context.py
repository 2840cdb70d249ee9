"""Concept pictures for notebook 09: long context: chunked prefill, attention cost as the context
grows.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
