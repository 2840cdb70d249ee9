"""Checkers for the "Try this" exercises of notebook 10:
`notebooks/10_training.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
