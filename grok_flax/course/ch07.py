"""Checkers for the "Try this" exercises of notebook 07:
`notebooks/07_meshes_and_sharding.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
