"""The two compiled serving steps — the one definition that generation, ``plan``, the
benchmarks and the multi-process tests share.

    prefill_step: a chunk of the prompts [B, P] → the KV memory; each row's last logits kept
    decode_step:  one token per row → the KV memory (only its slots) → sample the next token

Both take the model and the KV memory split into a graph (static: compiled once per shape)
and a state (the arrays); the memory's state is donated, so its buffers are updated in place.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from grok_flax import axes
from grok_flax.running.sampling import sample


@partial(jax.jit, static_argnums=(0, 2), donate_argnums=(3,))
def prefill_step(
    graph, params, mem_graph, mem_state, tokens, lengths, last_logits, end_row, end_idx
):
    """Write one chunk [B, P] of the prompts into the KV memory; rows whose prompt ends in
    this chunk (``end_row``) keep the logits of their last token (at ``end_idx``): only
    those B positions are un-embedded. -> (memory state, last_logits [B, V], the model's
    compute dtype)."""
    model, memory = nnx.merge(graph, params), nnx.merge(mem_graph, mem_state)
    here = model(tokens, memory, lengths=lengths, logits_at=end_idx, check_inputs=False)
    last_logits = jnp.where(end_row[:, None], here.astype(last_logits.dtype), last_logits)
    return nnx.state(memory), last_logits


@partial(jax.jit, static_argnums=(0, 2), static_argnames=("candidates",), donate_argnums=(3,))
def decode_step(
    graph,
    params,
    mem_graph,
    mem_state,
    tokens,
    keys,
    step,
    temperature,
    top_p,
    top_k,
    candidates=None,
):
    """Feed one token per row, sample the next: the whole per-token work, compiled once.
    Only the new token's K/V slots of the (donated) memory are written. ``candidates``:
    see ``sampling.sample`` (an exact top-k pre-selection when every row has a top_k)."""
    model, memory = nnx.merge(graph, params), nnx.merge(mem_graph, mem_state)
    logits = model(tokens[:, None], memory, check_inputs=False)[:, 0]  # [B, V]
    return nnx.state(memory), _sample(logits, keys, step, temperature, top_p, top_k, candidates)


@partial(jax.jit, static_argnames=("candidates",))
def first_sample(logits, keys, temperature, top_p, top_k, candidates=None):
    """The first new token of each row, from the prefill's last logits."""
    return _sample(logits, keys, 0, temperature, top_p, top_k, candidates)


def _sample(logits, keys, step, temperature, top_p, top_k, candidates=None):
    """``sample`` with each row's key folded with the step; on a mesh with Explicit axes,
    run with them made Auto (the rows' settings and logits may be sharded differently)."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    return axes.run_on_mesh(
        axes.mesh_of(logits),
        partial(sample, candidates=candidates),
        lambda mesh: PartitionSpec(),
        logits,
        keys,
        temperature,
        top_p,
        top_k,
    )


__all__ = ["decode_step", "first_sample", "prefill_step"]
