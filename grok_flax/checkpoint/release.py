"""The release format: what a Grok-1 checkpoint folder holds, and the words its files use.

The format
==========
A Grok-1 checkpoint folder (``ckpt-0/``) holds one file per parameter, named
``tensor00000_000``, ``tensor00001_000``, ... (see :func:`tensor_file_name`).  Each file is
a Python pickle (protocol 4, written by numpy 1.26) of exactly one of two things:

1. a plain numpy array (float32 or bfloat16 in practice).  Its opcode stream spells out::

       numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')        # REDUCE
       .__setstate__((1, shape, dtype, is_fortran, raw_bytes))                # BUILD

   where ``dtype`` is itself ``numpy.dtype('f4', False, True)`` (or, for bfloat16,
   ``numpy.dtype(ml_dtypes.bfloat16, False, True)``) followed by a BUILD with the dtype
   state ``(3, '<', None, None, None, elsize, alignment, flags)``;

2. a ``QuantizedWeight8bit`` (a small class from the original ``__main__``)::

       __main__.QuantizedWeight8bit.__new__()                                 # NEWOBJ
       .__dict__.update({'weight': <int8 array>, 'scales': <bfloat16 array>}) # BUILD

   ``weight`` has shape ``[..., in, out]`` and ``scales`` ``[..., groups, out]``.

File ``i`` holds the ``i``-th parameter of the original Haiku model's tree flattened in
*sorted* order, so the layers come lexicographically (decoder_layer_0, _1, _10, _11, …, _19,
_2, _20 …): :func:`release_names` rebuilds that order and :data:`PARAM_HOMES` says where each
released tensor lives in ``grok_flax.Grok``.

This module only *describes* the format; :mod:`grok_flax.checkpoint.reader` parses tensor
files without running them, :mod:`grok_flax.checkpoint.writer` writes them byte for byte as
the original code does, and :mod:`grok_flax.checkpoint.loader` fills a model from a folder.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A tensor file is malformed, truncated, hostile, or uses an unsupported feature."""


@dataclass(frozen=True)
class ArraySpec:
    """Where one array's raw bytes live inside a tensor file.

    The array's elements are the ``nbytes`` bytes starting at ``offset`` in ``path``, laid
    out in C order, or in Fortran order when ``fortran_order`` is true.

    ``inline_data`` is only set for protocol-2 pickles, whose bytes are stored in the file
    as UTF-8 *text* (one character per byte) and therefore cannot be memory-mapped; the
    decoded bytes are then kept here and ``offset`` is -1.
    """

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool = False
    inline_data: bytes | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Number of payload bytes (``size * dtype.itemsize``)."""
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class QuantizedSpec:
    """A ``QuantizedWeight8bit``: int8 ``weight`` [..., in, out] and ``scales`` [..., G, out].

    The dequantized weight is ``weight * scales`` with each scale row repeated over
    ``in // G`` consecutive input rows.
    """

    weight: ArraySpec
    scales: ArraySpec

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the (dequantized) weight."""
        return self.weight.shape

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the weight (int8)."""
        return self.weight.dtype


def tensor_file_name(index: int, shard: int = 0) -> str:
    """File name of parameter ``index`` (shard ``shard``), e.g. ``'tensor00003_000'``."""
    if index < 0 or shard < 0:
        raise ValueError(f"index and shard must be non-negative, got {index}, {shard}")
    return f"tensor{index:05d}_{shard:03d}"


TENSOR_FILE_RE = re.compile(r"^tensor(\d{5})_(\d{3})$")  # the names tensor_file_name makes

#: model parameter path -> name in the release (per layer under transformer/decoder_layer_N/)
PARAM_HOMES: dict[tuple[str, ...], str] = {
    ("embed",): "language_model/in_out_embed/embeddings",
    ("final_norm", "scale"): "language_model/rms_norm/scale",
    ("layers", "attn", "query"): "multi_head_attention/query/w",
    ("layers", "attn", "key"): "multi_head_attention/key/w",
    ("layers", "attn", "value"): "multi_head_attention/value/w",
    ("layers", "attn", "linear"): "multi_head_attention/linear/w",
    ("layers", "moe", "linear"): "moe/linear/w",
    ("layers", "moe", "linear_v"): "moe/linear_v/w",
    ("layers", "moe", "linear_1"): "moe/linear_1/w",
    ("layers", "router", "w"): "router/w",
    ("layers", "pre_attn_norm", "scale"): "rms_norm/scale",
    ("layers", "post_attn_norm", "scale"): "rms_norm_1/scale",
    ("layers", "pre_moe_norm", "scale"): "rms_norm_2/scale",
    ("layers", "post_moe_norm", "scale"): "rms_norm_3/scale",
}
_LAYER_PREFIX = "transformer/decoder_layer_{}/"


def layer_prefix(layer: int) -> str:
    """The release's name prefix of decoder layer ``layer``'s parameters."""
    return _LAYER_PREFIX.format(layer)


def require_release_layout(cfg) -> None:
    """The release's files hold Grok-1's parameter tree: four norms per layer. A config whose
    tree differs (``post_norms=False``, an ablation) can't be read or written in that format."""
    if not cfg.post_norms:
        raise ValueError(
            "GrokConfig(post_norms=False) has no post-attention/post-MoE norms, which the "
            "release format (rms_norm_1, rms_norm_3) requires: such an ablation model can't be "
            "read or written as a release checkpoint"
        )


def release_names(num_layers: int) -> list[tuple[str, tuple[str, ...], int | None]]:
    """[(release name, model path, layer or None)] in checkpoint file order."""
    entries = []
    for path, name in PARAM_HOMES.items():
        if path[0] == "layers":
            for i in range(num_layers):
                entries.append((layer_prefix(i) + name, path, i))
        else:
            entries.append((name, path, None))
    # Haiku params are {module: {param: value}}; jax flattens dicts by sorted keys.
    entries.sort(key=lambda e: tuple(e[0].rsplit("/", 1)))
    return entries


def get_path(tree, path: tuple[str, ...]):
    """``tree[path[0]][path[1]]...``: the variable at a :data:`PARAM_HOMES` path of an
    ``nnx.State``."""
    node = tree
    for p in path:
        node = node[p]
    return node


# =============================================================================================
# Dtypes
# =============================================================================================

# How numpy pickles each supported dtype: ``numpy.dtype(<name>, False, True)``.  bfloat16 is
# not a builtin numpy type, so its "name" is the global ``ml_dtypes.bfloat16``.
DTYPE_CODES = {"float32": "f4", "float16": "f2", "int8": "i1", "int32": "i4", "float64": "f8"}
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
CODE_TO_DTYPE = {code: np.dtype(code).newbyteorder("<") for code in DTYPE_CODES.values()}
FLOAT_DTYPES = ("float32", "bfloat16", "float16")  # float arrays and int8 weights' scales

# The ``flags`` field of the dtype state as written by numpy 1.26 (the original checkpoint
# code).  numpy ignores it when loading; we only reproduce it to write identical files.
BFLOAT16_STATE_FLAGS = 80


def dtype_pickle_form(dtype: np.dtype) -> str | None:
    """``'f4'``-style code for a builtin dtype, ``None`` for bfloat16; ValueError otherwise."""
    little = dtype.byteorder in "<|" or (dtype.byteorder == "=" and sys.byteorder == "little")
    if dtype == BFLOAT16 and little:
        return None
    if dtype.name in DTYPE_CODES and little:
        return DTYPE_CODES[dtype.name]
    raise ValueError(
        f"unsupported dtype {dtype!r}: tensor files hold little-endian "
        f"{', '.join([*DTYPE_CODES, 'bfloat16'])}"
    )


def quantized_shape_problem(weight: tuple[int, ...], scales: tuple[int, ...]) -> str | None:
    """Why ``scales`` cannot scale ``weight`` ([..., in, out] vs [..., G, out]), or None."""
    if len(weight) < 2 or len(weight) != len(scales):
        return f"weight {weight} and scales {scales} must have the same rank >= 2"
    if weight[:-2] != scales[:-2] or weight[-1] != scales[-1]:
        return f"weight {weight} and scales {scales} differ outside the group axis (-2)"
    if scales[-2] == 0 or weight[-2] % scales[-2]:
        return f"weight rows {weight[-2]} are not divisible into {scales[-2]} scale groups"
    return None


# =============================================================================================
# Pickle opcodes
# =============================================================================================
#
# Every opcode this module reads or writes: one byte each, named as in ``pickletools`` (whose
# documentation describes their arguments).  Any other opcode in a file is an error; the
# last two (protocol 5's out-of-band buffers) are listed only to refuse them by name.


class Op:
    """The opcodes: ``Op.PROTO``, ``Op.BINGET``, ... (``pickletools`` names)."""

    PROTO, FRAME, STOP = b"\x80", b"\x95", b"."
    MEMOIZE, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET = b"\x94", b"q", b"r", b"h", b"j"
    NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"
    BININT, BININT1, BININT2, LONG1 = b"J", b"K", b"M", b"\x8a"
    SHORT_BINUNICODE, BINUNICODE, BINUNICODE8 = b"\x8c", b"X", b"\x8d"
    SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8 = b"C", b"B", b"\x8e", b"\x96"
    MARK, EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"(", b")", b"t", b"\x85", b"\x86", b"\x87"
    EMPTY_DICT, SETITEM, SETITEMS = b"}", b"s", b"u"
    GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ, BUILD = b"c", b"\x93", b"R", b"\x81", b"b"
    NEXT_BUFFER, READONLY_BUFFER = b"\x97", b"\x98"


QUANTIZED_CLASS = ("__main__", "QuantizedWeight8bit")  # the class the writer names
