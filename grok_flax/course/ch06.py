"""Checkers for the "Try this" exercises of notebook 06:
`notebooks/06_assembling_grok1.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
