"""The router: which 2 of the 8 experts each token goes to, and with what weight.

fp32 throughout: ``probs = softmax(x @ w)`` over *all* experts, then top-k. The gates are the
raw probabilities of the chosen experts — Grok-1 does *not* renormalise them to sum to 1, so
a token whose top-2 hold 60% of the mass gets 0.6 of an expert output in total.
(``renormalize=True`` divides the gates by their sum: an ablation, not the release.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Router(nnx.Module):
    """Which experts each token goes to: an f32 linear map to one logit per expert, softmax
    over all experts, top-k. Returns the raw probabilities of the chosen experts as gates
    (not renormalised), the chosen experts, and all probabilities."""

    def __init__(
        self,
        emb_size: int,
        num_experts: int,
        num_selected: int,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        renormalize: bool = False,
    ):
        if not 0 < num_selected <= num_experts:
            raise ValueError(f"cannot select {num_selected} of {num_experts} experts")
        self.num_selected = num_selected
        self.renormalize = renormalize
        w = jax.random.normal(rngs.params(), (emb_size, num_experts)) * emb_size**-0.5
        self.w = nnx.Param(w.astype(param_dtype), logical=("embed", "experts"))  # [D, E]

    def __call__(self, x: jax.Array):
        """x [..., D] -> gates [..., k] fp32, experts [..., k] int32, probs [..., E] fp32."""
        with jax.named_scope("router"):
            logits = jnp.dot(x.astype(jnp.float32), self.w[...].astype(jnp.float32))
            probs = jax.nn.softmax(logits, axis=-1)
            gates, experts = jax.lax.top_k(probs, self.num_selected)
            if self.renormalize:  # not Grok-1: the chosen gates made to sum to 1
                gates = gates / gates.sum(axis=-1, keepdims=True)
            return gates, experts.astype(jnp.int32), probs
