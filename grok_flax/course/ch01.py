"""Checkers for the "Try this" exercises of notebook 01:
`notebooks/01_tour.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
