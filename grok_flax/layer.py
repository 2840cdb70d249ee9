"""One decoder layer: attention and mixture-of-experts, each in a *sandwich* of RMSNorms.

    h = h + post_attn_norm( attention( pre_attn_norm(h) ) )
    h = h + post_moe_norm(  moe(       pre_moe_norm(h)  ) )

The norm after each block (besides the usual one before) is Grok-1's "sandwich" norm. In the
released checkpoint the four norms are ``rms_norm``, ``rms_norm_1``, ``rms_norm_2`` and
``rms_norm_3`` in this order. ``GrokConfig(post_norms=False)`` drops the two post-norms (the
usual pre-norm transformer: an ablation, not the release).
"""

from __future__ import annotations

import jax
from flax import nnx

from grok_flax.attention import Attention
from grok_flax.axes import ACTIVATION, constrain
from grok_flax.config import GrokConfig
from grok_flax.moe import MoE
from grok_flax.norm import RMSNorm
from grok_flax.router import Router


class DecoderLayer(nnx.Module):
    """One Grok-1 block: attention then mixture-of-experts, each between two RMSNorms."""

    def __init__(self, cfg: GrokConfig, *, rngs: nnx.Rngs):
        D = cfg.emb_size
        norm = dict(eps=cfg.norm_eps, param_dtype=cfg.pdtype)
        self.pre_attn_norm = RMSNorm(D, **norm)  # release: rms_norm
        self.attn = Attention(cfg, rngs=rngs)  # release: multi_head_attention
        self.post_attn_norm = RMSNorm(D, **norm) if cfg.post_norms else None  # rms_norm_1
        self.pre_moe_norm = RMSNorm(D, **norm)  # release: rms_norm_2
        self.router = Router(
            D,
            cfg.num_experts,
            cfg.num_selected_experts,
            rngs=rngs,
            param_dtype=cfg.pdtype,
            renormalize=cfg.renormalize_gates,
        )  # release: router
        self.moe = MoE(cfg, rngs=rngs)  # release: moe
        self.post_moe_norm = RMSNorm(D, **norm) if cfg.post_norms else None  # rms_norm_3

    def __call__(
        self, h, positions, kv=None, *, k_valid, step=None, layer=0, capture: tuple[str, ...] = ()
    ):
        """h [B, T, D] -> (h, updated kv stacks, captures dict: what ``capture`` names).

        ``kv``: every layer's KV memory (k, v) [L, B, S, K, H]; this layer is ``layer``.
        The residual stream h is replicated over the model axis where blocks meet
        (``axes.constrain``): each block's output projection ends in one all-reduce.
        """
        with jax.named_scope("attention_block"):
            x = constrain(self.pre_attn_norm(h), ACTIVATION)
            a, new_kv, attn_captures = self.attn(
                x,
                positions,
                kv,
                k_valid=k_valid,
                step=step,
                layer=layer,
                capture=capture,
            )
            a = constrain(a, ACTIVATION)  # the output projection's one all-reduce
            a = a if self.post_attn_norm is None else self.post_attn_norm(a)
            h = constrain(h + constrain(a, ACTIVATION), ACTIVATION)
        with jax.named_scope("moe_block"):
            x = constrain(self.pre_moe_norm(h), ACTIVATION)
            gates, experts, probs = self.router(x)
            y = constrain(self.moe(x, gates, experts), ACTIVATION)  # linear_1's all-reduce
            y = y if self.post_moe_norm is None else self.post_moe_norm(y)
            h = constrain(h + constrain(y, ACTIVATION), ACTIVATION)
        captures = dict(attn_captures)
        if "routing" in capture:
            captures.update(router_probs=probs, experts=experts, gates=gates)
        return h, new_kv, captures
