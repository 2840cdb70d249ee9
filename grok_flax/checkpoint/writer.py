"""Write Grok-1 tensor files, and whole checkpoints, exactly as the original code does.

The reader (``checkpoint.reader``) walks a file's pickle opcodes without running them; the
writer goes the other way: :func:`write_array_file` and :func:`write_quantized_file` emit,
by hand, the very opcode stream CPython's pickler produces for numpy 1.26 arrays (same
memoisation, same framing), streaming the array bytes straight to disk. Files written here
are byte for byte what the original Grok-1 code writes for the same arrays (the tests
rewrite the reference checkpoint and compare bytes), and each appears atomically (a temporary
file, then ``os.replace``). :func:`save_checkpoint` writes a whole model as ``ckpt-0/``, in
the release's tensor order.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import jax
import numpy as np
from flax import nnx

from grok_flax.checkpoint.release import (
    BFLOAT16_STATE_FLAGS,
    FLOAT_DTYPES,
    QUANTIZED_CLASS,
    Op,
    dtype_pickle_form,
    get_path,
    quantized_shape_problem,
    release_names,
    require_release_layout,
    tensor_file_name,
)
from grok_flax.model import Grok
from grok_flax.quant import QArray, quantize

__all__ = ["save_checkpoint", "write_array_file", "write_quantized_file"]


def write_array_file(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a tensor file exactly like the original Grok-1 code would.

    Supported dtypes: float32, float16, bfloat16, int8, int32, float64 (else ValueError).
    The file appears atomically (temp file + ``os.replace``).
    """
    array = np.asarray(array)
    dtype_pickle_form(array.dtype)  # validate before touching the disk
    _write_atomically(path, lambda w: w.save_array(array))


def write_quantized_file(path: str | os.PathLike, weight: np.ndarray, scales: np.ndarray) -> None:
    """Write a ``__main__.QuantizedWeight8bit(weight=int8, scales=float)`` tensor file."""
    weight, scales = np.asarray(weight), np.asarray(scales)
    dtype_pickle_form(scales.dtype)  # little-endian and supported, before touching the disk
    if weight.dtype != np.int8:
        raise ValueError(f"quantized weight must be int8, got {weight.dtype}")
    if scales.dtype.name not in FLOAT_DTYPES:
        raise ValueError(f"quantized scales must be one of {FLOAT_DTYPES}, got {scales.dtype}")
    problem = quantized_shape_problem(weight.shape, scales.shape)
    if problem:
        raise ValueError(problem)

    _write_atomically(path, lambda w: w.save_quantized(weight, scales))


# =============================================================================================
# Writing: the opcode stream CPython's pickler emits for numpy 1.26 objects
# =============================================================================================
#
# Protocol 4 details that matter for byte-identical output:
# * after PROTO, opcodes are grouped into *frames*: ``FRAME <u64 length>`` + that many bytes;
#   a frame shorter than 4 bytes is written without the FRAME header;
# * a bytes payload of 64 KiB or more bypasses framing: the current frame is closed, and the
#   payload's opcode and bytes are written directly (a new frame starts afterwards);
# * every saved string, bytes, tuple, global and object is *memoized* (MEMOIZE assigns the
#   next memo index); saving the same object again emits BINGET instead.  Empty tuples, ints
#   and bools are not memoized.

_FRAME_SIZE_TARGET = 64 * 1024
_FRAME_SIZE_MIN = 4
_WRITE_CHUNK = 16 << 20


class _PickleWriter:
    """Emits protocol-4 opcodes to a binary file, framed and memoized like CPython does.

    Each ``save_*`` method mirrors one call of the pickler's internal ``save(obj)``.  The
    pickler closes a frame that has reached 64 KiB at the *start* of every such call, so
    every ``save_*`` begins with :meth:`begin_save`.

    ``numpy_core`` and ``bfloat16_flags`` are what numpy 1.26 writes; numpy 2.x writes
    ``"numpy._core"`` and 64 instead (the tests use that to compare against the live
    pickler).
    """

    def __init__(
        self,
        f: BinaryIO,
        numpy_core: str = "numpy.core",
        bfloat16_flags: int = BFLOAT16_STATE_FLAGS,
    ):
        self.f = f
        self.numpy_core = numpy_core
        self.bfloat16_flags = bfloat16_flags
        self.frame = bytearray()
        self.memo: dict[object, int] = {}
        self.memo_size = 0

    # ---- low level ---------------------------------------------------------------------------

    def op(self, data: bytes | memoryview) -> None:
        self.frame += data

    def begin_save(self) -> None:
        if len(self.frame) >= _FRAME_SIZE_TARGET:
            self.commit_frame()

    def commit_frame(self) -> None:
        if len(self.frame) >= _FRAME_SIZE_MIN:
            self.f.write(Op.FRAME + struct.pack("<Q", len(self.frame)))
        self.f.write(self.frame)
        self.frame = bytearray()

    def memoize(self, key: object = None) -> None:
        """Record the value just written in the next memo slot (``key=None``: never reused)."""
        if key is not None:
            self.memo[key] = self.memo_size
        self.memo_size += 1
        self.op(Op.MEMOIZE)

    def get(self, key: object) -> bool:
        """Emit BINGET for an already-saved value; return whether it was memoized."""
        index = self.memo.get(key)
        if index is None:
            return False
        self.op(Op.BINGET + bytes([index]) if index < 256 else Op.LONG_BINGET + _u32(index))
        return True

    # ---- plain values ----------------------------------------------------------------------------

    def save_const(self, opcode: bytes) -> None:
        """None, True or False (NONE / NEWTRUE / NEWFALSE); never memoized."""
        self.begin_save()
        self.op(opcode)

    def save_int(self, value: int) -> None:
        self.begin_save()
        if 0 <= value < 1 << 8:
            self.op(Op.BININT1 + bytes([value]))
        elif 0 <= value < 1 << 16:
            self.op(Op.BININT2 + struct.pack("<H", value))
        elif -(1 << 31) <= value < 1 << 31:
            self.op(Op.BININT + struct.pack("<i", value))
        else:
            encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.op(Op.LONG1 + bytes([len(encoded)]) + encoded)

    def save_str(self, text: str) -> None:
        self.begin_save()
        if self.get(("str", text)):
            return
        data = text.encode("utf-8")
        if len(data) < 256:
            self.op(Op.SHORT_BINUNICODE + bytes([len(data)]) + data)
        else:
            self.op(Op.BINUNICODE + _u32(len(data)) + data)
        self.memoize(("str", text))

    def save_tuple(self, save_items: list) -> None:
        """A fresh tuple whose items are saved by the given zero-argument callables."""
        self.begin_save()
        if not save_items:
            self.op(Op.EMPTY_TUPLE)
            return
        if len(save_items) > 3:
            self.op(Op.MARK)
        for save_item in save_items:
            save_item()
        self.op(
            (Op.TUPLE1, Op.TUPLE2, Op.TUPLE3)[len(save_items) - 1]
            if len(save_items) <= 3
            else Op.TUPLE
        )
        self.memoize()

    def save_ints(self, values: tuple[int, ...]) -> None:
        """A tuple of ints, e.g. a shape."""
        self.save_tuple([lambda v=v: self.save_int(v) for v in values])

    def save_global(self, module: str, name: str) -> None:
        self.begin_save()
        if self.get(("global", module, name)):
            return
        self.save_str(module)
        self.save_str(name)
        self.op(Op.STACK_GLOBAL)
        self.memoize(("global", module, name))

    def save_payload(self, chunks: Iterator[np.ndarray], nbytes: int) -> None:
        """A bytes object, streamed from ``chunks``; large ones bypass the frame."""
        self.begin_save()
        if nbytes < 256:
            header = Op.SHORT_BINBYTES + bytes([nbytes])
        elif nbytes <= 0xFFFFFFFF:
            header = Op.BINBYTES + _u32(nbytes)
        else:
            header = Op.BINBYTES8 + struct.pack("<Q", nbytes)
        if nbytes >= _FRAME_SIZE_TARGET:
            self.commit_frame()
            self.f.write(header)
            for chunk in chunks:
                self.f.write(chunk)
        else:
            self.op(header)
            for chunk in chunks:
                self.op(memoryview(chunk))
        self.memoize()

    # ---- numpy objects -------------------------------------------------------------------------

    def save_dtype(self, dtype: np.dtype) -> None:
        """``numpy.dtype(code, False, True)`` + BUILD with its version-3 state."""
        code = dtype_pickle_form(dtype)
        self.begin_save()
        if self.get(("dtype", dtype.name)):
            return
        self.save_global("numpy", "dtype")
        self.save_tuple(
            [
                (lambda: self.save_global("ml_dtypes", "bfloat16"))
                if code is None
                else (lambda: self.save_str(code)),
                lambda: self.save_const(Op.NEWFALSE),
                lambda: self.save_const(Op.NEWTRUE),
            ]
        )
        self.op(Op.REDUCE)
        self.memoize(("dtype", dtype.name))
        # (3, byteorder, subarray, names, fields, elsize, alignment, flags); builtin dtypes
        # use -1 for "the usual size and alignment"; bfloat16 is user-defined and explicit.
        sizes = (-1, -1, 0) if code else (dtype.itemsize, dtype.alignment, self.bfloat16_flags)
        self.save_tuple(
            [
                lambda: self.save_int(3),
                lambda: self.save_str("|" if dtype.itemsize == 1 else "<"),
                *[lambda: self.save_const(Op.NONE)] * 3,
                *[lambda v=v: self.save_int(v) for v in sizes],
            ]
        )
        self.op(Op.BUILD)

    def save_array(self, array: np.ndarray) -> None:
        """``_reconstruct(ndarray, (0,), b'b')`` + BUILD ``(1, shape, dtype, fortran, bytes)``."""
        # Like numpy: an array that is Fortran- but not C-contiguous is stored in Fortran
        # order, and its bytes are then the C-order bytes of its transpose.
        fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
        self.begin_save()
        self.save_global(f"{self.numpy_core}.multiarray", "_reconstruct")
        self.save_tuple(
            [
                lambda: self.save_global("numpy", "ndarray"),
                lambda: self.save_ints((0,)),
                self.save_b,
            ]
        )
        self.op(Op.REDUCE)
        self.memoize()
        self.save_tuple(
            [
                lambda: self.save_int(1),
                lambda: self.save_ints(array.shape),
                lambda: self.save_dtype(array.dtype),
                lambda: self.save_const(Op.NEWTRUE if fortran else Op.NEWFALSE),
                lambda: self.save_payload(
                    _c_order_chunks(array.T if fortran else array), array.nbytes
                ),
            ]
        )
        self.op(Op.BUILD)

    def save_b(self) -> None:
        """The constant ``b'b'`` that ``_reconstruct`` receives."""
        self.begin_save()
        if not self.get(("bytes", b"b")):
            self.op(Op.SHORT_BINBYTES + b"\x01b")
            self.memoize(("bytes", b"b"))

    def save_quantized(self, weight: np.ndarray, scales: np.ndarray) -> None:
        """``QuantizedWeight8bit.__new__()`` + BUILD ``{'weight': ..., 'scales': ...}``."""
        self.begin_save()
        self.save_global(*QUANTIZED_CLASS)
        self.save_tuple([])
        self.op(Op.NEWOBJ)
        self.memoize()
        self.begin_save()  # the state dict
        self.op(Op.EMPTY_DICT)
        self.memoize()
        self.op(Op.MARK)
        self.save_str("weight")
        self.save_array(weight)
        self.save_str("scales")
        self.save_array(scales)
        self.op(Op.SETITEMS + Op.BUILD)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _c_order_chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    """The array's bytes in C order as uint8 arrays of about 16 MiB, copying only if needed."""
    if array.ndim == 0 or array.flags.c_contiguous:
        flat = array.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, _WRITE_CHUNK):
            yield flat[start : start + _WRITE_CHUNK]
        return
    rows = max(1, _WRITE_CHUNK // max(1, array[0].nbytes))
    for start in range(0, array.shape[0], rows):
        yield np.ascontiguousarray(array[start : start + rows]).reshape(-1).view(np.uint8)


def _write_atomically(path: str | os.PathLike, save: Callable[[_PickleWriter], None]) -> None:
    """Write a pickle to a temp file beside ``path``, then rename it into place."""
    path = os.fspath(path)
    tmp_path = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp_path, "xb") as f:
            _write_pickle(f, save)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def _write_pickle(f: BinaryIO, save: Callable[[_PickleWriter], None], **options) -> None:
    """PROTO 4, the object that ``save`` writes, STOP.  ``options`` go to _PickleWriter."""
    f.write(Op.PROTO + b"\x04")  # written before framing starts
    writer = _PickleWriter(f, **options)
    save(writer)
    writer.op(Op.STOP)
    writer.commit_frame()


def save_checkpoint(
    model: Grok, path: str | os.PathLike, *, quantize_floats: bool = True, progress: bool = False
) -> Path:
    """Write ``model`` in the official format to ``path/ckpt-0/``.

    Quantized linears are written as they are; float linears are quantized first (the
    release format stores linears as QuantizedWeight8bit) unless ``quantize_floats=False``.
    Embedding, norms and router are written as float32, as released.
    """
    cfg = model.cfg
    ckpt = Path(path) / "ckpt-0"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = nnx.state(model, nnx.Param)
    require_release_layout(cfg)
    order = release_names(cfg.num_layers)
    blocks = {
        ("layers", "attn", "linear"): cfg.attn_out_scale_blocks,
        ("layers", "moe", "linear_1"): cfg.moe_out_scale_blocks,
    }
    for i, (_, mpath, layer) in enumerate(order):
        value = get_path(state, mpath).get_value()
        if layer is not None:
            value = jax.tree.map(lambda a, j=layer: a[j], value)
        f = ckpt / tensor_file_name(i)
        is_linear = mpath[0] == "layers" and mpath[1] in ("attn", "moe")
        if isinstance(value, QArray):
            write_quantized_file(f, np.asarray(value.weight), np.asarray(value.scales))
        elif is_linear and quantize_floats:
            q = quantize(value, blocks.get(mpath, 1))
            write_quantized_file(f, np.asarray(q.weight), np.asarray(q.scales))
        else:
            write_array_file(f, np.asarray(value, dtype=np.float32))
    return ckpt
