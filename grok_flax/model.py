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
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_flax.config import GrokConfig
from grok_flax.kv_memory import KVMemory
from grok_flax.layer import DecoderLayer
from grok_flax.norm import RMSNorm
from grok_flax.quant import QArray
from grok_flax.scale import sharding


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
        self.final_norm = RMSNorm(D, cfg.norm_eps, cfg.pdtype)  # release: language_model/rms_norm

    def __call__(self, tokens, memory: KVMemory | None = None, *, lengths=None,
                 logits_at=None, capture: bool | tuple[str, ...] = False,
                 check_inputs: bool = True):
        """tokens int [B, T] -> logits [B, T, vocab] (compute dtype).

        With ``memory``, the tokens continue each row at ``memory.step`` and their keys and
        values are written there (only those slots); ``step`` then advances by ``lengths``
        [B] (default T: pass the true lengths of right-padded rows so the next tokens
        overwrite the padding). ``logits_at`` [B]: un-embed only position ``logits_at[b]``
        of each row and return [B, vocab] (a prefill needs only its last token's logits).
        ``capture=True`` also returns a dict of per-layer values stacked [L, ...]: router
        probabilities, chosen experts and gates ("routing") and attention weights
        ("attention", computed with the naive T×S algorithm); ``capture=("routing",)`` asks
        for a subset. It costs nothing when off.

        Inputs are checked, never silently used: token ids outside ``[0, vocab)``, a KV
        memory that the new tokens would overflow, or more than ``sequence_len`` tokens raise
        ``ValueError`` naming them. When the ids or the memory's ``step`` are traced (under
        ``jit``) their check runs on the device and a violation fails the call with a
        ``JaxRuntimeError`` carrying the same message; ``check_inputs=False`` skips that
        device check (``Generator`` does: it validates on the host).
        """
        cfg = self.cfg
        capture = _capture_set(capture)
        tokens = _as_tokens(tokens)
        B, T = tokens.shape
        if T > cfg.sequence_len:
            raise ValueError(f"{T} tokens exceed the model's context sequence_len="
                             f"{cfg.sequence_len}")
        if memory is not None:
            if memory.batch_size != B:
                raise ValueError(f"memory holds {memory.batch_size} rows, tokens {B}")
            if T > memory.max_len:
                raise ValueError(f"{T} tokens do not fit a KV memory of {memory.max_len}")
        n_new = T if lengths is None else lengths
        _check_inputs(cfg, tokens, memory, n_new, check_inputs)

        mesh = getattr(self, "mesh", None) or sharding.mesh_of(self.embed[...])
        tracing = isinstance(self.embed[...], jax.core.Tracer)
        mem = None if memory is None else (memory.k[...], memory.v[...], memory.step[...])
        with sharding.forward_context(mesh, tracing):
            if mesh is None or not sharding._explicit_axes(mesh):
                logits, captures, mem = self._forward(tokens, mem, lengths, logits_at, capture)
            else:  # Explicit axes: run with them made Auto, outputs typed as stated here
                graph, state = nnx.split(self)

                def run(state, tokens, mem, lengths, logits_at):
                    return nnx.merge(graph, state)._forward(tokens, mem, lengths, logits_at,
                                                            capture)

                shape = (B, cfg.vocab_size) if logits_at is not None else (B, T,
                                                                           cfg.vocab_size)
                specs = (sharding.spec_for(_logits_axes(logits_at), shape, mesh), P(),
                         None if mem is None else tuple(sharding.spec_of(a) for a in mem))
                logits, captures, mem = sharding.run_auto(run, mesh, specs, state, tokens,
                                                          mem, lengths, logits_at)
        if memory is not None:
            memory.k[...], memory.v[...], memory.step[...] = mem
        if capture:
            return logits, captures
        return logits

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
            x = sharding.constrain(x, (None, "act_seq", "act_embed"))
            x = sharding.constrain(x, sharding.ACTIVATION)

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
            h, new_kv, caught = layer(h, positions, kv, k_valid=k_valid, step=step, layer=i,
                                      capture=capture)
            if new_kv is not None:
                k_all, v_all = new_kv  # only this layer's new slots were written
            return (h, k_all, v_all), caught

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
        if mem is not None:
            advance = T if lengths is None else jnp.asarray(lengths, jnp.int32)
            mem = (k_all, v_all, step + advance)

        with jax.named_scope("unembed"):
            if logits_at is not None:  # only the positions asked for: [B, D]
                at = jnp.asarray(logits_at, jnp.int32)[:, None, None]
                x = jnp.take_along_axis(x, at, axis=1)[:, 0]
            x = sharding.constrain(self.final_norm(x), sharding.ACTIVATION[:x.ndim - 1]
                                   + ("act_embed",))
            logits = jnp.dot(x, self.embed[...].T.astype(x.dtype))  # tied weights
            logits = logits * jnp.asarray(cfg.output_multiplier_scale, x.dtype)
            logits = sharding.constrain(logits, _logits_axes(logits_at))
        return logits, captures, mem


def _logits_axes(logits_at) -> tuple[str, ...]:
    """Logical axes of the logits: [B, T, V], or [B, V] when only ``logits_at`` is un-embedded."""
    return sharding.LOGITS if logits_at is None else ("batch", "act_vocab")


def _as_tokens(tokens) -> jax.Array:
    """Token ids as an integer array [B, T] (lists, numpy and JAX arrays accepted)."""
    if not isinstance(tokens, jax.Array):
        tokens = np.asarray(tokens)
        if tokens.dtype == object or tokens.size == 0 and tokens.dtype.kind == "f":
            tokens = tokens.astype(np.int32)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be an integer array [batch, time], got "
                         f"{tokens.dtype}{list(tokens.shape)}")
    return jnp.asarray(tokens)


def _concrete(x) -> np.ndarray | None:
    """x's values on this host, or None when traced / held by other processes."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    return np.asarray(x)


def _bad_ids_message(vocab: int, found: list[tuple[int, int, int]], count: int) -> str:
    """``found``: (id, row, position) of the first bad ids; ``count``: how many in all."""
    shown = ", ".join(f"{value} at [{b}, {t}]" for value, b, t in found)
    more = f" (and {count - len(found)} more)" if count > len(found) else ""
    return f"token ids outside [0, {vocab}): {shown}{more}"


def _overflow_message(row: int, step: int, end: int, max_len: int) -> str:
    return (f"KV memory overflow: row {row} is at step {step} and {end - step} new tokens "
            f"would end at {end} > max_len {max_len}; start a new KVMemory (nothing is "
            f"overwritten)")


def _input_problem(tokens, step, n_new, vocab: int, max_len) -> str | None:
    """What is wrong with these inputs (host arrays), or None."""
    tokens = np.asarray(tokens)
    bad = (tokens < 0) | (tokens >= vocab)
    if bad.any():
        found = [(int(tokens[b, t]), int(b), int(t)) for b, t in np.argwhere(bad)[:5]]
        return _bad_ids_message(vocab, found, int(bad.sum()))
    if step is not None:
        step = np.asarray(step)
        end = step + np.asarray(n_new)
        if (end > max_len).any():
            b = int(np.argmax(end))
            return _overflow_message(b, int(step[b]), int(end[b]), max_len)
    return None


def _raise_device_summary(tok_info, mem_info, vocab: int, max_len) -> None:
    """The device check's few scalars -> the same ValueError as the host check."""
    count, b, t, value = (int(v) for v in tok_info)
    if count:
        raise ValueError(_bad_ids_message(vocab, [(value, b, t)], count))
    row, step, end = (int(v) for v in mem_info)
    if max_len is not None and end > max_len:
        raise ValueError(_overflow_message(row, step, end, max_len))


def _check_inputs(cfg: GrokConfig, tokens, memory, n_new, device_check: bool) -> None:
    """ValueError for concrete bad inputs; a device-side check when they are traced."""
    step = None if memory is None else memory.step[...]
    max_len = None if memory is None else memory.max_len
    host = [_concrete(tokens), None if step is None else _concrete(step), _concrete(n_new)]
    if all(h is not None for h in host) or (host[0] is not None and step is None):
        problem = _input_problem(host[0], host[1], host[2], cfg.vocab_size, max_len)
        if problem:
            raise ValueError(problem)
        return
    if not device_check:
        return
    # reduce on the device to a few scalars (replicated: no gather of the inputs to one
    # device), and call back to the host only when something is wrong
    tokens = jnp.asarray(tokens)
    bad_tok = (tokens < 0) | (tokens >= cfg.vocab_size)
    first = jnp.argmax(bad_tok.reshape(-1))
    tok_info = (jnp.sum(bad_tok), first // tokens.shape[1], first % tokens.shape[1],
                tokens.reshape(-1)[first])
    bad = tok_info[0] > 0
    if step is None:
        mem_info = (jnp.zeros((), jnp.int32),) * 3
    else:
        end = step + jnp.asarray(n_new, jnp.int32)
        row = jnp.argmax(end)
        mem_info = (row, step[row], end[row])
        bad = bad | (end[row] > max_len)

    def report():
        jax.debug.callback(lambda t, m: _raise_device_summary(t, m, cfg.vocab_size, max_len),
                           tok_info, mem_info)

    jax.lax.cond(bad, report, lambda: None)


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
