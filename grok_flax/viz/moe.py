"""Concept pictures for notebook 04: the router and the experts: top-2 routing, sort → pad → tile
dispatch.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
