"""The Grok-1 language model: embed, 64 decoder layers, final norm, tied un-embedding.

    x      = embed[tokens] (fp32 -> compute dtype) × embedding_multiplier_scale
    x      = decoder_layer_L(... decoder_layer_0(x))      # one compiled layer, scanned
    logits = rms_norm(x) @ embedᵀ × output_multiplier_scale

The layers' parameters are stacked along a leading axis (built with ``nnx.vmap``) and the
forward pass is a ``jax.lax.scan`` over them, so 64 layers compile as fast as one.
Keys whose token id is not greater than ``pad_token`` are masked, as in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grok_flax.config import GrokConfig
from grok_flax.kv_memory import KVMemory
from grok_flax.layer import DecoderLayer
from grok_flax.norm import RMSNorm
from grok_flax.quant import QArray


class Grok(nnx.Module):
    def __init__(self, cfg: GrokConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.emb_size
        embed = jax.random.normal(rngs.params(), (V, D), jnp.float32)
        self.embed = nnx.Param(embed.astype(cfg.pdtype), logical=("vocab", "embed_vocab"))

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_layers(rngs):
            return DecoderLayer(cfg, rngs=rngs)

        self.layers = make_layers(rngs)  # every parameter: [L, ...]
        self.final_norm = RMSNorm(D, cfg.norm_eps, cfg.pdtype)  # release: language_model/rms_norm

    def __call__(self, tokens: jax.Array, memory: KVMemory | None = None, *,
                 lengths: jax.Array | None = None, capture: bool | tuple[str, ...] = False):
        """tokens int32 [B, T] -> logits [B, T, vocab] (compute dtype).

        With ``memory``, the tokens continue each row at ``memory.step`` and their keys and
        values are written there; ``step`` then advances by ``lengths`` [B] (default T: pass
        the true lengths of right-padded rows so the next tokens overwrite the padding).
        ``capture=True`` also returns a dict of per-layer values stacked [L, ...]: router
        probabilities, chosen experts and gates ("routing") and attention weights
        ("attention", computed with the naive T×S algorithm); ``capture=("routing",)`` asks
        for a subset. It costs nothing when off.
        """
        cfg = self.cfg
        capture = _capture_set(capture)
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be an integer array [batch, time], got "
                             f"{tokens.dtype}{list(tokens.shape)}")
        B, T = tokens.shape
        tok_valid = tokens > cfg.pad_token  # [B, T]

        with jax.named_scope("embed"):
            x = jnp.take(self.embed[...], tokens, axis=0).astype(cfg.dtype)
            x = x * jnp.asarray(cfg.embedding_multiplier_scale, cfg.dtype)  # [B, T, D]

        if memory is None:
            positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
            step, k_valid = None, tok_valid
        else:
            if memory.batch_size != B:
                raise ValueError(f"memory holds {memory.batch_size} rows, tokens {B}")
            if T > memory.max_len:
                raise ValueError(f"{T} tokens do not fit a KV memory of {memory.max_len}")
            step = memory.step[...]  # [B]
            positions = step[:, None] + jnp.arange(T, dtype=jnp.int32)  # [B, T]
            rel = jnp.arange(memory.max_len)[None, :] - step[:, None]  # [B, S]
            in_chunk = jnp.take_along_axis(tok_valid, jnp.clip(rel, 0, T - 1), axis=1)
            k_valid = (rel < 0) | ((rel < T) & in_chunk)  # filled before, or real token now

        graphdef, layer_state = nnx.split(self.layers)

        def body(carry, xs):
            h, k_all, v_all = carry
            state, i = xs
            layer = nnx.merge(graphdef, state)
            kv = None
            if k_all is not None:
                kv = (k_all[i], v_all[i])
            h, new_kv, caught = layer(h, positions, kv, k_valid=k_valid, step=step,
                                      capture=capture)
            if new_kv is not None:
                k_all = jax.lax.dynamic_update_index_in_dim(k_all, new_kv[0], i, 0)
                v_all = jax.lax.dynamic_update_index_in_dim(v_all, new_kv[1], i, 0)
            return (h, k_all, v_all), caught

        kv0 = (None, None) if memory is None else (memory.k[...], memory.v[...])
        with jax.named_scope("decoder"):
            if cfg.scan_layers:
                (x, k_all, v_all), captures = jax.lax.scan(
                    body, (x, *kv0), (layer_state, jnp.arange(cfg.num_layers)))
            else:  # unrolled: L copies of the layer in the program (slow to compile)
                carry, caught = (x, *kv0), []
                for i in range(cfg.num_layers):
                    state_i = jax.tree.map(lambda a, i=i: a[i], layer_state)
                    carry, c = body(carry, (state_i, i))
                    caught.append(c)
                (x, k_all, v_all) = carry
                captures = jax.tree.map(lambda *xs: jnp.stack(xs), *caught)
        if memory is not None:
            memory.k[...] = k_all
            memory.v[...] = v_all
            advance = T if lengths is None else jnp.asarray(lengths, jnp.int32)
            memory.step[...] = step + advance

        with jax.named_scope("unembed"):
            x = self.final_norm(x)
            logits = jnp.dot(x, self.embed[...].T.astype(x.dtype))  # tied weights
            logits = logits * jnp.asarray(cfg.output_multiplier_scale, x.dtype)
        if capture:
            return logits, captures
        return logits


CAPTURES = ("routing", "attention")


def _capture_set(capture) -> tuple[str, ...]:
    if capture is True:
        return CAPTURES
    if not capture:
        return ()
    capture = (capture,) if isinstance(capture, str) else tuple(capture)
    unknown = set(capture) - set(CAPTURES)
    if unknown:
        raise ValueError(f"unknown capture(s) {sorted(unknown)}; choose from {CAPTURES}")
    return capture


def param_count(model_or_state, include_scales: bool = False) -> int:
    """Number of parameters. Quantized weights count their int8 elements (the logical
    weights); their scales are extra storage, counted only if ``include_scales``.
    Grok-1: 315,684,820,992 — the count of the reference's own ``eval_shape``."""
    state = nnx.state(model_or_state, nnx.Param)
    total = 0
    for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, QArray)):
        if isinstance(leaf, QArray):
            total += _size(leaf.weight)
            if include_scales:
                total += _size(leaf.scales)
        else:
            total += _size(leaf)
    return total


def _size(a) -> int:
    n = 1
    for d in a.shape:
        n *= int(d)
    return n


def abstract_model(cfg: GrokConfig) -> Grok:
    """The model with shapes and dtypes only (no memory): ``nnx.eval_shape``."""
    return nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0)))
