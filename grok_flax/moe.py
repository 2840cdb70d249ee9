"""Experts and the mixture-of-experts layer.

Each expert is a GeGLU feed-forward block with the reference's names::

    expert(x) = linear_1( gelu_tanh(x @ linear) * (x @ linear_v) )

and the MoE output of a token is ``Σ_k gate_k · expert_{e_k}(x)`` over its top-k experts.
The weights of all experts are stacked: ``linear``/``linear_v`` [E, D, F], ``linear_1``
[E, F, D] (int8 + scales as released, or floats).

Dispatch algorithms, all the same function:

- ``"dense"``: the reference's. Every routed copy of every token goes through *every* expert,
  and a one-hot of the chosen expert selects one result: E× the needed FLOPs. Kept as the
  teaching oracle.
- ``"tiled"``: sort the (token, expert) pairs by expert, pad each expert's group to whole
  tiles of ``moe_tile`` rows (``auto_tile`` picks it per platform and token count), run one
  [tile × D] @ [D × F] matmul per tile with that tile's expert weights: only routed pairs
  are computed (plus < one tile of padding per expert). Static shapes, so it compiles once
  per token count.
- ``"gather"``: for a handful of tokens (decoding), gather the chosen experts' weights and
  apply them row by row: only the k selected experts' weights are read.
- ``"ragged"``: sort the pairs by expert and hand each weight to one grouped matmul,
  ``jax.lax.ragged_dot`` (rows of group e times expert e's weight), int8 scales applied to
  the output rows. Only a win where XLA really emits a grouped GEMM; where it lowers each
  ragged_dot to an ordinary all-experts matmul it does the reference's arithmetic, so it is
  not a default (measured in ``docs/benchmarks.md`` and ``docs/benchmarks_gpu.md``).
- ``"tokamax"``: the same sort, then ``tokamax.ragged_dot`` — the maintained grouped-matmul
  kernels (Pallas on GPU and TPU) — with the int8 weights passed as a ``qwix.QArray`` (int8
  values, scales ``[E, G, out]`` tiled over the contracted axis: our layout as it is), so
  the kernel reads int8 and no dequantized copy is made. Optional (the ``kernels`` extra),
  imported on first use; elsewhere tokamax falls back to XLA.
- ``"sparse"`` (default): ``gather`` when there are at most as many (token, expert) pairs as
  experts (decoding: it reads no more weights than the experts hold, needs no sort, and on a
  mesh ends in one all-reduce, where ``tiled`` would reduce once per tile), else ``tiled``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grok_flax.config import GrokConfig
from grok_flax.quant import QArray, as_float, linear_param, matmul


def gelu_tanh(x):
    """The tanh approximation of GELU (``jax.nn.gelu``'s default, used by the reference)."""
    return jax.nn.gelu(x, approximate=True)


def _index(w, i):
    """Expert i's weight (float array or QArray), i possibly traced."""
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), w)


def _take(w, idx):
    """The weights of experts idx [A] (A static and small) stacked: [A, ...].

    One dynamic slice per chosen expert, not a gather: XLA:TPU lowers ``jnp.take`` along
    the expert axis as a loop over a copy of *every* expert's weight (all E, per device),
    which made the Grok-1 decode step read ~8× the expert bytes a token needs; a dynamic
    slice reads only the expert it names (``docs/tpu_projection.md``). Same values."""
    return jax.tree.map(
        lambda a: jnp.stack(
            [
                jax.lax.dynamic_index_in_dim(a, idx[j], 0, keepdims=False)
                for j in range(idx.shape[0])
            ]
        ),
        w,
    )


class MoE(nnx.Module):
    """The mixture of experts: ``num_experts`` GeGLU experts (weights stacked [E, ...]); each
    token's output is the gate-weighted sum of its top-k experts' outputs. The router that
    picks them is a separate module (``DecoderLayer.router``); ``impl`` chooses the dispatch."""

    def __init__(self, cfg: GrokConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        E, D, F = cfg.num_experts, cfg.emb_size, cfg.ffn_size
        lin = dict(quantized=cfg.quantized, dtype=cfg.pdtype)
        self.linear = linear_param(
            rngs.params(), (E, D, F), blocks=1, logical=("experts", "embed", "ffn"), **lin
        )  # [E, D, F]
        self.linear_v = linear_param(
            rngs.params(), (E, D, F), blocks=1, logical=("experts", "embed", "ffn"), **lin
        )  # [E, D, F]
        self.linear_1 = linear_param(
            rngs.params(),
            (E, F, D),
            blocks=cfg.moe_out_scale_blocks,
            logical=("experts", "ffn", "embed"),
            **lin,
        )  # [E, F, D]

    def weights(self):
        """The experts' three stacked weights: ``linear``, ``linear_v`` [E, D, F] and
        ``linear_1`` [E, F, D] (arrays or ``QArray``)."""
        return self.linear.get_value(), self.linear_v.get_value(), self.linear_1.get_value()

    def __call__(
        self,
        x: jax.Array,
        gates: jax.Array,
        experts: jax.Array,
        impl: str | None = None,
        tile: int | None = None,
    ) -> jax.Array:
        """x [B, T, D]; gates/experts [B, T, k] from the router -> [B, T, D].

        ``impl`` / ``tile`` override the config's ``moe_impl`` / ``moe_tile`` for this call."""
        impl = impl or self.cfg.moe_impl
        B, T, D = x.shape
        k = experts.shape[-1]
        xf, ef = x.reshape(B * T, D), experts.reshape(B * T, k)
        if impl == "sparse":
            impl = "gather" if B * T * k <= self.cfg.num_experts else "tiled"
        with jax.named_scope(f"experts_{impl}"):
            if impl == "dense":
                out = dense_dispatch(xf, ef, *self.weights(), self.cfg.num_experts)
            elif impl == "gather":
                out = gather_dispatch(xf, ef, *self.weights())
            elif impl == "ragged":
                out = ragged_dispatch(xf, ef, *self.weights(), self.cfg.num_experts)
            elif impl == "tokamax":
                out = tokamax_dispatch(xf, ef, *self.weights(), self.cfg.num_experts)
            elif impl == "tiled":
                tile = tile or self.cfg.moe_tile
                if tile == "auto":
                    tile = auto_tile(B * T * k, self.cfg.num_experts)
                out = tiled_dispatch(xf, ef, *self.weights(), self.cfg.num_experts, tile)
            else:
                raise ValueError(f"unknown MoE dispatch {impl!r}")
        out = out.reshape(B, T, k, D)  # one output per (token, chosen expert), f32
        # as the release: the gate is rounded to the activation dtype, then the weighting
        # and the sum over the k experts are f32; one cast at the end
        gates = gates.astype(x.dtype).astype(out.dtype)
        combined = jnp.sum(gates[..., None] * out, axis=2)
        return combined.astype(x.dtype)


def auto_tile(pairs: int, num_experts: int, platform: str | None = None) -> int:
    """Rows per tile of ``tiled_dispatch`` when ``moe_tile="auto"``.

    Each tile is one [tile × D] @ [D × F] matmul with its expert's weights, so bigger tiles
    use the matrix units (or cores) better and convert each int8 weight fewer times, while an
    expert's last tile is only partly used. CPU: the power of two at or above half the mean
    rows per expert, within 64…256. GPU/TPU, where small tiles leave the matrix units idle:
    the mean rows per expert, rounded up to a power of two, within 256…1024 on GPU and
    128…1024 on TPU. The CPU and GPU rules come from sweeps of the tile size
    (``benchmarks/bench_moe.py`` on CPU, ``benchmarks/bench_accelerator.py`` on an H200; their
    figures are in ``docs/benchmarks.md`` and ``docs/benchmarks_gpu.md``). TPU's floor of 128
    (one MXU pass of rows) comes from XLA:TPU's cost analysis, never a TPU run: a 512-token
    prefill chunk gives each of Grok-1's 8 experts 128 rows, which 256-row tiles padded to
    twice the routed FLOPs (``docs/tpu_projection.md``).
    """
    mean = max(1, pairs // num_experts)
    platform = platform or jax.default_backend()
    if platform == "cpu":
        return min(256, max(64, 1 << (max(1, mean // 2) - 1).bit_length()))
    floor = 128 if platform == "tpu" else 256
    return min(1024, max(floor, 1 << (mean - 1).bit_length()))


def expert_ffn(x, w, wv, w1, mm=matmul):
    """One expert on rows x [M, D] (weights [D, F], [D, F], [F, D]) -> [M, D] f32.

    The dtype flow is the release's: the two input projections in the activation dtype,
    then gelu, the product and ``linear_1`` in f32 (the release's f32 one-hot selection
    promotes them; see ``dense_dispatch``). ``mm(a, weight)``: the matmul, returning in
    ``a``'s dtype (``quant.matmul``; ``tokamax_dispatch`` passes its grouped one).
    """
    h = gelu_tanh(mm(x, w).astype(jnp.float32)) * mm(x, wv).astype(jnp.float32)
    return mm(h, w1)


def dense_dispatch(x, experts, w, wv, w1, num_experts: int):
    """The reference algorithm: all experts on all routed copies, then select. -> [N·k, D].

    Its dtype flow is the release's, which matters in bf16: the one-hot is float32
    (``jax.nn.one_hot``'s default), so selecting with it promotes the bf16 expert outputs to
    f32; gelu, the product and ``linear_1`` (an f32 input against the bf16-dequantized
    weight) then run in f32, and the result stays f32.
    """
    dtype = x.dtype
    k = experts.shape[-1]
    copies = jnp.repeat(x, k, axis=0)  # [N·k, D]: token n's k routed copies
    one_hot = jax.nn.one_hot(experts.reshape(-1), num_experts, axis=0)  # [E, N·k] f32

    def all_experts_then_select(inp, weight):
        weight = as_float(weight, dtype)  # [E, in, out] dequantized, as the reference
        all_out = jnp.einsum("mi,eio->emo", inp, weight)  # [E, N·k, out]
        return jnp.einsum("em,emo->mo", one_hot, all_out)  # f32

    h = gelu_tanh(all_experts_then_select(copies, w)) * all_experts_then_select(copies, wv)
    return all_experts_then_select(h, w1)


def gather_dispatch(x, experts, w, wv, w1):
    """Decode path: read only the chosen experts' weights. -> [N·k, D]."""
    k = experts.shape[-1]
    idx = experts.reshape(-1)  # [A = N·k]
    rows = jnp.repeat(x, k, axis=0)[:, None, :]  # [A, 1, D]
    per_row = jax.vmap(expert_ffn)(rows, _take(w, idx), _take(wv, idx), _take(w1, idx))
    return per_row[:, 0, :]


def sort_pairs(experts, num_experts: int):
    """Group the (token, expert) pairs by expert. experts [N, k] -> ``order`` [A = N·k]
    (pair a = token a // k, slot a % k, listed expert by expert, stable), the expert of each
    sorted pair [A], and the pairs per expert [E]."""
    flat_e = experts.reshape(-1)  # [A]
    order = jnp.argsort(flat_e, stable=True)
    return order, flat_e[order], jnp.bincount(flat_e, length=num_experts)


def unsort(out_sorted, order):
    """Rows computed in ``sort_pairs`` order [A, D] back to pair order."""
    return jnp.zeros_like(out_sorted).at[order].set(out_sorted)


def tiled_dispatch(x, experts, w, wv, w1, num_experts: int, tile: int):
    """Prefill path: sort pairs by expert, one matmul per tile of one expert. -> [N·k, D]."""
    N, D = x.shape
    k = experts.shape[-1]
    A = N * k
    E = num_experts
    tile = max(1, min(tile, A))
    order, sorted_e, counts = sort_pairs(experts, E)
    tiles_per_e = -(-counts // tile)  # ceil
    first_tile = jnp.cumsum(tiles_per_e) - tiles_per_e  # [E]
    first_pair = jnp.cumsum(counts) - counts  # [E]
    rank = jnp.arange(A) - first_pair[sorted_e]  # position inside its expert's group
    dest = first_tile[sorted_e] * tile + rank  # row of each sorted pair in the tiled buffer
    num_tiles = -(-A // tile) + E  # static bound on Σ ceil(count_e / tile)
    rows = jnp.zeros((num_tiles * tile, D), x.dtype).at[dest].set(x[order // k])
    tile_expert = jnp.minimum(
        jnp.searchsorted(jnp.cumsum(tiles_per_e), jnp.arange(num_tiles), side="right"), E - 1
    )
    used = jnp.sum(tiles_per_e)

    def run_tile(args):
        t, xt, e = args  # tile index, [tile, D] rows, expert id

        def compute(_):
            return expert_ffn(xt, _index(w, e), _index(wv, e), _index(w1, e))

        return jax.lax.cond(t < used, compute, lambda _: jnp.zeros(xt.shape, jnp.float32), None)

    out_tiles = jax.lax.map(
        run_tile, (jnp.arange(num_tiles), rows.reshape(num_tiles, tile, D), tile_expert)
    )
    out_sorted = out_tiles.reshape(num_tiles * tile, D)[dest]  # [A, D] in sorted order
    return unsort(out_sorted, order)


def _grouped(rows, w, group_sizes, row_expert):
    """rows [A, in] (sorted by expert) @ their expert's weight of w [E, in, out] -> [A, out].

    Quantized weights stay int8 into the grouped matmul; their scales multiply the output
    rows afterwards — per block of the contracted axis when G > 1 (one grouped matmul per
    block), which is exactly ``x @ dequantize(w)`` up to rounding.
    """
    dtype = rows.dtype
    if not isinstance(w, QArray):
        return jax.lax.ragged_dot(rows, w.astype(dtype), group_sizes)
    E, n_in, n_out = w.weight.shape
    G = w.blocks
    blocks = rows.reshape(rows.shape[0], G, n_in // G)  # [A, G, in/G]
    weight = w.weight.reshape(E, G, n_in // G, n_out)  # [E, G, in/G, out]
    out = jnp.zeros((rows.shape[0], n_out), jnp.float32)
    for g in range(G):
        y = jax.lax.ragged_dot(
            blocks[:, g],
            weight[:, g].astype(dtype),
            group_sizes,
            preferred_element_type=jnp.float32,
        )  # [A, out]
        out = out + y * w.scales[row_expert, g, :].astype(jnp.float32)
    return out.astype(dtype)


def ragged_dispatch(x, experts, w, wv, w1, num_experts: int):
    """Accelerator path: pairs sorted by expert, one grouped matmul per weight. -> [N·k, D]."""
    k = experts.shape[-1]
    order, sorted_e, counts = sort_pairs(experts, num_experts)
    group_sizes = counts.astype(jnp.int32)  # [E]
    rows = x[order // k]  # [A, D] the token of each sorted pair
    h = gelu_tanh(_grouped(rows, w, group_sizes, sorted_e)) * _grouped(
        rows, wv, group_sizes, sorted_e
    )  # [A, F]
    out_sorted = _grouped(h, w1, group_sizes, sorted_e)  # [A, D]
    return unsort(out_sorted, order)


def _for_kernel(w, dtype):
    """Our weight as tokamax reads it: a float array in ``dtype``, or a ``qwix.QArray`` whose
    scales are in ``dtype`` (the kernel dequantizes ``int8 · scale`` in the scales' dtype: bf16
    as the release does in bf16, exact in f32)."""
    if not isinstance(w, QArray):
        return w.astype(dtype)
    import qwix  # optional, with tokamax

    return qwix.QArray(
        qvalue=w.weight, scale=w.scales.astype(dtype), zero_point=None, qtype=jnp.int8
    )


def tokamax_dispatch(x, experts, w, wv, w1, num_experts: int, implementation=None):
    """Pairs sorted by expert, then ``expert_ffn`` with one ``tokamax.ragged_dot`` per weight
    as its matmul, int8 read by the kernel. -> [N·k, D] f32."""
    import tokamax  # optional: pip install 'grok_flax[kernels]'

    k = experts.shape[-1]
    dtype = x.dtype
    order, _, counts = sort_pairs(experts, num_experts)
    group_sizes = counts.astype(jnp.int32)  # [E]
    rows = x[order // k]  # [A, D] the token of each sorted pair

    def grouped(a, weight):  # a [A, in] @ its expert's weight [E, in, out], in a's dtype
        return tokamax.ragged_dot(
            a,
            _for_kernel(weight, dtype),
            group_sizes,
            preferred_element_type=a.dtype,
            implementation=implementation,
        )

    return unsort(expert_ffn(rows, w, wv, w1, mm=grouped), order)  # [A, D] f32


__all__ = [
    "MoE",
    "auto_tile",
    "dense_dispatch",
    "expert_ffn",
    "gather_dispatch",
    "gelu_tanh",
    "ragged_dispatch",
    "tiled_dispatch",
    "tokamax_dispatch",
]
