"""Checkers for the "Try this" exercises of notebook 08:
`notebooks/08_loading_and_running.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
