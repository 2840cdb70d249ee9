"""Benchmarks: each script measures grok_flax against the reference algorithm side by side."""
