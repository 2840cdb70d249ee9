"""Concept pictures for notebook 07: meshes: column- then row-split matmuls, their all-reduces,
expert parallelism.

Each function returns a ``matplotlib.figure.Figure`` drawn from a ``GrokConfig`` (or plain
numbers), without pyplot."""

from __future__ import annotations

__all__: list[str] = []
