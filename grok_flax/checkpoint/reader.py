"""Read the tensor files of a Grok-1 checkpoint without running a single pickle.

Why not just unpickle?
======================
Unpickling *executes* the file: a pickle may name any importable callable (``os.system``,
``builtins.eval``, ...) and call it.  A checkpoint downloaded from the internet must never get
that power.  So this module contains a small *symbolic* pickle interpreter: it walks the
opcode stream itself, builds inert stand-ins (strings, ints, tuples, "the global X.Y",
"N bytes at file offset O") and recognises only the exact call shapes shown above.  Anything
else -- an unknown global, an unknown opcode, a call with unexpected arguments, a length that
runs past the end of the file -- raises
:class:`~grok_flax.checkpoint.release.CheckpointError` naming the file.

Large payloads are never read while parsing: the interpreter *seeks over* them and remembers
only where they are (:class:`~grok_flax.checkpoint.release.ArraySpec`). :func:`read_array`
then memory-maps exactly those bytes, so a 2 GB expert weight costs no RAM until it is touched.

Besides the protocol-4 form of :mod:`grok_flax.checkpoint.release`, numpy 2.x pickles at
protocols 2-5 are accepted too (``numpy._core`` module names;
``numpy._core.numeric._frombuffer(buf, dtype, shape, order)`` at protocol 5; and at protocol 2
the bytes travel as latin-1 text through ``_codecs.encode(text, 'latin1')`` -- or ``bytes()``
when empty -- which are recognised, never called, as well; such text is held in memory, so it
is limited to 1 MiB).
"""

from __future__ import annotations

import math
import os
import pickletools
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from grok_flax.checkpoint.release import (
    BFLOAT16,
    CODE_TO_DTYPE,
    FLOAT_DTYPES,
    ArraySpec,
    CheckpointError,
    Op,
    QuantizedSpec,
    quantized_shape_problem,
)

__all__ = ["parse_tensor_file", "read_array", "read_payload_into", "read_tensor_file"]


def parse_tensor_file(path: str | os.PathLike) -> ArraySpec | QuantizedSpec:
    """Describe the array(s) in one tensor file without reading their data.

    Raises :class:`~grok_flax.checkpoint.release.CheckpointError` if the file is anything but
    one of the recognised forms.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _Interpreter(f, path, os.fstat(f.fileno()).st_size).run()


def read_array(spec: ArraySpec, mmap: bool = True) -> np.ndarray:
    """Return the array described by ``spec``.

    With ``mmap=True`` (the default) the result is a read-only ``np.memmap`` over exactly the
    payload bytes: nothing is read until the elements are used.  With ``mmap=False`` the
    bytes are read into a fresh, writable in-memory array.  (Empty arrays and protocol-2
    payloads cannot be mapped; they always come back as in-memory arrays, read-only when
    ``mmap=True``.)
    """
    order = "F" if spec.fortran_order else "C"
    if spec.inline_data is not None or spec.nbytes == 0:
        data = spec.inline_data or b""
        array = np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape, order=order)
        return array if mmap else array.copy()
    if mmap:
        return np.memmap(
            spec.path,
            dtype=spec.dtype,
            mode="r",
            offset=spec.offset,
            shape=spec.shape,
            order=order,
        )
    flat = np.empty(spec.nbytes, dtype=np.uint8)
    read_payload_into(spec, flat)
    return flat.view(spec.dtype).reshape(spec.shape, order=order)


def read_payload_into(spec: ArraySpec, out: np.ndarray) -> None:
    """Read the array's raw payload bytes from its file into the C-contiguous ``out`` of
    exactly ``spec.nbytes`` bytes (``preadv``: one copy out of the page cache, thread-safe)."""
    view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
    if len(view) != spec.nbytes:
        raise ValueError(f"buffer of {len(view)} bytes for a {spec.nbytes}-byte payload")
    fd = os.open(spec.path, os.O_RDONLY)
    try:
        while done < spec.nbytes:
            n = os.preadv(fd, [view[done:]], spec.offset + done)
            if n <= 0:
                raise CheckpointError(f"{spec.path}: file ends inside the array payload")
            done += n
    finally:
        os.close(fd)


def read_tensor_file(path: str | os.PathLike) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Parse and memory-map one tensor file: an array, or ``(weight, scales)`` if quantized."""
    spec = parse_tensor_file(path)
    if isinstance(spec, QuantizedSpec):
        return read_array(spec.weight), read_array(spec.scales)
    return read_array(spec)


# =============================================================================================
# Reading: a symbolic pickle interpreter
# =============================================================================================
#
# The interpreter keeps pickle's two data structures -- the *stack* and the *memo* (a table
# of earlier values that BINGET can fetch again) -- but its values are inert:
#
#   str / int / bool / None / tuple    ordinary Python values, built from the opcodes
#   _Global                            "the callable/class X.Y" (only allow-listed names)
#   _Bytes                             "N bytes at file offset O" (contents not read)
#   dict                               a dictionary with string keys
#   _Dtype / _Array / _Quantized       the objects the recognised calls produce
#
# REDUCE (call), NEWOBJ (instantiate) and BUILD (set state) check that their operands have
# exactly the expected shape and produce the next stand-in; nothing is ever imported or
# called.

# Limits that keep hostile files from exhausting memory or time.  Real tensor files use
# ~120 opcodes, strings of < 30 characters and a stack depth of ~10.
_MAX_STRING = 1 << 20
_MAX_STACK = 10_000
_MAX_MEMO = 10_000
_MAX_OPCODES = 100_000
_MAX_NDIM = 64
_SMALL_BYTES = 64  # bytes objects up to this size are read (to recognise b'b'); larger skipped

# Every global the recognised forms mention, mapped to its role.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("ml_dtypes", "bfloat16"): "bfloat16",
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
    ("__main__", "QuantizedWeight8bit"): "QuantizedWeight8bit",
    ("model", "QuantizedWeight8bit"): "QuantizedWeight8bit",
}

_OPCODE_NAMES = {op.code.encode("latin-1"): op.name for op in pickletools.opcodes}


@dataclass(frozen=True)
class _Global:
    role: str  # a value of _ALLOWED_GLOBALS
    qualname: str  # "module.name", for messages


@dataclass(frozen=True)
class _Bytes:
    offset: int  # file offset of the first payload byte
    length: int
    value: bytes | None = None  # the contents, if small (or decoded from latin-1 text)
    inline: bool = False  # True: ``value`` is the payload; the file holds it as text


class _Dtype:
    """``numpy.dtype(code, False, True)``; becomes usable once BUILD gives it its state."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.built = False


class _Array:
    """An ndarray: from ``_reconstruct`` (then BUILD) or complete from ``_frombuffer``."""

    def __init__(self) -> None:
        self.layout: tuple[tuple[int, ...], np.dtype, bool, _Bytes] | None = None


class _Quantized:
    """``QuantizedWeight8bit()``; BUILD supplies its weight and scales."""

    def __init__(self) -> None:
        self.spec: QuantizedSpec | None = None


_MARK_OBJ = object()  # what the MARK opcode pushes


class _Interpreter:
    """Walks one pickle stream, reading the file incrementally."""

    def __init__(self, f: BinaryIO, path: str, file_size: int):
        self.f, self.path, self.file_size = f, path, file_size
        self.pos = 0  # offset of the next unread byte
        self.op_pos = 0  # offset of the opcode being executed (for messages)
        self.stack: list = []
        self.memo: dict[int, object] = {}
        self.dispatch = self._dispatch_table()

    # ---- driver ------------------------------------------------------------------------------

    def run(self) -> ArraySpec | QuantizedSpec:
        """Execute the stream up to STOP and return what it describes."""
        if self.file_size == 0:
            raise self.error("file is empty")
        if self.read(1) != Op.PROTO or not 2 <= self.read(1)[0] <= 5:
            raise self.error("not a pickle of protocol 2-5 (no PROTO opcode at the start)")
        for _ in range(_MAX_OPCODES):
            self.op_pos = self.pos
            code = self.read(1)
            if code == Op.STOP:
                return self.finish()
            handler = self.dispatch.get(code)
            if handler is None:
                name = _OPCODE_NAMES.get(code, "not a pickle opcode")
                if code in (Op.NEXT_BUFFER, Op.READONLY_BUFFER):
                    name += "; out-of-band buffers are not supported"
                raise self.error(f"unsupported opcode {code!r} ({name})")
            handler()
            if len(self.stack) > _MAX_STACK:
                raise self.error(f"stack grew beyond {_MAX_STACK} items")
        raise self.error(f"more than {_MAX_OPCODES} opcodes")

    def finish(self) -> ArraySpec | QuantizedSpec:
        """STOP: the stack must hold exactly the finished result, and the file must end."""
        if self.pos != self.file_size:
            raise self.error(f"{self.file_size - self.pos} trailing bytes after STOP")
        if len(self.stack) != 1:
            raise self.error(f"STOP with {len(self.stack)} items on the stack instead of 1")
        result = self.stack[0]
        if isinstance(result, _Array) and result.layout is not None:
            return self.array_spec(result)
        if isinstance(result, _Quantized) and result.spec is not None:
            return result.spec
        raise self.error(f"the pickle describes {_describe(result)}, not an array")

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message} (opcode at byte {self.op_pos})")

    # ---- reading the file ---------------------------------------------------------------------

    def read(self, n: int) -> bytes:
        self.check_length(n)
        data = self.f.read(n)
        if len(data) != n:
            raise self.error("file is truncated")
        self.pos += n
        return data

    def check_length(self, n: int) -> None:
        if n > self.file_size - self.pos:
            raise self.error(
                f"length {n} runs past the end of the file ({self.file_size - self.pos} "
                "bytes left); the file is truncated or corrupt"
            )

    def read_uint(self, size: int) -> int:
        return int.from_bytes(self.read(size), "little")

    def read_line(self) -> str:
        """A newline-terminated name, as the text opcode GLOBAL uses."""
        line = bytearray()
        while (c := self.read(1)) != b"\n":
            line += c
            if len(line) > 1024:
                raise self.error("GLOBAL name longer than 1024 bytes")
        return line.decode("utf-8", "replace")

    # ---- stack helpers ------------------------------------------------------------------------

    def push(self, value: object) -> None:
        self.stack.append(value)

    def pop(self) -> object:
        if not self.stack or self.stack[-1] is _MARK_OBJ:
            raise self.error("stack underflow")
        return self.stack.pop()

    def pop_to_mark(self) -> list:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK_OBJ:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise self.error("no MARK on the stack")

    def pop_n(self, n: int) -> list:
        items = [self.pop() for _ in range(n)]
        return items[::-1]

    # ---- opcodes ------------------------------------------------------------------------------

    def _dispatch_table(self) -> dict:
        op = self
        return {
            Op.FRAME: op.frame,
            # memo
            Op.MEMOIZE: lambda: op.put(len(op.memo)),
            Op.BINPUT: lambda: op.put(op.read_uint(1)),
            Op.LONG_BINPUT: lambda: op.put(op.read_uint(4)),
            Op.BINGET: lambda: op.get(op.read_uint(1)),
            Op.LONG_BINGET: lambda: op.get(op.read_uint(4)),
            # constants
            Op.NONE: lambda: op.push(None),
            Op.NEWTRUE: lambda: op.push(True),
            Op.NEWFALSE: lambda: op.push(False),
            Op.BININT: lambda: op.push(int.from_bytes(op.read(4), "little", signed=True)),
            Op.BININT1: lambda: op.push(op.read_uint(1)),
            Op.BININT2: lambda: op.push(op.read_uint(2)),
            Op.LONG1: op.long1,
            Op.SHORT_BINUNICODE: lambda: op.unicode(op.read_uint(1)),
            Op.BINUNICODE: lambda: op.unicode(op.read_uint(4)),
            Op.BINUNICODE8: lambda: op.unicode(op.read_uint(8)),
            Op.SHORT_BINBYTES: lambda: op.bytes_(op.read_uint(1)),
            Op.BINBYTES: lambda: op.bytes_(op.read_uint(4)),
            Op.BINBYTES8: lambda: op.bytes_(op.read_uint(8)),
            Op.BYTEARRAY8: lambda: op.bytes_(op.read_uint(8)),
            # containers
            Op.MARK: lambda: op.push(_MARK_OBJ),
            Op.EMPTY_TUPLE: lambda: op.push(()),
            Op.TUPLE1: lambda: op.push(tuple(op.pop_n(1))),
            Op.TUPLE2: lambda: op.push(tuple(op.pop_n(2))),
            Op.TUPLE3: lambda: op.push(tuple(op.pop_n(3))),
            Op.TUPLE: lambda: op.push(tuple(op.pop_to_mark())),
            Op.EMPTY_DICT: lambda: op.push({}),
            Op.SETITEM: lambda: op.setitems(op.pop_n(2)),
            Op.SETITEMS: lambda: op.setitems(op.pop_to_mark()),
            # globals and object construction
            Op.GLOBAL: lambda: op.global_(op.read_line(), op.read_line()),
            Op.STACK_GLOBAL: op.stack_global,
            Op.REDUCE: op.reduce,
            Op.NEWOBJ: op.newobj,
            Op.BUILD: op.build,
        }

    def frame(self) -> None:
        # A frame only groups the following opcodes for buffered reading; we read
        # incrementally anyway, so it suffices to check that its length is plausible.
        self.check_length(self.read_uint(8))

    def put(self, index: int) -> None:
        if len(self.memo) >= _MAX_MEMO:
            raise self.error(f"memo grew beyond {_MAX_MEMO} entries")
        if not self.stack or self.stack[-1] is _MARK_OBJ:
            raise self.error("memoize with nothing on the stack")
        self.memo[index] = self.stack[-1]

    def get(self, index: int) -> None:
        if index not in self.memo:
            raise self.error(f"memo slot {index} is read before it was set")
        self.push(self.memo[index])

    def long1(self) -> None:
        n = self.read_uint(1)
        if n > 8:
            raise self.error(f"LONG1 integer of {n} bytes is implausibly large")
        self.push(int.from_bytes(self.read(n), "little", signed=True))

    def unicode(self, n: int) -> None:
        if n > _MAX_STRING:
            raise self.error(f"string of {n} bytes exceeds the {_MAX_STRING}-byte limit")
        try:
            self.push(self.read(n).decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError as e:
            raise self.error(f"invalid UTF-8 string: {e}") from None

    def bytes_(self, n: int) -> None:
        offset = self.pos
        if n <= _SMALL_BYTES:
            self.push(_Bytes(offset, n, self.read(n)))
            return
        self.check_length(n)
        self.f.seek(n, os.SEEK_CUR)  # skip the payload: only its location matters
        self.pos += n
        self.push(_Bytes(offset, n))

    def setitems(self, items: list) -> None:
        if len(items) % 2:
            raise self.error("SETITEMS with an odd number of items")
        target = self.pop()
        if not isinstance(target, dict):
            raise self.error(f"SETITEM(S) on {_describe(target)}, not a dict")
        for key, value in zip(items[::2], items[1::2], strict=True):
            if not isinstance(key, str) or key in target:
                raise self.error(f"bad or repeated dict key {_describe(key)}")
            target[key] = value
        self.push(target)

    def global_(self, module: str, name: str) -> None:
        role = _ALLOWED_GLOBALS.get((module, name))
        if role is None:
            raise self.error(f"forbidden global {module}.{name}")
        self.push(_Global(role, f"{module}.{name}"))

    def stack_global(self) -> None:
        module, name = self.pop_n(2)
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.error("STACK_GLOBAL operands are not strings")
        self.global_(module, name)

    # ---- the recognised calls -----------------------------------------------------------------

    def reduce(self) -> None:
        """``callable(*args)`` -- only the recognised calls are accepted."""
        args = self.pop()
        func = self.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.error(f"REDUCE of {_describe(func)} with {_describe(args)}")
        recognise = {
            "_reconstruct": self.reduce_reconstruct,
            "dtype": self.reduce_dtype,
            "_frombuffer": self.reduce_frombuffer,
            "encode": self.reduce_encode,
            "bytes": self.reduce_bytes,
        }.get(func.role)
        result = recognise(args) if recognise else None
        if result is None:
            raise self.error(f"unexpected call {func.qualname}{_describe(args)}")
        self.push(result)

    def reduce_reconstruct(self, args: tuple) -> _Array | None:
        """``_reconstruct(numpy.ndarray, (0,), b'b')``: an empty array awaiting BUILD."""
        if (
            len(args) == 3
            and _is_global(args[0], "ndarray")
            and _is_tuple_of(args[1], 1)
            and type(args[1][0]) is int
            and args[1][0] == 0
            and isinstance(args[2], _Bytes)
            and args[2].value == b"b"
        ):
            return _Array()
        return None

    def reduce_dtype(self, args: tuple) -> _Dtype | None:
        """``numpy.dtype(code, False, True)``: a dtype awaiting its BUILD state."""
        if len(args) != 3 or args[1] is not False or args[2] is not True:
            return None
        code = args[0]
        if _is_global(code, "bfloat16"):
            return _Dtype(BFLOAT16)
        if isinstance(code, str) and code in CODE_TO_DTYPE:
            return _Dtype(CODE_TO_DTYPE[code])
        if isinstance(code, str):
            raise self.error(f"unsupported dtype {code[:40]!r}")
        return None

    def reduce_frombuffer(self, args: tuple) -> _Array | None:
        """numpy at protocol 5: ``_frombuffer(bytes, dtype, shape, 'C' | 'F')``."""
        if len(args) == 5:
            raise self.error("axis-permuted ('K' order) arrays are not supported")
        if len(args) != 4 or args[3] not in ("C", "F"):
            return None
        array = _Array()
        array.layout = self.check_layout(args[2], args[1], args[3] == "F", args[0])
        return array

    def reduce_encode(self, args: tuple) -> _Bytes | None:
        """Protocol 2 stores bytes as ``_codecs.encode(text, 'latin1')``; decode the text."""
        if len(args) != 2 or not isinstance(args[0], str) or args[1] != "latin1":
            return None
        try:
            data = args[0].encode("latin-1")
        except UnicodeEncodeError:
            raise self.error("latin-1 payload text contains characters above 255") from None
        return _Bytes(-1, len(data), data, inline=True)

    def reduce_bytes(self, args: tuple) -> _Bytes | None:
        """Protocol 2 stores an empty payload as ``bytes()``."""
        return _Bytes(-1, 0, b"", inline=True) if args == () else None

    def newobj(self) -> None:
        """``cls.__new__(cls)`` -- only for ``QuantizedWeight8bit`` with no arguments."""
        args = self.pop()
        cls = self.pop()
        if not _is_global(cls, "QuantizedWeight8bit") or args != ():
            raise self.error(f"NEWOBJ of {_describe(cls)} with {_describe(args)}")
        self.push(_Quantized())

    def build(self) -> None:
        """``obj.__setstate__(state)`` for a fresh dtype, array or QuantizedWeight8bit."""
        state = self.pop()
        obj = self.pop()
        if isinstance(obj, _Dtype) and not obj.built:
            self.check_dtype_state(obj.dtype, state)
            obj.built = True
        elif isinstance(obj, _Array) and obj.layout is None:
            if not (_is_tuple_of(state, 5) and state[0] == 1 and type(state[0]) is int):
                raise self.error(f"ndarray state {_describe(state)} is not (1, shape, ...)")
            _, shape, dtype, fortran, data = state
            if not isinstance(fortran, bool):
                raise self.error("ndarray state: is_fortran is not a bool")
            obj.layout = self.check_layout(shape, dtype, fortran, data)
        elif isinstance(obj, _Quantized) and obj.spec is None:
            obj.spec = self.check_quantized_state(state)
        else:
            raise self.error(f"BUILD of {_describe(obj)} is not allowed")
        self.push(obj)

    # ---- checks on the recognised objects ----------------------------------------------------

    def check_dtype_state(self, dtype: np.dtype, state: object) -> None:
        """``(3, byteorder, None, None, None, elsize, alignment, flags)``."""
        if not _is_tuple_of(state, 8) or state[0] != 3 or state[2:5] != (None, None, None):
            raise self.error(f"dtype state {_describe(state)} is not a plain version-3 state")
        byteorder, elsize, alignment, flags = state[1], *state[5:]
        expected = "|" if dtype.itemsize == 1 else "<"
        if byteorder != expected:
            raise self.error(f"dtype {dtype.name} with byte order {_describe(byteorder)}")
        sizes = (elsize, alignment)
        if not all(type(v) is int for v in (elsize, alignment, flags)) or sizes not in (
            (-1, -1),
            (dtype.itemsize, dtype.alignment),
        ):
            raise self.error(f"dtype {dtype.name} with inconsistent state {_describe(state)}")

    def check_layout(
        self, shape: object, dtype: object, fortran: bool, data: object
    ) -> tuple[tuple[int, ...], np.dtype, bool, _Bytes]:
        """Validate (shape, dtype, fortran, payload) and return them."""
        if not (
            isinstance(shape, tuple)
            and len(shape) <= _MAX_NDIM
            and all(type(d) is int and d >= 0 for d in shape)
        ):
            raise self.error(f"array shape {_describe(shape)} is not a tuple of dims >= 0")
        if not isinstance(dtype, _Dtype) or not dtype.built:
            raise self.error(f"array dtype is {_describe(dtype)}, not a numpy dtype")
        if not isinstance(data, _Bytes):
            raise self.error(f"array payload is {_describe(data)}, not bytes")
        expected = math.prod(shape) * dtype.dtype.itemsize
        if data.length != expected:
            raise self.error(
                f"array {shape} {dtype.dtype.name} needs {expected} bytes, "
                f"payload has {data.length}"
            )
        return shape, dtype.dtype, fortran, data

    def check_quantized_state(self, state: object) -> QuantizedSpec:
        if not isinstance(state, dict) or set(state) != {"weight", "scales"}:
            raise self.error(
                f"QuantizedWeight8bit state {_describe(state)} is not "
                "{'weight': ..., 'scales': ...}"
            )
        for key, value in state.items():
            if not isinstance(value, _Array) or value.layout is None:
                raise self.error(f"QuantizedWeight8bit.{key} is {_describe(value)}")
        spec = QuantizedSpec(self.array_spec(state["weight"]), self.array_spec(state["scales"]))
        if spec.weight.dtype != np.int8 or spec.scales.dtype.name not in FLOAT_DTYPES:
            raise self.error(
                f"QuantizedWeight8bit with weight {spec.weight.dtype} / scales "
                f"{spec.scales.dtype} (expected int8 / one of {FLOAT_DTYPES})"
            )
        problem = quantized_shape_problem(spec.weight.shape, spec.scales.shape)
        if problem:
            raise self.error(f"QuantizedWeight8bit: {problem}")
        return spec

    def array_spec(self, array: _Array) -> ArraySpec:
        shape, dtype, fortran, data = array.layout
        inline = data.value if data.inline else None
        return ArraySpec(self.path, data.offset, shape, dtype, fortran, inline)


def _is_global(value: object, role: str) -> bool:
    return isinstance(value, _Global) and value.role == role


def _is_tuple_of(value: object, n: int) -> bool:
    return isinstance(value, tuple) and len(value) == n


def _describe(value: object) -> str:
    """A short, non-recursive description of a stand-in value for error messages."""
    if isinstance(value, (bool, int, type(None))):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, tuple):
        inner = ", ".join(
            _describe(v) if isinstance(v, (bool, int, str, type(None))) else type(v).__name__
            for v in value[:8]
        )
        return f"({inner}{', ...' if len(value) > 8 else ''})"
    if isinstance(value, _Global):
        return f"global {value.qualname}"
    if isinstance(value, _Bytes):
        return f"{value.length} bytes"
    if isinstance(value, dict):
        return f"dict with keys {sorted(value)[:8]}"
    return {_Dtype: "a numpy dtype", _Array: "an ndarray", _Quantized: "a QuantizedWeight8bit"}.get(
        type(value), type(value).__name__
    )
