"""Running the model: text in, text out.

- :mod:`~grok_flax.running.tokenizer`: the released SentencePiece tokenizer, strictly checked;
- :mod:`~grok_flax.running.sampling`: temperature, top-k and top-p over the last logits;
- :mod:`~grok_flax.running.steps`: the jitted prefill and decode steps — the one definition
  that generation, ``plan``, the benchmarks and the multi-process tests share;
- :mod:`~grok_flax.running.generate`: ``Generator``, which batches prompts into a KV memory
  and streams tokens;
- :mod:`~grok_flax.running.plan`: per-device memory of serving the full model on a mesh, from
  abstract shapes and those steps compiled ahead of time (``python -m grok_flax plan``).
"""
