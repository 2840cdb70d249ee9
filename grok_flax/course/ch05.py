"""Checkers for the "Try this" exercises of notebook 05:
`notebooks/05_quantized_weights.ipynb`."""

from __future__ import annotations

import numpy as np

from grok_flax.course import exercise

# --------------------------------------------------------------------------------------------
# 1. dequantize: int8 [..., in, out] and scales [..., G, out] -> float32 [..., in, out]
# --------------------------------------------------------------------------------------------
_DEQ_CASES = [((64, 24), 1), ((64, 24), 8), ((3, 32, 10), 4)]


def _quantized_case(shape, blocks, seed):
    from grok_flax.quant import quantize

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) / np.sqrt(shape[-2])).astype(np.float32)
    w[..., : shape[-2] // 4, :] *= 6.0  # the first block(s) much larger: a wrong layout shows
    q = quantize(w, blocks)
    return np.asarray(q.weight), np.asarray(q.scales), q


def _deq_tiled(weight, scales):
    G, rows = scales.shape[-2], weight.shape[-2]
    reps = [1] * (scales.ndim - 2) + [rows // G, 1]
    return weight.astype(np.float32) * np.tile(scales.astype(np.float32), reps)


def _deq_first_block(weight, scales):
    return weight.astype(np.float32) * scales[..., :1, :].astype(np.float32)


def _deq_codes_only(weight, scales):
    return weight.astype(np.float32)


@exercise(
    "05",
    task="Write my_dequantize(weight, scales): int8 [..., in, out] and bf16 scales "
    "[..., G, out] -> the float32 weight [..., in, out], for any G dividing in.",
    wrong=[lambda: _deq_tiled, lambda: _deq_first_block, lambda: _deq_codes_only],
    praise="Each scale row stretched over its block's in/G consecutive rows — the same numbers "
    "as QArray.dequantize, and what every matmul of the release starts from.",
)
def dequantize(answer) -> str | None:
    import jax.numpy as jnp

    for i, (shape, G) in enumerate(_DEQ_CASES):
        weight, scales, q = _quantized_case(shape, G, seed=50 + i)
        want = np.asarray(q.dequantize(jnp.float32))
        got = np.asarray(answer(weight, scales), dtype=np.float32)
        if got.shape != want.shape:
            return (
                f"for weight {list(weight.shape)} and scales {list(scales.shape)} you returned "
                f"shape {list(got.shape)}; the dequantized weight has the weight's shape "
                f"{list(want.shape)}."
            )
        if np.allclose(got, want, rtol=1e-6, atol=0):
            continue
        if G > 1 and np.allclose(got, _deq_tiled(weight, scales)):
            return (
                f"with G = {G} you tiled the scale rows (0, 1, …, G−1, 0, 1, …) down the input "
                "axis: block g is in/G *consecutive* rows, so each scale row must be repeated "
                "in place (np.repeat along axis −2), not tiled."
            )
        if G > 1 and np.allclose(got, _deq_first_block(weight, scales)):
            return (
                f"with G = {G} every row got block 0's scale: row i belongs to block "
                "i // (in/G) and takes that block's scale row."
            )
        if np.allclose(got, _deq_codes_only(weight, scales)):
            return "you returned the int8 codes as floats: multiply them by their scales."
        return (
            f"for weight {list(weight.shape)} with G = {G} your values differ from "
            f"weight × scales (largest gap {np.max(np.abs(got - want)):.3g}); row i of a weight "
            "takes scale row i // (in/G)."
        )
    return None


# --------------------------------------------------------------------------------------------
# 2. bytes of Grok-1's scales with G = 32 on every int8 weight
# --------------------------------------------------------------------------------------------
def _scale_columns_per_layer(cfg, experts=None) -> int:
    """The output columns of one decoder layer's int8 weights: each gets G scales."""
    D, H, Nq, Nk = cfg.emb_size, cfg.key_size, cfg.num_q_heads, cfg.num_kv_heads
    E, F = cfg.num_experts if experts is None else experts, cfg.ffn_size
    return Nq * H + 2 * Nk * H + D + E * (2 * F + D)


def _scales_bytes(G, bytes_per_scale=2, layers=None, cfg=None, experts=None) -> int:
    from grok_flax.config import GrokConfig

    cfg = GrokConfig.grok_1() if cfg is None else cfg
    L = cfg.num_layers if layers is None else layers
    return L * _scale_columns_per_layer(cfg, experts) * G * bytes_per_scale


def _released_scales_bytes() -> int:
    from grok_flax.config import GrokConfig

    cfg = GrokConfig.grok_1()
    D, H, Nq, Nk = cfg.emb_size, cfg.key_size, cfg.num_q_heads, cfg.num_kv_heads
    E, F = cfg.num_experts, cfg.ffn_size
    per_layer = (
        Nq * H
        + 2 * Nk * H
        + cfg.attn_out_scale_blocks * D
        + E * (2 * F + cfg.moe_out_scale_blocks * D)
    )
    return 2 * cfg.num_layers * per_layer


@exercise(
    "05",
    task="How many bytes would Grok-1's bf16 scales take if every int8 weight (all 64 layers) "
    "had G = 32 scale blocks?",
    wrong=[
        lambda: _released_scales_bytes(),
        lambda: _scales_bytes(32, bytes_per_scale=1),
        lambda: _scales_bytes(32, layers=1),
        lambda: _scales_bytes(32, bytes_per_scale=4),
        lambda: _scales_bytes(32) / 1e9,
        lambda: _scales_bytes(32, experts=1),
    ],
    praise="About 2.4 GB: 19× the released scales, yet under 1% of the 315 GB of int8 — "
    "finer blocks are cheap in bytes; what they cost is the simple scales-after-the-dot matmul.",
)
def scales_bytes_g32(answer) -> str | None:
    want = _scales_bytes(32)
    try:
        got = float(answer)
    except (TypeError, ValueError):
        return f"give one number of bytes, got {type(answer).__name__}"

    def near(x):
        return abs(got - x) <= 1e-3 * abs(x)

    if near(want):
        return None
    if near(want / 1e9) or near(want / 2**30):
        return "that looks like GB or GiB: give the number of bytes."
    if near(_released_scales_bytes()):
        return (
            "that is what the released scales take (G = 1, or 8 on two weights); with G = 32 "
            "every output column of every int8 weight has 32 scales."
        )
    if near(_scales_bytes(32, bytes_per_scale=1)):
        return "a bf16 scale takes 2 bytes, not 1 (the int8 values take 1)."
    if near(_scales_bytes(32, bytes_per_scale=4)):
        return "the scales are bfloat16 (2 bytes), not float32."
    if near(_scales_bytes(32, layers=1)):
        return "that is one decoder layer: Grok-1 has 64."
    if near(_scales_bytes(32, experts=1)):
        return (
            "did you count the experts' weights once? Each of the 8 experts has its own "
            "linear, linear_v and linear_1, each with its own scales."
        )
    return (
        "count, per layer, the output columns of the 7 int8 weights (attention query, key, "
        "value, linear; each expert's linear, linear_v, linear_1), then × 32 blocks × 2 bytes "
        "× 64 layers."
    )


# --------------------------------------------------------------------------------------------
# 3. quantize per shard: one block per device's slice == G = shards on the whole weight
# --------------------------------------------------------------------------------------------
_SHARD_CASES = [((64, 24), 8), ((96, 16), 4), ((40, 12), 1)]


def _split_parts(result):
    from grok_flax.quant import QArray

    if isinstance(result, QArray):
        return np.asarray(result.weight), np.asarray(result.scales)
    weight, scales = result
    return np.asarray(weight), np.asarray(scales)


def _shard_columns(w, shards):
    from grok_flax.quant import quantize

    parts = [quantize(p, 1) for p in np.split(np.asarray(w), shards, axis=1)]
    return (
        np.concatenate([np.asarray(p.weight) for p in parts], axis=1),
        np.concatenate([np.asarray(p.scales) for p in parts], axis=1),
    )


def _shard_global_scale(w, shards):
    from grok_flax.quant import quantize

    q = quantize(w, 1)
    return np.asarray(q.weight), np.repeat(np.asarray(q.scales), shards, axis=0)


@exercise(
    "05",
    task="Write quantize_per_shard(w, shards): cut w [in, out] into `shards` equal slices of "
    "input rows (one per device), quantize each slice on its own with one scale block, and "
    "return the int8 weight [in, out] and the scales [shards, out] put back together.",
    wrong=[lambda: _shard_columns, lambda: _shard_global_scale],
    praise="Bit for bit grok_flax.quantize(w, shards): G blocks along the input axis are "
    "exactly what G devices, each quantizing its own slice of rows, would produce.",
)
def quantize_per_shard(answer) -> str | None:
    from grok_flax.quant import quantize

    rng = np.random.default_rng(5)
    for shape, S in _SHARD_CASES:
        w = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
        w[: shape[0] // S] *= 4.0  # device 0's rows larger: one global scale shows
        want = quantize(w, S)
        weight, scales = _split_parts(answer(w, S))
        want_w, want_s = np.asarray(want.weight), np.asarray(want.scales)
        if scales.shape != want_s.shape:
            hint = (
                " — that is slices of output columns; a device of the release's model axis "
                "holds a slice of linear_1's *input* rows"
                if scales.shape == (1, shape[1])
                else ""
            )
            return (
                f"for w {list(shape)} on {S} shards your scales have shape {list(scales.shape)}, "
                f"expected [{S}, {shape[1]}] (one row per shard){hint}."
            )
        if weight.shape != want_w.shape:
            return f"your int8 weight has shape {list(weight.shape)}, expected {list(shape)}."
        if S > 1 and np.all(scales == scales[:1]):
            return (
                "every shard got the same scale row — the whole weight's max|w|. Quantize each "
                "slice on its own: its scales come from its own rows."
            )
        if not np.array_equal(weight.astype(np.int8), want_w):
            return (
                f"for w {list(shape)} on {S} shards your int8 values differ from quantizing "
                "each row slice on its own (gf.quantize(slice, 1)) in "
                f"{int(np.sum(weight.astype(np.int8) != want_w))} places."
            )
        s32 = np.asarray(scales, np.float32)
        if not np.array_equal(s32, np.asarray(want_s, np.float32)):
            return (
                "your int8 values are right but the scales differ: keep each slice's bf16 "
                "scales exactly as gf.quantize returns them, stacked in device order."
            )
    return None
