"""Checkers for the "Try this" exercises of notebook 04:
`notebooks/04_router_and_experts.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
