"""Checkers for the "Try this" exercises of notebook 09:
`notebooks/09_long_context.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
