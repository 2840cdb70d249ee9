"""Grouped-query attention with Grok-1's soft-capped logits, naive and chunked.

Grok-1 has 48 query heads sharing 8 key/value heads: R = 6 query heads read each KV head.
Queries are kept as ``[B, T, K, R, H]`` (K kv-heads × R query heads each) so K/V are never
repeated in memory; query head ``k·R + r`` reads KV head ``k``.
Logits are made fp32, multiplied by ``attn_output_multiplier``, squashed by
``30·tanh(x/30)`` (no logit can exceed ±30), masked with -1e30 and soft-maxed in fp32.
(``cap=None`` leaves the logits uncapped: an ablation, ``GrokConfig.attn_logit_cap``.)

Three algorithms compute the same function:

- ``attend_naive``: the reference's — all T×S logits at once (12 GiB fp32 per layer at 8192).
- ``attend_chunked``: blocks of queries × blocks of keys with an online softmax (running max
  and sum), the cap applied inside each block; memory O(block²), blocks above the causal
  diagonal or past the filled KV memory are skipped.
- ``attend_tokamax``: ``tokamax.dot_product_attention`` with ``logits_soft_cap`` — the
  maintained flash-attention kernels (Pallas / cuDNN on GPU, Pallas on TPU), XLA elsewhere.
  Optional (the ``kernels`` extra), imported on first use.

Masks are built from positions: key s is visible to query t iff ``k_pos[s] <= q_pos[t]`` and
``k_valid[s]`` (a real token: not padding, and already written to the KV memory).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grok_flax import kv_memory
from grok_flax.config import GrokConfig
from grok_flax.quant import linear_param, matmul
from grok_flax.rope import RotaryEmbedding

MASK_VALUE = -1e30  # the reference's fill for masked logits


def soft_cap(logits: jax.Array, cap: float | None = 30.0) -> jax.Array:
    """cap · tanh(x / cap): smooth, monotone, bounded by ±cap (``None``: the logits as they are)."""
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def visibility(q_pos: jax.Array, k_pos: jax.Array, k_valid: jax.Array) -> jax.Array:
    """[B, T, S] bool: causal (k_pos <= q_pos) and the key is a valid token."""
    return (k_pos[:, None, :] <= q_pos[:, :, None]) & k_valid[:, None, :]


def _scaled_logits(q, k, multiplier):
    # q [B, T, K, R, H], k [B, S, K, H] -> [B, K, R, T, S] fp32 (dot in the activation dtype,
    # as the reference, then fp32 for everything after), before the cap.
    return jnp.einsum("btkrh,bskh->bkrts", q, k).astype(jnp.float32) * multiplier


def _logits(q, k, multiplier, cap):
    return soft_cap(_scaled_logits(q, k, multiplier), cap)


def logit_max(q, k, q_pos, k_pos, k_valid, *, multiplier: float) -> jax.Array:
    """[B] fp32: the largest absolute logit any query head gives a key it can see, *before*
    the soft cap — how hard the cap is working (a diagnostic: one T×S pass, as
    ``attend_naive``)."""
    raw = _scaled_logits(q, k, multiplier)
    visible = visibility(q_pos, k_pos, k_valid)[:, None, None]  # [B, 1, 1, T, S]
    return jnp.where(visible, jnp.abs(raw), 0.0).max(axis=(1, 2, 3, 4))


def attend_naive(
    q,
    k,
    v,
    q_pos,
    k_pos,
    k_valid,
    *,
    multiplier: float,
    cap: float = 30.0,
    return_weights: bool = False,
):
    """Reference attention. q [B,T,K,R,H]; k, v [B,S,K,H]; q_pos [B,T]; k_pos, k_valid [B,S].

    Returns out [B, T, K, R, H] (and weights [B, K, R, T, S] fp32 if asked).
    """
    logits = _logits(q, k, multiplier, cap)
    mask = visibility(q_pos, k_pos, k_valid)[:, None, None]  # [B, 1, 1, T, S]
    weights = jax.nn.softmax(jnp.where(mask, logits, MASK_VALUE), axis=-1)
    out = jnp.einsum("bkrts,bskh->btkrh", weights.astype(v.dtype), v)
    return (out, weights) if return_weights else out


def _pad_axis1(x, size, value):
    pad = size - x.shape[1]
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


def attend_chunked(
    q, k, v, q_pos, k_pos, k_valid, *, multiplier: float, cap: float = 30.0, chunk: int = 512
):
    """Online-softmax attention over [chunk × chunk] blocks; same result as ``attend_naive``.

    Per query block, a scan over key blocks keeps the running max m, sum l and the weighted
    sum acc (fp32): ``acc ← acc·e^(m_old - m) + e^(s - m)·V``. Blocks that no query of the
    block can see (above the causal diagonal, or only invalid keys) are skipped.
    """
    B, T, K, R, H = q.shape
    S = k.shape[1]
    qc, kc = min(chunk, T), min(chunk, S)
    nq, nk = -(-T // qc), -(-S // kc)
    qp = _pad_axis1(q, nq * qc, 0).reshape(B, nq, qc, K, R, H).swapaxes(0, 1)
    qpos = _pad_axis1(q_pos, nq * qc, -1).reshape(B, nq, qc).swapaxes(0, 1)
    kp = _pad_axis1(k, nk * kc, 0).reshape(B, nk, kc, K, H).swapaxes(0, 1)
    vp = _pad_axis1(v, nk * kc, 0).reshape(B, nk, kc, K, H).swapaxes(0, 1)
    kpos = _pad_axis1(k_pos, nk * kc, 0).reshape(B, nk, kc).swapaxes(0, 1)
    kval = _pad_axis1(k_valid, nk * kc, False).reshape(B, nk, kc).swapaxes(0, 1)

    def one_query_block(args):
        qb, qpos_b = args  # [B, qc, K, R, H], [B, qc]

        def step(carry, kv_block):
            m, l, acc = carry
            kb, vb, kpos_b, kval_b = kv_block
            visible = visibility(qpos_b, kpos_b, kval_b)[:, None, None]  # [B,1,1,qc,kc]

            def compute(carry):
                m, l, acc = carry
                s = jnp.where(visible, _logits(qb, kb, multiplier, cap), MASK_VALUE)
                m_new = jnp.maximum(m, s.max(axis=-1))  # [B, K, R, qc]
                p = jnp.exp(s - m_new[..., None])
                corr = jnp.exp(m - m_new)
                l = l * corr + p.sum(axis=-1)
                pv = jnp.einsum("bkrts,bskh->bkrth", p, vb.astype(jnp.float32))
                return m_new, l, acc * corr[..., None] + pv

            return jax.lax.cond(jnp.any(visible), compute, lambda c: c, carry), None

        init = (
            jnp.full((B, K, R, qc), MASK_VALUE, jnp.float32),
            jnp.zeros((B, K, R, qc), jnp.float32),
            jnp.zeros((B, K, R, qc, H), jnp.float32),
        )
        (m, l, acc), _ = jax.lax.scan(step, init, (kp, vp, kpos, kval))
        out = acc / jnp.maximum(l, 1e-30)[..., None]  # [B, K, R, qc, H]
        return out.transpose(0, 3, 1, 2, 4).astype(v.dtype)  # [B, qc, K, R, H]

    out = jax.lax.map(one_query_block, (qp, qpos))  # [nq, B, qc, K, R, H]
    return out.swapaxes(0, 1).reshape(B, nq * qc, K, R, H)[:, :T]


def attend_tokamax(
    q, k, v, q_pos, k_pos, k_valid, *, multiplier: float, cap: float = 30.0, implementation=None
):
    """``attend_naive``'s function through tokamax's fused attention (GQA: query head
    ``k·R + r`` reads KV head ``k``). ``implementation``: tokamax's choice of kernel (None:
    the best available on this platform)."""
    import tokamax  # optional: pip install 'grok_flax[kernels]'

    B, T, K, R, H = q.shape
    mask = visibility(q_pos, k_pos, k_valid)[:, None]  # [B, 1, T, S]
    out = tokamax.dot_product_attention(
        q.reshape(B, T, K * R, H),
        k,
        v,
        mask=mask,
        scale=multiplier,
        logits_soft_cap=cap,
        implementation=implementation,
    )
    return out.reshape(B, T, K, R, H).astype(v.dtype)


class Attention(nnx.Module):
    """The ``multi_head_attention`` block: q/k/v projections, RoPE, KV memory, output proj."""

    def __init__(self, cfg: GrokConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, H = cfg.emb_size, cfg.key_size
        Nq, Nk = cfg.num_q_heads, cfg.num_kv_heads
        lin = dict(quantized=cfg.quantized, dtype=cfg.pdtype)
        self.query = linear_param(
            rngs.params(), (D, Nq * H), blocks=1, logical=("embed", "q_heads"), **lin
        )  # [D, Nq·H]
        self.key = linear_param(
            rngs.params(), (D, Nk * H), blocks=1, logical=("embed", "kv_heads"), **lin
        )  # [D, Nk·H]
        self.value = linear_param(
            rngs.params(), (D, Nk * H), blocks=1, logical=("embed", "kv_heads"), **lin
        )  # [D, Nk·H]
        self.linear = linear_param(
            rngs.params(),
            (Nq * H, D),
            blocks=cfg.attn_out_scale_blocks,
            logical=("q_heads", "embed"),
            **lin,
        )  # [Nq·H, D]
        self.rope = RotaryEmbedding(H, cfg.rope_base)

    def __call__(
        self,
        x,
        positions,
        kv=None,
        *,
        k_valid,
        step=None,
        layer=0,
        capture: tuple[str, ...] = (),
    ):
        """x [B, T, D]; positions [B, T].

        Without memory (``kv=None``) keys are this call's tokens: ``k_valid`` [B, T].
        With memory, ``kv = (k_stack, v_stack)`` [L, B, S, K, H] (every layer's, as the model
        carries them): this call's keys/values are written into layer ``layer`` at per-row
        offsets ``step`` [B] — only those slots — and attention runs over that layer's S
        slots; ``k_valid`` [B, S] then says which slots hold real tokens. Returns
        (out [B, T, D], the updated stacks or None, captures): ``capture`` may name
        "attention" (the weights [B, K, R, T, S], by the naive algorithm) and
        "attention_logit_max" (``logit_max``, [B]).
        """
        cfg = self.cfg
        B, T, _ = x.shape
        K, R, H = cfg.num_kv_heads, cfg.q_per_kv, cfg.key_size
        with jax.named_scope("qkv"):
            q = matmul(x, self.query.get_value()).reshape(B, T, K * R, H)
            k = matmul(x, self.key.get_value()).reshape(B, T, K, H)
            v = matmul(x, self.value.get_value()).reshape(B, T, K, H)
        if cfg.use_rope:  # False only in the no-RoPE ablation
            q, k = self.rope(q, positions), self.rope(k, positions)
        q = q.reshape(B, T, K, R, H)  # [B, T, K, R, H]
        new_kv = None
        if kv is not None:
            with jax.named_scope("kv_memory_write"):
                k_stack = kv_memory.write(kv[0], layer, k, step)  # only the T new slots
                v_stack = kv_memory.write(kv[1], layer, v, step)
                new_kv = (k_stack, v_stack)
                k, v = k_stack[layer], v_stack[layer]  # [B, S, K, H]: read this layer
                k_pos = jnp.broadcast_to(jnp.arange(k.shape[1]), (B, k.shape[1]))
        else:  # keys are this call's tokens, at the queries' positions
            k_pos = positions
        captures = {}
        return_weights = "attention" in capture
        args = (q, k.astype(x.dtype), v.astype(x.dtype), positions, k_pos, k_valid)
        kw = dict(multiplier=cfg.attn_output_multiplier, cap=cfg.attn_logit_cap)
        with jax.named_scope("attention"):
            # one token per row (decode): a single pass over the memory, no chunk loop
            if return_weights or cfg.attention_impl == "naive" or T == 1:
                out = attend_naive(*args, return_weights=return_weights, **kw)
                if return_weights:
                    out, captures["attention"] = out
            elif cfg.attention_impl == "tokamax":
                out = attend_tokamax(*args, **kw)
            else:
                out = attend_chunked(*args, chunk=cfg.attention_chunk, **kw)
            if "attention_logit_max" in capture:
                captures["attention_logit_max"] = logit_max(
                    *args[:2], *args[3:], multiplier=cfg.attn_output_multiplier
                )
        with jax.named_scope("out_proj"):
            out = matmul(out.reshape(B, T, K * R * H), self.linear.get_value())
        return out, new_kv, captures
