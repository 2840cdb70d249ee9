"""The Grok-1 language model: embed, 64 decoder layers, final norm, tied un-embedding.

    x      = embed[tokens] (fp32 -> compute dtype) × embedding_multiplier_scale
    x      = decoder_layer_L(... decoder_layer_0(x))      # one compiled layer, scanned
    logits = rms_norm(x) @ embedᵀ × output_multiplier_scale

The layers' parameters are stacked along a leading ``"layers"`` axis (built with
``nnx.vmap``) and the forward pass is a ``jax.lax.scan`` over them, so 64 layers compile as
fast as one. Keys whose token id is not greater than ``pad_token`` are masked, as in the
reference. The inputs are checked in ``inputs.validate``; ``axes.run_on_mesh`` runs the
forward pass on the mesh the parameters live on.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_flax import axes, inputs
from grok_flax.config import GrokConfig
from grok_flax.kv_memory import KVMemory
from grok_flax.layer import DecoderLayer
from grok_flax.norm import RMSNorm
from grok_flax.quant import QArray


class Grok(nnx.Module):
    """Grok-1: token embedding, ``num_layers`` decoder layers (stacked, scanned), final
    RMSNorm and the tied un-embedding. ``model(tokens)`` -> logits; with a ``KVMemory`` it
    continues each row from the memory (prefill / decode)."""

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
        for _, var in nnx.iter_graph(self.layers):  # name the stacked axis
            if isinstance(var, nnx.Variable):
                var.set_metadata(logical=("layers", *var.get_metadata()["logical"]))
        self.final_norm = RMSNorm(D, cfg.norm_eps, cfg.pdtype)  # release: language_model/rms_norm
        # the mesh the parameters were placed on (scale.sharding.shard_module and the loader
        # set it), so a traced forward pass knows it on an Auto mesh too; None: one device
        self.mesh = None

    def __call__(
        self,
        tokens,
        memory: KVMemory | None = None,
        *,
        lengths=None,
        logits_at=None,
        capture: bool | tuple[str, ...] = False,
        check_inputs: bool = True,
    ):
        """tokens int [B, T] -> logits [B, T, vocab] (compute dtype).

        With ``memory``, the tokens continue each row at ``memory.step`` and their keys and
        values are written there (only those slots); ``step`` then advances by ``lengths``
        [B] (default T: pass the true lengths of right-padded rows so the next tokens
        overwrite the padding). ``logits_at`` [B]: un-embed only position ``logits_at[b]``
        of each row and return [B, vocab] (a prefill needs only its last token's logits).
        ``capture=True`` also returns a dict of per-layer values stacked [L, ...]: router
        probabilities, chosen experts and gates ("routing") and attention weights
        ("attention", computed with the naive T×S algorithm), and the largest logit before
        the soft cap per row ("attention_logit_max", [L, B]); ``capture=("routing",)`` asks
        for a subset. It costs nothing when off.

        Inputs are checked, never silently used: token ids outside ``[0, vocab)``, a KV
        memory that the new tokens would overflow, or more than ``sequence_len`` tokens raise
        ``ValueError`` naming them. When the ids or the memory's ``step`` are traced (under
        ``jit``) their check runs on the device and a violation fails the call with a
        ``JaxRuntimeError`` carrying the same message; ``check_inputs=False`` skips that
        device check (``Generator`` does: it validates on the host).
        """
        tokens, capture = inputs.validate(
            self.cfg, tokens, memory, lengths, capture, on_device=check_inputs
        )
        mem = None if memory is None else (memory.k[...], memory.v[...], memory.step[...])
        mesh = self.mesh or axes.mesh_of(self.embed[...])
        out_specs = partial(self._out_specs, tokens.shape, logits_at, mem)
        forward = partial(Grok._forward, capture=capture)
        logits, captures, mem = axes.run_on_mesh(
            mesh, forward, out_specs, self, tokens, mem, lengths, logits_at
        )
        if memory is not None:
            memory.k[...], memory.v[...], memory.step[...] = mem
        return (logits, captures) if capture else logits

    def _forward(self, tokens, mem, lengths, logits_at, capture):
        """The forward pass proper: (logits, captures, (k, v, step) or None)."""
        cfg = self.cfg
        B, T = tokens.shape
        tok_valid = tokens > cfg.pad_token  # [B, T]

        with jax.named_scope("embed"):
            x = jnp.take(self.embed[...], tokens, axis=0).astype(cfg.dtype)
            x = x * jnp.asarray(cfg.embedding_multiplier_scale, cfg.dtype)  # [B, T, D]
            # the table's columns are split over the mesh: gather them (one all-gather of
            # [B, T, D]), then keep this host's rows
            x = axes.constrain(x, (None, "act_seq", "act_embed"))
            x = axes.constrain(x, axes.ACTIVATION)

        if mem is None:
            positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
            step, k_valid, kv0 = None, tok_valid, (None, None)
        else:
            k_all, v_all, step = mem  # [L, B, S, K, H], [B]
            S = k_all.shape[2]
            positions = step[:, None] + jnp.arange(T, dtype=jnp.int32)  # [B, T]
            rel = jnp.arange(S)[None, :] - step[:, None]  # [B, S]
            in_chunk = jnp.take_along_axis(tok_valid, jnp.clip(rel, 0, T - 1), axis=1)
            k_valid = (rel < 0) | ((rel < T) & in_chunk)  # filled before, or real token now
            kv0 = (k_all, v_all)

        graphdef, layer_state = nnx.split(self.layers)

        def body(carry, xs):
            h, k_all, v_all = carry
            state, i = xs
            layer = nnx.merge(graphdef, state)
            kv = None if k_all is None else (k_all, v_all)
            h, new_kv, caught = layer(
                h, positions, kv, k_valid=k_valid, step=step, layer=i, capture=capture
            )
            if new_kv is not None:
                k_all, v_all = new_kv  # only this layer's new slots were written
            return (h, k_all, v_all), caught

        with jax.named_scope("decoder"):
            if cfg.scan_layers:
                (x, k_all, v_all), captures = jax.lax.scan(
                    body, (x, *kv0), (layer_state, jnp.arange(cfg.num_layers))
                )
            else:  # unrolled: L copies of the layer in the program (slow to compile)
                carry, caught = (x, *kv0), []
                for i in range(cfg.num_layers):
                    state_i = jax.tree.map(lambda a, i=i: a[i], layer_state)
                    carry, c = body(carry, (state_i, i))
                    caught.append(c)
                (x, k_all, v_all) = carry
                captures = jax.tree.map(lambda *xs: jnp.stack(xs), *caught)
        if mem is not None:
            advance = T if lengths is None else jnp.asarray(lengths, jnp.int32)
            mem = (k_all, v_all, step + advance)

        with jax.named_scope("unembed"):
            if logits_at is not None:  # only the positions asked for: [B, D]
                at = jnp.asarray(logits_at, jnp.int32)[:, None, None]
                x = jnp.take_along_axis(x, at, axis=1)[:, 0]
            x = axes.constrain(self.final_norm(x), axes.ACTIVATION[: x.ndim - 1] + ("act_embed",))
            logits = jnp.dot(x, self.embed[...].T.astype(x.dtype))  # tied weights
            logits = logits * jnp.asarray(cfg.output_multiplier_scale, x.dtype)
            logits = axes.constrain(logits, _logits_axes(logits_at))
        return logits, captures, mem

    def _out_specs(self, token_shape, logits_at, mem, mesh):
        """The outputs' shardings, stated on a mesh with Explicit axes: logits as the rules
        say, captures replicated, the KV memory as it came in."""
        B, T = token_shape
        shape = (B, self.cfg.vocab_size) if logits_at is not None else (B, T, self.cfg.vocab_size)
        return (
            axes.spec_for(_logits_axes(logits_at), shape, mesh, what="logits"),
            P(),
            None if mem is None else tuple(axes.spec_of(a) for a in mem),
        )


def _logits_axes(logits_at) -> tuple[str, ...]:
    """Logical axes of the logits: [B, T, V], or [B, V] when only ``logits_at`` is un-embedded."""
    return axes.LOGITS if logits_at is None else ("batch", "act_vocab")


def param_count(model_or_state, include_scales: bool = False) -> int:
    """Number of parameters. Quantized weights count their int8 elements (the logical
    weights); their scales are extra storage, counted only if ``include_scales``.
    Grok-1: 315,684,820,992 — the count of the reference's own ``eval_shape``."""
    state = nnx.state(model_or_state, nnx.Param)
    total = 0
    for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, QArray)):
        if isinstance(leaf, QArray):
            total += math.prod(leaf.weight.shape)
            if include_scales:
                total += math.prod(leaf.scales.shape)
        else:
            total += math.prod(leaf.shape)
    return total


def abstract_model(cfg: GrokConfig) -> Grok:
    """The model with shapes and dtypes only (no memory): ``nnx.eval_shape``."""
    return nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0)))
