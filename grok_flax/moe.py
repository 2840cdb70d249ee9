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
- ``"gmm"``: the same sort, then one Pallas TPU grouped matmul per weight (tokamax's Mosaic
  TPU ``ragged_dot``, the megablox kernel) that reads the int8 weight and applies the
  ``[E, G, out]`` scales inside the kernel, per block of the contracted axis; the kernel
  visits only the row tiles the routing fills (it can decode too, with 16-row tiles, when
  asked per call: ``impl="gmm"``; the config's ``"gmm"`` decodes with ``gather``).
  On a mesh it runs per device (``jax.shard_map``): XLA refuses to partition a Mosaic
  kernel. TPU only; ``GrokConfig(pallas_interpret=True)`` runs the same kernel body as JAX
  operations anywhere (how it is tested on CPU). What "auto" picks on TPU
  (``GrokConfig.for_platform``), except for a model narrower than the kernel's 128.
- ``"sparse"`` (default): ``gather`` when there are at most as many (token, expert) pairs as
  experts (decoding: it reads no more weights than the experts hold, needs no sort, and on a
  mesh ends in one all-reduce, where ``tiled`` would reduce once per tile), else ``tiled``.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from grok_flax.axes import mesh_of, spec_for
from grok_flax.config import GrokConfig, current_platform
from grok_flax.quant import QArray, as_float, linear_param, matmul


def gelu_tanh(x):
    """The tanh approximation of GELU (``jax.nn.gelu``'s default, used by the reference)."""
    return jax.nn.gelu(x, approximate=True)


def _index(w, i):
    """Expert i's weight (float array or QArray), i possibly traced."""
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), w)


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

        ``impl`` / ``tile`` override the config's ``moe_impl`` / ``moe_tile`` for this call
        (``tile``: the rows per tile of ``tiled`` and of ``gmm``'s grouped matmul).
        "auto" is resolved for JAX's default backend (``GrokConfig.for_platform``)."""
        cfg = self.cfg.for_platform()
        explicit = impl is not None
        impl = impl or cfg.moe_impl
        B, T, D = x.shape
        k = experts.shape[-1]
        E = cfg.num_experts
        pairs = B * T * k
        xf, ef = x.reshape(B * T, D), experts.reshape(B * T, k)
        if not (explicit and impl == "gmm"):  # impl="gmm" per call forces the kernel
            impl = dispatch_for(impl, pairs, E)
        mesh = _mesh_for(self.linear.get_value()) if impl == "gmm" else None
        problem = gmm_unsupported(D, cfg.ffn_size, mesh) if impl == "gmm" else None
        if self.cfg.moe_impl == "auto" and not explicit and impl == "gmm":
            data = mesh.shape.get("data", 1) if mesh is not None else 1
            if problem or data > 1:  # too narrow, or weights split over data (for_platform)
                impl = dispatch_for("sparse", pairs, E)
        tile = tile or cfg.moe_tile
        if tile == "auto":
            tile = gmm_tile(pairs, E) if impl == "gmm" else auto_tile(pairs, E)
        with jax.named_scope(f"experts_{impl}"):
            if impl == "gmm":
                if problem:
                    raise ValueError(f"moe_impl='gmm': {problem}")
                gf = gates.reshape(B * T, k)
                weights, interpret = self.weights(), cfg.pallas_interpret
                combined = gmm_on_mesh(mesh, xf, gf, ef, *weights, E, tile, interpret)
                return combined.reshape(B, T, D).astype(x.dtype)
            if impl == "dense":
                out = dense_dispatch(xf, ef, *self.weights(), E)
            elif impl == "gather":
                out = gather_dispatch(xf, ef, *self.weights())
            elif impl == "ragged":
                out = ragged_dispatch(xf, ef, *self.weights(), E)
            elif impl == "tokamax":
                out = tokamax_dispatch(xf, ef, *self.weights(), E)
            elif impl == "tiled":
                out = tiled_dispatch(xf, ef, *self.weights(), E, tile)
            else:
                raise ValueError(f"unknown MoE dispatch {impl!r}")
        return combine(out, gates.reshape(B * T, k), x.dtype).reshape(B, T, D)


def combine(out, gates, dtype):
    """Each token's gate-weighted sum over its k experts: out [N·k, D] f32 (one row per
    routed pair, in pair order), gates [N, k] -> [N, D] in ``dtype``.

    As the release: the gate is rounded to the activation dtype, then the weighting and the
    sum over the k experts are f32; one cast at the end."""
    return combine_f32(out, gates, dtype).astype(dtype)


def combine_f32(out, gates, dtype):
    """``combine`` before its final cast: [N, D] f32."""
    N, k = gates.shape
    out = out.reshape(N, k, -1)  # one output per (token, chosen expert), f32
    gates = gates.astype(dtype).astype(out.dtype)
    return jnp.sum(gates[..., None] * out, axis=1)


def dispatch_for(impl: str, pairs: int, num_experts: int) -> str:
    """The dispatch ``impl`` runs for ``pairs`` token-expert pairs: ``"sparse"`` is ``gather``
    while there are at most as many pairs as experts (decoding), else ``tiled``; ``"gmm"``
    decodes with ``gather`` too — gather reads exactly the chosen experts' int8 (Grok-1,
    v5p-8: 0.152 GB per layer per chip, compiled), while the kernel's own estimate charges
    its longest grid (1.19 GB), which the TPU plan cannot see past — and keeps the kernel
    for prefill. Other names are themselves."""
    if impl in ("sparse", "gmm") and pairs <= num_experts:
        return "gather"
    return "tiled" if impl == "sparse" else impl


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
    platform = platform or current_platform()  # the current mesh's devices', else the backend
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
    """Decode path: read only the chosen experts' weights. -> [N·k, D].

    One ``expert_ffn`` per routed pair (A = N·k ≤ E, so a handful), each on its expert's
    weights taken by a dynamic index where the matmul reads them. Not a stack of the chosen
    experts' weights: XLA:TPU writes such a stack out as a copy and reads it back (3× the
    expert bytes per token: Grok-1 decode, v5p, 0.472 -> 0.169 GB per layer per chip), and
    ``jnp.take`` along the expert axis copies *all* E experts (``docs/tpu_projection.md``)."""
    k = experts.shape[-1]
    idx = experts.reshape(-1)  # [A = N·k]
    rows = jnp.repeat(x, k, axis=0)  # [A, D]: token n's k routed copies
    return jnp.concatenate(
        [
            expert_ffn(rows[a : a + 1], _index(w, idx[a]), _index(wv, idx[a]), _index(w1, idx[a]))
            for a in range(idx.shape[0])
        ]
    )  # [A, D] f32


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


# --- gmm: tokamax's Pallas TPU grouped matmul, run per device ---------------------------------

KERNEL_MIN = 128  # the Mosaic TPU grouped matmul's smallest rows / contraction / output size


def _mesh_for(weight):
    """The mesh the MoE runs on: the current one (``axes.run_on_mesh``, ``jax.set_mesh``), else
    the one its (concrete) weight lives on; None on one device or inside a per-device program
    (``shard_map``: every axis already manual)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        leaf = weight.weight if isinstance(weight, QArray) else weight
        mesh = mesh_of(leaf)
    if mesh is None or mesh.size == 1 or set(mesh.axis_names) <= set(mesh.manual_axes):
        return None
    return mesh


def _split(logical: str, size: int, mesh):
    """The mesh axes (None, a name or a tuple) that split a dimension named ``logical`` of
    ``size`` (``axes.RULES``), and how many pieces they make."""
    if mesh is None:
        return None, 1
    with warnings.catch_warnings():  # the parameters' placement has warned about it already
        warnings.simplefilter("ignore")
        axis = spec_for((logical,), (size,), mesh)[0]
    names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
    return axis, math.prod(mesh.shape[a] for a in names)


def gmm_unsupported(emb: int, ffn: int, mesh=None) -> str | None:
    """Why ``gmm`` cannot run an MoE of model width ``emb`` and expert width ``ffn`` on
    ``mesh`` (None: it can). tokamax's Mosaic TPU kernel needs every non-expert dimension
    ≥ 128: the model width and the expert width one device holds (``ffn`` / the model-axis
    size where the mesh splits it); a device's rows of ``linear_1`` must also hold whole
    scale blocks or lie inside one (``_local_scales``), which any G and mesh of powers of two
    satisfy."""
    axis, pieces = _split("ffn", ffn, mesh)
    local = ffn // pieces
    if min(emb, local) < KERNEL_MIN:
        split = f" ({ffn} split over {axis}={pieces})" if pieces > 1 else ""
        return (
            f"the Pallas TPU grouped matmul needs the model width and the expert width per "
            f"device to be at least {KERNEL_MIN}, got emb_size={emb} and {local}{split}; "
            f"use moe_impl='sparse'"
        )
    return None


def gmm_tile(pairs: int, num_experts: int) -> int:
    """Rows per tile of ``gmm``'s grouped matmul when ``moe_tile="auto"``: the mean rows per
    expert rounded up to a power of two, within 16…512.

    Each visited tile multiplies [tile × in] rows by its expert's whole weight, so a tile
    re-reads the weight once per tile of the expert's rows (bigger tiles: fewer reads), while
    an expert's last, partly filled tile computes padding. A 512-token Grok-1 chunk (1024
    pairs over 8 experts) gets 128-row tiles: each expert's weights read about once. A
    decoding step (a token's 2 pairs) gets 16-row tiles, the least the kernel's bf16 blocks
    take (16 sublanes): the 128-row tile would do 8× the MXU work on rows of padding. 512
    keeps the double-buffered blocks in VMEM (``_kernel_tiles``)."""
    mean = max(1, pairs // num_experts)
    return min(512, max(16, 1 << (mean - 1).bit_length()))


def _kernel_tiles(rows_tile: int, n_in: int, n_out: int) -> tuple[int, int, int]:
    """(tile_m, tile_k, tile_n) of one grouped matmul [M, n_in] @ [E, n_in, n_out].

    Big contraction/output tiles mean fewer grid steps (each has a fixed cost) but the
    double-buffered blocks — rows [tile_m, tile_k] in up to f32, int8 weights [tile_k,
    tile_n], the f32 accumulator and output [tile_m, tile_n] — must fit the kernel's scoped
    VMEM (16 MiB by default on v5; Mosaic refuses to compile a kernel that does not fit):
    tile_k = tile_n = 1024 for row tiles up to 256, 512 for 512-row tiles (≈ 7 MiB at
    most). Each is the largest power of two ≥ 128 dividing the dimension, else the whole
    dimension (a full-axis block needs no alignment)."""

    def fit(dim: int, most: int) -> int:
        t = most
        while t >= KERNEL_MIN:
            if dim % t == 0:
                return t
            t //= 2
        return dim

    most = max(KERNEL_MIN, min(1024, (1 << 18) // max(rows_tile, 256)))
    return rows_tile, fit(n_in, most), fit(n_out, most)


_V5 = dict(device_kind="TPU v5", num_cores=1, platform="tpu")


def _described_as_tpu(mesh):
    """``mesh``'s abstract mesh with a TPU as its device kind, unless it has one (for
    ``_tpu_described`` inside ``shard_map``, whose arrays carry its mesh)."""
    mesh = getattr(mesh, "abstract_mesh", mesh)
    device = mesh.abstract_device
    if device is not None and device.platform == "tpu":
        return mesh
    return mesh.update(abstract_device=jax.sharding.AbstractDevice(**_V5))


@contextlib.contextmanager
def _tpu_described(interpret: bool):
    """Pallas interpret mode off a TPU: tokamax asks JAX for the TPU's description
    (``pltpu.get_tpu_info``: the lane and sublane sizes its int8-scale blocks are cut to),
    which JAX answers from the current mesh's device kind. On a TPU, or compiling for one (a
    TPU mesh current), it is there; interpreting on another backend, name a v5 TPU for the
    call — the interpreted kernel's result does not depend on it. Compiling the kernel
    for anything but a TPU is refused here, with the way out."""
    mesh = jax.sharding.get_abstract_mesh()
    device = getattr(mesh, "abstract_device", None)
    platform = device.platform if device is not None else jax.default_backend()
    if platform == "tpu":
        yield
        return
    if not interpret:
        raise ValueError(
            f"moe_impl='gmm' is a Pallas TPU kernel and this program is for {platform}: run "
            f"it on a TPU (or compile it for a TPU mesh), set GrokConfig(pallas_interpret="
            f"True) to interpret it anywhere (slow), or use moe_impl='sparse'"
        )
    with jax.sharding.use_abstract_mesh(_described_as_tpu(mesh)):
        yield


def _varying(*arrays) -> dict:
    """Inside ``shard_map`` a Pallas call must say over which mesh axes its output varies:
    over those its inputs vary over. {} outside (``manual_axis_type`` left unset)."""
    if not jax.sharding.get_abstract_mesh().manual_axes:
        return {}
    axes = frozenset().union(
        *(jax.typeof(leaf).manual_axis_type.varying for leaf in jax.tree.leaves(arrays))
    )
    return dict(manual_axis_type=jax.sharding.ManualAxisType(varying=axes))


def gmm_dispatch(x, experts, w, wv, w1, num_experts: int, interpret=False, tile=None):
    """Pairs sorted by expert, then ``expert_ffn`` with one Pallas TPU grouped matmul per
    weight: tokamax's Mosaic TPU ``ragged_dot`` (the megablox ``gmm`` kernel) on one device's
    weights, reading int8 and scaling inside the kernel. -> [N·k, D] f32.

    The kernel (``tokamax.ops.tpu.RaggedDot``, its public TPU class: the one that takes
    ``interpret`` and fixed tiles) walks tiles of ``tile`` sorted rows (``gmm_tile``; a
    multiple of 16); each tile is multiplied by its expert's int8 weight block by block
    [tile_k, tile_n] (``_kernel_tiles``), the f32 accumulator scaled by the block's scales:
    with G scale blocks along the contraction (``linear_1``'s 8), each contraction tile
    spans whole blocks or lies inside one, so the kernel applies every block's scale to the
    partial product of its own rows — exactly ``x @ dequantize(w)`` up to rounding (the
    scales multiply the f32 accumulator, where the release rounds ``int8 · scale`` to bf16
    first), and no dequantized copy. Only tiles holding some expert's rows are visited (the
    grid's length is computed from the routing at run time), a tile an expert boundary
    crosses is computed once per expert in it, and experts with no rows cost nothing. The
    rows are padded to whole tiles and to at least 128 (the kernel's minimum); padding rows
    belong to no expert, are never computed or written, and are dropped.

    It can decode (two 16-row tiles for one token, by design reading the two chosen
    experts' int8 once, 151 MB per device on v5p-8), but XLA's cost analysis cannot show
    that: it takes the kernel's own static estimate, which assumes the longest grid (15
    experts' worth of weight reads, 1.19 GB). ``gather_dispatch`` reads the same 151 MB as
    XLA counts it (0.152 GB, compiled), so ``MoE`` decodes with gather unless a call asks
    for ``impl="gmm"``.

    ``interpret``: run the kernel body as JAX operations (any backend; slow). Every
    non-expert dimension must be ≥ 128 (``gmm_unsupported``)."""
    import tokamax
    from tokamax.ops import tpu as tokamax_tpu  # optional: pip install 'grok_flax[kernels]'

    N, D = x.shape
    k = experts.shape[-1]
    A = N * k
    dtype = x.dtype
    tile = gmm_tile(A, num_experts) if tile is None else tile
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16 or tile % 16:
        raise ValueError(f"gmm's row tile must be a positive multiple of 16, got {tile!r}")
    M = max(KERNEL_MIN, -(-A // tile) * tile)  # rows padded to whole tiles, ≥ 128
    order, _, counts = sort_pairs(experts, num_experts)
    group_sizes = counts.astype(jnp.int32)  # [E]
    rows = jnp.zeros((M, D), dtype).at[:A].set(x[order // k])  # [M, D] sorted, then padding

    def grouped(a, weight):  # a [M, in] @ its expert's weight [E, in, out], in a's dtype
        tm, tk, tn = _kernel_tiles(tile, *weight.shape[-2:])
        kernel = tokamax_tpu.RaggedDot(
            interpret=interpret,
            config=tokamax_tpu.RaggedDotConfig(tile_m=tm, tile_k=tk, tile_n=tn),
        )
        with _tpu_described(interpret):
            return tokamax.ragged_dot(
                a,
                _for_kernel(weight, dtype),
                group_sizes,
                preferred_element_type=a.dtype,
                implementation=(kernel,),
                **_varying(a, weight),
            )

    out = expert_ffn(rows, w, wv, w1, mm=grouped)  # [M, D] f32
    return unsort(out[:A], order)  # [A, D]


def _local_scales(w1, ffn: int, axis, pieces: int):
    """Inside ``shard_map``: this device's rows of ``linear_1`` [E, F/pieces, D] with the scale
    blocks that cover them. The scales [E, G, D] are never split (``scale.sharding``), so
    every device holds all G: a device holding whole blocks takes its G/pieces, a device
    inside one block takes that one."""
    if not isinstance(w1, QArray) or pieces == 1:
        return w1
    G, local = w1.blocks, ffn // pieces
    block = ffn // G
    device = jax.lax.axis_index(axis)
    if local % block == 0:
        first, count = device * (local // block), local // block
    elif block % local == 0:
        first, count = device * local // block, 1
    else:
        raise ValueError(
            f"moe_impl='gmm': linear_1's {G} scale blocks of {block} rows straddle the "
            f"devices' {local}-row shards (expert width {ffn} over {pieces} devices)"
        )
    scales = jax.lax.dynamic_slice_in_dim(w1.scales, first, count, axis=-2)
    return QArray(weight=w1.weight, scales=scales)


def gmm_on_mesh(mesh, x, gates, experts, w, wv, w1, num_experts: int, tile=None, interpret=False):
    """``gmm_dispatch`` and the gate-weighted sum over each token's k experts, per device:
    x [N, D], gates/experts [N, k] -> [N, D] f32 (``combine`` before its cast).

    XLA's SPMD partitioner does not split a Mosaic kernel (jax refuses to lower one that is
    not inside ``shard_map``). So the kernel runs inside ``jax.shard_map``
    with the weights as the model shards them (``axes.RULES``): ``linear``/``linear_v``
    split by columns over the expert width F, ``linear_1`` by rows, as tensor parallelism
    does; every device then computes its F-slice of every routed pair's hidden activation
    and a partial ``linear_1`` output, the k experts' outputs are combined locally, and one
    ``psum`` over the F axis ends the layer (half the bytes of reducing the N·k per-pair rows
    first). Token rows are split over the batch axis ("data") where it divides them; the
    weights' model-width axis D, which the rules also put on "data", is gathered whole for
    the call (with data = 1, the Grok-1 TPU plans, nothing is). ``mesh`` None: one device."""
    dtype = x.dtype
    if mesh is None:
        out = gmm_dispatch(x, experts, w, wv, w1, num_experts, interpret, tile)
        return combine_f32(out, gates, dtype)
    F = w.shape[-1]
    f_axis, pieces = _split("ffn", F, mesh)
    r_axis, _ = _split("batch", x.shape[0], mesh)
    rows = P(r_axis, None)

    def spec(weight, weight_spec):  # a QArray's scales [E, G, out]: their out axis as the weight's
        if isinstance(weight, QArray):
            return QArray(weight=weight_spec, scales=P(None, None, weight_spec[2]))
        return weight_spec

    columns, row_split = P(None, None, f_axis), P(None, f_axis, None)

    def per_device(x, gates, experts, w, wv, w1):
        w1 = _local_scales(w1, F, f_axis, pieces)
        out = gmm_dispatch(x, experts, w, wv, w1, num_experts, interpret, tile)  # [N·k, D]
        partial = combine_f32(out, gates, dtype)  # [N, D] this device's share of the F sum
        return partial if f_axis is None else jax.lax.psum(partial, f_axis)

    described = contextlib.nullcontext()
    if interpret:  # the whole per-device program sees a TPU (see _tpu_described)
        mesh = _described_as_tpu(mesh)
        described = jax.sharding.use_abstract_mesh(mesh)
    program = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(rows, rows, rows, spec(w, columns), spec(wv, columns), spec(w1, row_split)),
        out_specs=rows,
        # Pallas's interpreter (jax 0.12.1) slices its blocks without the varying-axes
        # types shard_map checks; the compiled kernel states them (_varying)
        check_vma=not interpret,
    )
    with described:  # jit: an eager call too is traced under the described mesh
        return jax.jit(program)(x, gates, experts, w, wv, w1)


__all__ = [
    "MoE",
    "auto_tile",
    "combine",
    "dense_dispatch",
    "dispatch_for",
    "expert_ffn",
    "gather_dispatch",
    "gelu_tanh",
    "gmm_dispatch",
    "gmm_on_mesh",
    "gmm_tile",
    "gmm_unsupported",
    "ragged_dispatch",
    "tiled_dispatch",
    "tokamax_dispatch",
]
