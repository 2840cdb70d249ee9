"""Concept pictures for notebook 08: the release: its file layout and the streaming load.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
