"""Checkers for the "Try this" exercises of notebook 05:
`notebooks/05_quantized_weights.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
