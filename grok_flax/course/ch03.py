"""Checkers for the "Try this" exercises of notebook 03:
`notebooks/03_attention_and_kv_memory.ipynb`."""

from __future__ import annotations

from grok_flax.course import exercise  # noqa: F401
