"""Running the model: text in, text out.

- :mod:`~grok_flax.running.tokenizer`: the released SentencePiece tokenizer, strictly checked;
- :mod:`~grok_flax.running.sampling`: temperature, top-k and top-p over the last logits;
- :mod:`~grok_flax.running.generate`: the jitted prefill and decode steps (the one definition
  that generation, ``plan``, the benchmarks and the multi-process tests share) and
  ``Generator``, which batches prompts into a KV memory and streams tokens.
"""
