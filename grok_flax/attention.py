"""Grouped-query attention with Grok-1's soft-capped logits: naive, chunked and kernels.

Grok-1 has 48 query heads sharing 8 key/value heads: R = 6 query heads read each KV head.
Queries are kept as ``[B, T, K, R, H]`` (K kv-heads × R query heads each) so K/V are never
repeated in memory; query head ``k·R + r`` reads KV head ``k``.
Logits are made fp32, multiplied by ``attn_output_multiplier``, squashed by
``30·tanh(x/30)`` (no logit can exceed ±30), masked with -1e30 and soft-maxed in fp32.
(``cap=None`` leaves the logits uncapped: an ablation, ``GrokConfig.attn_logit_cap``.)

Four algorithms compute the same function:

- ``attend_naive``: the reference's — all T×S logits at once (12 GiB fp32 per layer at 8192).
- ``attend_chunked``: blocks of queries × blocks of keys with an online softmax (running max
  and sum), the cap applied inside each block; memory O(block²), blocks above the causal
  diagonal or past the filled KV memory are skipped.
- ``attend_tokamax``: ``tokamax.dot_product_attention`` with ``logits_soft_cap`` — the
  maintained flash-attention kernels (Pallas / cuDNN on GPU, Pallas on TPU), XLA elsewhere.
  Optional (the ``kernels`` extra), imported on first use.
- ``attend_splash``: JAX's own Pallas TPU splash attention with the soft cap in the kernel
  and a runtime mask (empty blocks skipped), per shard under ``shard_map`` on a mesh; TPU
  only, or anywhere in Pallas's interpret mode (``GrokConfig.pallas_interpret``).

``Attention`` picks by ``GrokConfig.attention_impl`` ("auto": splash on TPU, chunked
elsewhere); one query per row (decode) and captured weights always take the naive pass.

Masks are built from positions: key s is visible to query t iff ``k_pos[s] <= q_pos[t]`` and
``k_valid[s]`` (a real token: not padding, and already written to the KV memory).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from grok_flax import axes, kv_memory
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


SPLASH_LANES = 128  # the splash kernel's sequence blocks are multiples of this (TPU lanes)


def _splash_block(n: int) -> int:
    """The kernel's block along a padded length ``n`` (a multiple of 128): the largest of 512,
    256, 128 that divides it. 512 is the block MaxText's splash configurations use; smaller
    blocks skip more of the masked area, larger ones take fewer grid steps (untuned: there is
    no TPU here to time it)."""
    return next(b for b in (512, 256, 128) if n % b == 0)


def _splash_local(q, k, v, q_pos, k_pos, k_valid, *, multiplier, cap, interpret):
    """The splash kernel on the arrays this device holds (``attend_splash``'s shapes)."""
    # optional-path import: the core imports only the core until this runs
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    B, T, K, R, H = q.shape
    S = k.shape[1]
    mask = visibility(q_pos, k_pos, k_valid)  # [B, T, S]
    Tp, Sp = -(-T // SPLASH_LANES) * SPLASH_LANES, -(-S // SPLASH_LANES) * SPLASH_LANES
    bq, bkv = _splash_block(Tp), _splash_block(Sp)
    blocks = splash.BlockSizes(
        block_q=bq,
        block_kv=bkv,
        block_kv_compute=bkv,
        # the backward kernels' blocks, so jax.grad works; a forward pass never builds them
        # (their mask tables are dead code XLA removes)
        block_q_dkv=bq,
        block_kv_dkv=bkv,
        block_kv_dkv_compute=bkv,
        block_q_dq=bq,
        block_kv_dq=bkv,
    )
    # the kernel computes cap·tanh(q·k / cap) in fp32 from q·k as given: the multiplier goes
    # into q (rounded once to the activation dtype), so the logits before the cap are
    # _scaled_logits' (up to where bf16 rounds: there q·k is rounded, here q·multiplier)
    qs = (q.astype(jnp.float32) * multiplier).astype(q.dtype)
    # head-major, as the kernel reads them; query head k·R + r reads KV head (k·R + r) // R = k
    qh = _pad_axis1(qs, Tp, 0).reshape(B, Tp, K * R, H).transpose(0, 2, 1, 3)  # [B, K·R, Tp, H]
    kh = _pad_axis1(k, Sp, 0).transpose(0, 2, 1, 3)  # [B, K, Sp, H]
    vh = _pad_axis1(v, Sp, 0).transpose(0, 2, 1, 3)  # [B, K, Sp, H]
    # padded queries and keys see / are seen by nothing
    maskp = jnp.pad(mask, ((0, 0), (0, Tp - T), (0, Sp - S)), constant_values=False)

    def one_row(qb, kb, vb, mb):  # one batch row: [K·R, Tp, H], [K, Sp, H] ×2, [Tp, Sp]
        # a runtime mask: its block table (which [bq, bkv] blocks are empty, full or mixed)
        # is computed on the device, and empty blocks are skipped
        kernel = splash.make_splash_mha_single_device(
            mb[None], block_sizes=blocks, attn_logits_soft_cap=cap, interpret=interpret
        )
        # two repairs to the tables make_splash_mha returns for a runtime mask (jax 0.12.1):
        # it turns every field into a jax array, the flag `is_dynamic_mask` too, which under
        # jit is a tracer the kernel then branches on — it is a Python constant; and it keeps
        # the mask's blocks bool, which the TPU kernel receives as int32 (4·T·S bytes per row)
        # — int8, as the library stores a static mask's blocks, takes a quarter of that
        for name in ("fwd_mask_info", "dq_mask_info", "dkv_mask_info"):
            info = getattr(kernel, name)
            setattr(
                kernel,
                name,
                info._replace(
                    is_dynamic_mask=True,
                    partial_mask_blocks=info.partial_mask_blocks.astype(jnp.int8),
                ),
            )
        return kernel(qb, kb, vb)

    out = jax.vmap(one_row)(qh, kh, vh, maskp)  # [B, K·R, Tp, H]
    out = out[:, :, :T].transpose(0, 2, 1, 3).reshape(B, T, K, R, H)
    # a query that sees no key at all: the kernel leaves it an average over whichever blocks
    # it ran (or 0/0 = NaN when it ran none); attend_naive soft-maxes S equal MASK_VALUEs
    # into the plain mean of v over all S slots — give exactly that
    blind = ~mask.any(axis=-1)  # [B, T]
    mean_v = v.astype(jnp.float32).mean(axis=1)  # [B, K, H]
    out = jnp.where(blind[:, :, None, None, None], mean_v[:, None, :, None, :], out)
    return out.astype(v.dtype)


def attend_splash(
    q,
    k,
    v,
    q_pos,
    k_pos,
    k_valid,
    *,
    multiplier: float,
    cap: float | None = 30.0,
    interpret: bool = False,
):
    """``attend_naive``'s function through JAX's Pallas TPU splash attention kernel
    (``jax.experimental.pallas.ops.tpu.splash_attention``): a flash-attention kernel with
    the soft cap ``cap·tanh(x/cap)`` inside it, GQA (query head ``k·R + r`` reads KV head
    ``k``; K/V are not repeated in memory, though the kernel fetches a KV block once per
    query head it serves) and a *runtime* mask — ``visibility(q_pos, k_pos, k_valid)`` per
    batch row, so a prefill chunk at per-row offsets into the KV memory and padding are
    masked exactly, and [bq × bkv] blocks no query sees (above the causal diagonal, past
    the filled memory) are skipped. ``interpret=True`` runs the kernel's body as JAX
    operations on any backend (how the tests check it on CPU; slow).

    q [B, T, K, R, H]; k, v [B, S, K, H]; q_pos [B, T]; k_pos, k_valid [B, S] ->
    [B, T, K, R, H] in v's dtype. T and S are padded to multiples of 128 (the kernel's
    blocks) with keys and queries that see nothing, and the padding sliced off. The runtime
    mask is materialised, T·S int8 per row (Grok-1's 512-token chunk into 8192 slots:
    4 MiB), as the library's dynamic-mask path requires.

    Numerics against ``attend_naive``: the kernel multiplies q·k in the activation dtype
    with an fp32 result, caps, soft-maxes and weights v all in fp32; the multiplier is
    applied to q (fp32, rounded once to q's dtype). In fp32 the two differ by rounding
    alone (q·multiplier against (q·k)·multiplier, the order of summation: ~1e-5 with
    logits near the cap and sharp weights, each as far from the exact result). In bf16 the
    reference rounds q·k and the weights to bf16; the kernel rounds q·multiplier instead
    and keeps the weights fp32: both are within bf16 rounding of the exact result. A query
    that sees no key gets ``attend_naive``'s answer, the mean of v over all S slots.

    **Sharding.** A Pallas TPU kernel is opaque to XLA's SPMD partitioner, and JAX does
    not lower one on operands split over devices. With a mesh current that has the
    ``data`` and ``model`` axes (``Grok`` under ``axes.run_on_mesh``), the kernel runs per
    shard under ``jax.shard_map``: rows split as ``batch``, KV heads (and their query
    heads) as ``kv_heads`` say in ``axes.RULES``, nothing communicated — attention of one
    KV head needs only that head. Without such a mesh (or inside a ``shard_map`` already)
    it is a plain call: on a TPU with sharded operands and no current mesh, JAX refuses to
    lower it ("Mosaic kernels cannot be automatically partitioned") — make the mesh
    current (``jax.set_mesh``; ``Grok`` does it for a model placed with ``scale.sharding``).
    """
    B, T, K, R, H = q.shape
    S = k.shape[1]
    if k.shape != (B, S, K, H) or v.shape != k.shape:
        raise ValueError(
            f"attend_splash: k {k.shape} and v {v.shape} must be [B, S, K, H] = "
            f"[{B}, S, {K}, {H}] for q {q.shape}"
        )
    local = partial(_splash_local, multiplier=multiplier, cap=cap, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if (
        mesh.empty
        or mesh.size == 1
        or not set(axes.MESH_AXES) <= set(mesh.axis_names)
        or set(axes.MESH_AXES) <= set(mesh.manual_axes)  # already per device (a shard_map)
    ):
        return local(q, k, v, q_pos, k_pos, k_valid)

    def spec(logical, x, what):
        return axes.spec_for(logical, x.shape, mesh, what=f"attend_splash {what}")

    q_spec = spec(("batch", None, "kv_heads", None, None), q, "q")
    kv_spec = spec(("batch", None, "kv_heads", None), k, "k/v")
    pos_spec = spec(("batch", None), q_pos, "positions")
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(q_spec, kv_spec, kv_spec, pos_spec, pos_spec, pos_spec),
        out_specs=q_spec,
        check_vma=False,  # the Pallas call states no varying-axes types
    )(q, k, v, q_pos, k_pos, k_valid)


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
        impl = cfg.for_platform().attention_impl  # "auto" -> this platform's choice
        with jax.named_scope("attention"):
            # one token per row (decode): a single pass over the memory, no chunk loop
            if return_weights or impl == "naive" or T == 1:
                out = attend_naive(*args, return_weights=return_weights, **kw)
                if return_weights:
                    out, captures["attention"] = out
            elif impl == "tokamax":
                out = attend_tokamax(*args, **kw)
            elif impl == "splash":
                out = attend_splash(*args, interpret=cfg.pallas_interpret, **kw)
            else:
                out = attend_chunked(*args, chunk=cfg.attention_chunk, **kw)
            if "attention_logit_max" in capture:
                captures["attention_logit_max"] = logit_max(
                    *args[:2], *args[3:], multiplier=cfg.attn_output_multiplier
                )
        with jax.named_scope("out_proj"):
            out = matmul(out.reshape(B, T, K * R * H), self.linear.get_value())
        return out, new_kv, captures
