"""Concept pictures for notebook 02: RoPE: pairs of coordinates rotating with position.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
