"""Checkers for the "Try this" exercises of notebook 02:
`notebooks/02_rotary_embeddings.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
