"""Tests for grok_flax.checkpoint.reader / writer: the pickle-free reader and the writer of
Grok-1 tensor files.

Test code (never the module) uses ``pickle`` on files that the tests themselves wrote, or on
the project's own reference checkpoint, to prove the format is standard.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
from functools import partial
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from grok_flax.checkpoint import reader, writer
from grok_flax.checkpoint.reader import parse_tensor_file, read_array, read_tensor_file
from grok_flax.checkpoint.release import ArraySpec, CheckpointError, QuantizedSpec, tensor_file_name
from grok_flax.checkpoint.writer import write_array_file, write_quantized_file

REFERENCE = Path(__file__).resolve().parent / "data" / "grok1-tiny" / "checkpoints" / "ckpt-0"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference checkpoint not found at {REFERENCE}"
)

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.float32, np.float16, BF16, np.int8, np.int32, np.float64]


def sample(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(shape) * 50).astype(dtype)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.asarray(a).tobytes(order="C") == np.asarray(b).tobytes(order="C")


@pytest.fixture
def standin_qw(monkeypatch):
    """A stand-in ``__main__.QuantizedWeight8bit`` so that test-only pickle calls work."""
    cls = type("QuantizedWeight8bit", (), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "QuantizedWeight8bit", cls, raising=False)
    return cls


_UNPICKLE_CHILD = r"""
import base64, json, pickle, sys, __main__
import numpy as np
__main__.QuantizedWeight8bit = type("QuantizedWeight8bit", (), {"__module__": "__main__"})
obj = pickle.loads(open(sys.argv[1], "rb").read())
def enc(a):
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode()}
if isinstance(obj, np.ndarray):
    out = {"array": enc(obj)}
else:
    out = {"class": type(obj).__module__ + "." + type(obj).__name__,
           "weight": enc(obj.weight), "scales": enc(obj.scales)}
print(json.dumps(out))
"""


def unpickle_own_file(path: Path):
    """Test-only: load a file this test suite wrote (or the project's reference data) with
    the standard unpickler — in a child process, because unpickling a bfloat16 dtype rewrites
    the process-wide ``ml_dtypes.bfloat16`` dtype's flags, after which JAX refuses bfloat16
    for the rest of the test session. A QuantizedWeight8bit comes back as a namespace with
    ``weight``/``scales`` and ``cls`` (its pickled class name)."""
    import base64
    import json
    import subprocess
    import types

    out = subprocess.run([sys.executable, "-c", _UNPICKLE_CHILD, str(path)],
                         capture_output=True, text=True, check=True)
    d = json.loads(out.stdout)

    def dec(e):
        dtype = np.dtype(ml_dtypes.bfloat16) if e["dtype"] == "bfloat16" else np.dtype(e["dtype"])
        return np.frombuffer(base64.b64decode(e["data"]), dtype).reshape(e["shape"])

    if "array" in d:
        return dec(d["array"])
    return types.SimpleNamespace(cls=d["class"], weight=dec(d["weight"]),
                                 scales=dec(d["scales"]))


# ---- the reference checkpoint written by the original code -----------------------------------


@needs_reference
def test_reference_files_parse():
    files = sorted(REFERENCE.glob("tensor*"))
    assert len(files) == 38
    specs = [parse_tensor_file(f) for f in files]
    emb = specs[0]
    assert isinstance(emb, ArraySpec)
    assert (emb.shape, emb.dtype, emb.fortran_order) == ((1024, 128), np.float32, False)
    assert emb.nbytes == 1024 * 128 * 4 and emb.offset == 148
    moe = specs[3]
    assert isinstance(moe, QuantizedSpec)
    assert (moe.weight.shape, moe.weight.dtype) == ((8, 216, 128), np.int8)
    assert (moe.scales.shape, moe.scales.dtype) == ((8, 8, 128), BF16)
    assert (moe.shape, moe.dtype) == ((8, 216, 128), np.int8)
    assert sum(isinstance(s, QuantizedSpec) for s in specs) == 21


@needs_reference
def test_reference_values_match_independent_parse(standin_qw):
    for f in sorted(REFERENCE.glob("tensor*")):
        expected = unpickle_own_file(f)
        spec = parse_tensor_file(f)
        got = read_tensor_file(f)
        if isinstance(spec, QuantizedSpec):
            assert expected.cls == "__main__.QuantizedWeight8bit"
            assert_same(got[0], expected.weight)
            assert_same(got[1], expected.scales)
            assert_same(read_array(spec.scales, mmap=False), expected.scales)
        else:
            assert isinstance(got, np.memmap) and not got.flags.writeable
            assert_same(got, expected)
            assert_same(read_array(spec, mmap=False), expected)


@needs_reference
def test_reference_payload_offsets_match_pickletools():
    """The spec's offset is where pickletools sees the BINBYTES argument start."""
    f = REFERENCE / "tensor00003_000"
    data = f.read_bytes()
    payloads = [
        (pos, arg) for op, arg, pos in pickletools.genops(data)
        if op.name == "BINBYTES" or (op.name == "SHORT_BINBYTES" and len(arg) > 1)
    ]
    spec = parse_tensor_file(f)
    for (pos, arg), part in zip(payloads, (spec.weight, spec.scales), strict=True):
        assert part.offset == pos + 5 and part.nbytes == len(arg)
        assert read_array(part).tobytes() == arg


@needs_reference
def test_rewriting_reference_files_is_byte_identical(tmp_path):
    for f in sorted(REFERENCE.glob("tensor*")):
        spec = parse_tensor_file(f)
        out = tmp_path / f.name
        if isinstance(spec, QuantizedSpec):
            write_quantized_file(out, read_array(spec.weight), read_array(spec.scales))
        else:
            write_array_file(out, read_array(spec))
        assert out.read_bytes() == f.read_bytes(), f.name


# ---- round trips through the writer -----------------------------------------------------------

SHAPES = [(3, 5), (7,), (), (0,), (2, 0, 3), (2, 3, 4)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype(tmp_path, dtype):
    for i, shape in enumerate(SHAPES):
        a = sample(shape, dtype, seed=i)
        path = tmp_path / tensor_file_name(i)
        write_array_file(path, a)
        spec = parse_tensor_file(path)
        assert isinstance(spec, ArraySpec)
        assert (spec.shape, spec.dtype, spec.fortran_order) == (shape, np.dtype(dtype), False)
        assert spec.nbytes == a.nbytes and spec.path == str(path)
        assert_same(read_array(spec), a)
        copy = read_array(spec, mmap=False)
        assert_same(copy, a)
        assert copy.flags.writeable and not isinstance(copy, np.memmap)
        assert_same(read_tensor_file(path), a)


def test_round_trip_fortran_and_non_contiguous(tmp_path):
    f_order = np.asfortranarray(sample((4, 6, 3), np.float32))
    write_array_file(tmp_path / "f", f_order)
    spec = parse_tensor_file(tmp_path / "f")
    assert spec.fortran_order
    back = read_array(spec)
    assert back.flags.f_contiguous
    assert np.array_equal(back, f_order)
    assert np.array_equal(read_array(spec, mmap=False), f_order)

    strided = sample((6, 8), BF16)[::2, 1::3]
    write_array_file(tmp_path / "s", strided)
    spec = parse_tensor_file(tmp_path / "s")
    assert not spec.fortran_order
    assert_same(read_array(spec), np.ascontiguousarray(strided))


def test_large_payload_is_streamed_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_WRITE_CHUNK", 1000)
    for a in (sample((300, 70), np.float32), sample((300, 140), np.float32)[:, ::2]):
        write_array_file(tmp_path / "big", a)  # > 64 KiB: bypasses pickle framing
        assert_same(read_tensor_file(tmp_path / "big"), np.ascontiguousarray(a))


def test_round_trip_quantized(tmp_path):
    weight = sample((8, 216, 128), np.int8)
    scales = sample((8, 8, 128), BF16)
    path = tmp_path / "q"
    write_quantized_file(path, weight, scales)
    spec = parse_tensor_file(path)
    assert isinstance(spec, QuantizedSpec)
    assert (spec.shape, spec.dtype, spec.scales.dtype) == (weight.shape, np.int8, BF16)
    w, s = read_tensor_file(path)
    assert_same(w, weight)
    assert_same(s, scales)


def test_written_files_are_standard_pickles(tmp_path, standin_qw):
    for dtype in DTYPES:
        a = sample((5, 3), dtype)
        write_array_file(tmp_path / "a", a)
        assert_same(unpickle_own_file(tmp_path / "a"), a)
    a = np.asfortranarray(sample((5, 3), np.float16))
    write_array_file(tmp_path / "f", a)
    assert_same(unpickle_own_file(tmp_path / "f"), a)
    weight, scales = sample((64, 32), np.int8), sample((4, 32), np.float32)
    write_quantized_file(tmp_path / "q", weight, scales)
    q = unpickle_own_file(tmp_path / "q")
    assert q.cls == "__main__.QuantizedWeight8bit"
    assert_same(q.weight, weight)
    assert_same(q.scales, scales)


def pickler_bytes(save, **options) -> bytes:
    buf = io.BytesIO()
    writer._write_pickle(buf, save, **options)
    return buf.getvalue()


def numpy2_options() -> dict:
    """What numpy 2 writes: ``numpy._core``, and its bfloat16 dtype flags (which vary at run
    time: loading a numpy 1.26 bfloat16 pickle overwrites them)."""
    return {"numpy_core": "numpy._core", "bfloat16_flags": BF16.__reduce__()[2][7]}


@pytest.mark.parametrize(
    "array",
    [
        sample((3, 4), np.float32),
        sample((), BF16),
        sample((0, 5), np.int8),
        np.asfortranarray(sample((3, 4, 5), np.float64)),
        sample((9, 9), np.int32)[::2, ::3],
        sample((130, 130), np.float32),  # payload > 64 KiB, outside any frame
        sample((20_000,), np.float16),  # payload just under 64 KiB, inside the frame
    ],
    ids=["f32", "bf16-0d", "empty", "fortran", "strided", "large", "frame-sized"],
)
def test_writer_matches_the_live_pickler(array):
    """With numpy 2's module name and flags, our bytes equal ``pickle.dumps(array, 4)``."""
    ours = pickler_bytes(lambda w: w.save_array(array), **numpy2_options())
    assert ours == pickle.dumps(array, 4)


def test_quantized_writer_matches_the_live_pickler(standin_qw):
    # two ~40 KiB payloads: the pickler closes the first frame once it passes 64 KiB
    for shape, groups in (((640, 64), 8), ((40_000, 1), 1), ((8, 12, 16), 3)):
        weight = sample(shape, np.int8)
        scales = sample((*shape[:-2], groups, shape[-1]), BF16)
        obj = standin_qw()
        obj.weight, obj.scales = weight, scales
        save = partial(writer._PickleWriter.save_quantized, weight=weight, scales=scales)
        assert pickler_bytes(save, **numpy2_options()) == pickle.dumps(obj, 4)


# ---- pickles written by numpy 2 itself --------------------------------------------------------

NUMPY_ARRAYS = {
    "f32": sample((4, 3), np.float32),
    "bf16": sample((2, 5), BF16),
    "f16-fortran": np.asfortranarray(sample((3, 4, 2), np.float16)),
    "i8": sample((17,), np.int8),
    "i32-strided": sample((6, 6), np.int32)[::2],
    "f64-0d": np.array(2.5),
    "empty": np.zeros((0, 3), np.float32),
    "large": sample((200, 100), np.float32),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy2_pickles_parse(tmp_path, protocol):
    for name, a in NUMPY_ARRAYS.items():
        path = tmp_path / f"{name}-{protocol}"
        path.write_bytes(pickle.dumps(a, protocol=protocol))
        spec = parse_tensor_file(path)
        assert spec.shape == a.shape and spec.dtype == a.dtype, name
        assert_same(read_array(spec), a)
        assert_same(read_array(spec, mmap=False), a)
    readonly = sample((3, 3), np.float32)
    readonly.flags.writeable = False  # protocol 5 then stores BINBYTES, not BYTEARRAY8
    path = tmp_path / "readonly"
    path.write_bytes(pickle.dumps(readonly, protocol=protocol))
    assert_same(read_tensor_file(path), readonly)


def test_protocol2_payload_is_kept_inline(tmp_path):
    a = sample((3, 4), np.float32)
    (tmp_path / "p2").write_bytes(pickle.dumps(a, protocol=2))
    spec = parse_tensor_file(tmp_path / "p2")
    assert spec.inline_data == a.tobytes() and spec.offset == -1


def test_protocol5_unsupported_layouts(tmp_path):
    permuted = sample((2, 3, 4), np.float32).transpose(1, 0, 2)  # numpy writes order 'K'
    (tmp_path / "k").write_bytes(pickle.dumps(permuted, protocol=5))
    with pytest.raises(CheckpointError, match="axis-permuted"):
        parse_tensor_file(tmp_path / "k")
    buffers = []
    data = pickle.dumps(sample((3,), np.float32), protocol=5, buffer_callback=buffers.append)
    (tmp_path / "oob").write_bytes(data)
    with pytest.raises(CheckpointError, match="out-of-band"):
        parse_tensor_file(tmp_path / "oob")


# ---- hostile and broken files -----------------------------------------------------------------


def _reconstruct():
    """numpy's ``_reconstruct`` (under whichever module name this numpy uses)."""
    return np.ndarray.__reduce__(np.zeros(1))[0]


class Reduces:
    """Pickles as ``func(*args)``; pickling it never runs ``func``."""

    def __init__(self, func, *args, state=None):
        self.value = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.value


def expect_rejected(path: Path, data: bytes, match: str | None = None) -> CheckpointError:
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=match) as info:
        parse_tensor_file(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_code_execution_attempts_are_refused(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    attacks = {
        "os.system": Reduces(os.system, f"touch {marker}"),
        "builtins.eval": Reduces(eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Reduces(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": Reduces(getattr, int, "real"),
        "builtins.exec": Reduces(exec, f"open({str(marker)!r}, 'w')"),
    }
    for name, attack in attacks.items():
        err = expect_rejected(tmp_path / f"tensor_{name}", pickle.dumps(attack, protocol))
        assert "forbidden global" in str(err)
        # hidden inside an otherwise normal array state
        inner = Reduces(
            _reconstruct(), np.ndarray, (0,), b"b",
            state=(1, (1,), np.dtype("f4"), False, attack),
        )
        expect_rejected(tmp_path / f"nested_{name}", pickle.dumps(inner, protocol), "forbidden")
    assert not marker.exists()
    # sanity check: os.system is spelled posix.system in the stream
    err = expect_rejected(tmp_path / "x", pickle.dumps(attacks["os.system"], protocol))
    assert f"forbidden global {os.system.__module__}.system" in str(err)


def test_unexpected_calls_of_allowed_globals(tmp_path):
    dtype_call = Reduces(np.dtype, "f4", False, True)  # a REDUCE result, but no BUILD
    cases = {
        "nested REDUCE as shape": Reduces(
            _reconstruct(), np.ndarray, (0,), b"b",
            state=(1, (dtype_call,), np.dtype("f4"), False, b"\0" * 4),
        ),
        "nested REDUCE as payload": Reduces(
            _reconstruct(), np.ndarray, (0,), b"b",
            state=(1, (1,), np.dtype("f4"), False, Reduces(bytes, 4)),
        ),
        "unbuilt dtype": Reduces(
            _reconstruct(), np.ndarray, (0,), b"b",
            state=(1, (1,), dtype_call, False, b"\0" * 4),
        ),
        "odd _reconstruct args": Reduces(_reconstruct(), np.ndarray, (1,), b"b"),
        "dtype with odd state": Reduces(np.dtype, "f4", False, True, state=("evil",)),
        "bare dtype": np.dtype("f4"),
        "ndarray called": Reduces(np.ndarray, (3,)),
        "plain tuple": (1, 2, 3),
        "negative dim": Reduces(
            _reconstruct(), np.ndarray, (0,), b"b", state=(1, (-1,), np.dtype("f4"), False, b"")
        ),
        "payload size mismatch": Reduces(
            _reconstruct(), np.ndarray, (0,), b"b",
            state=(1, (2, 3), np.dtype("f4"), False, b"\0" * 20),
        ),
    }
    for name, obj in cases.items():
        expect_rejected(tmp_path / name.replace(" ", "_"), pickle.dumps(obj, 4))


def test_unsupported_dtypes_are_refused(tmp_path):
    cases = {
        "object": np.array([1, "a", None], dtype=object),
        "structured": np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]),
        "int64": np.zeros(3, np.int64),
        "bool": np.zeros(3, bool),
        "big-endian": np.zeros(3, ">f4"),
    }
    for name, a in cases.items():
        expect_rejected(tmp_path / name, pickle.dumps(a, 4), "dtype")


def test_truncated_files_are_refused(tmp_path):
    write_array_file(tmp_path / "good", sample((100, 200), np.float32))
    data = (tmp_path / "good").read_bytes()
    for cut in (0, 1, 2, 5, 11, 60, 150, len(data) // 2, len(data) - 2, len(data) - 1):
        expect_rejected(tmp_path / f"cut{cut}", data[:cut])
    write_quantized_file(tmp_path / "q", sample((64, 8), np.int8), sample((2, 8), BF16))
    data = (tmp_path / "q").read_bytes()
    for cut in range(0, len(data), 7):
        expect_rejected(tmp_path / f"qcut{cut}", data[:cut])


def test_trailing_bytes_are_refused(tmp_path):
    write_array_file(tmp_path / "good", sample((3,), np.float32))
    data = (tmp_path / "good").read_bytes()
    expect_rejected(tmp_path / "t1", data + b"\0", "trailing")
    expect_rejected(tmp_path / "t2", data + data, "trailing")


_OPS = {o.name: o.code.encode("latin-1") for o in pickletools.opcodes}
HEADER = _OPS["PROTO"] + b"\x04"


def test_hand_built_streams_are_refused(tmp_path):
    huge = 1 << 62
    cases = {
        "huge BINBYTES8": (HEADER + _OPS["BINBYTES8"] + struct.pack("<Q", huge) + b"x.",
                           "past the end"),
        "huge BINUNICODE": (HEADER + _OPS["BINUNICODE"] + struct.pack("<I", 2**31) + b".",
                            "limit"),
        "huge FRAME": (HEADER + _OPS["FRAME"] + struct.pack("<Q", huge) + b".", "past the end"),
        "memo slot unset": (HEADER + _OPS["BINGET"] + b"\x05.", "memo slot 5"),
        "memo slot unset (long)": (HEADER + _OPS["LONG_BINGET"] + b"\x07\0\0\0.", "memo slot 7"),
        "unknown opcode": (HEADER + b"\xff.", "unsupported opcode"),
        "list opcode": (HEADER + _OPS["EMPTY_LIST"] + b".", "EMPTY_LIST"),
        "stack underflow": (HEADER + _OPS["TUPLE2"] + b".", "underflow"),
        "empty stack at STOP": (HEADER + b".", "STOP"),
        "no PROTO": (b"N.", "protocol"),
        "protocol 0": (pickle.dumps(1.5, 0), "protocol"),
        "empty file": (b"", "empty"),
        "stack overflow": (HEADER + _OPS["NONE"] * 10_001 + b".", "stack"),
        "too many opcodes": (
            HEADER + (_OPS["FRAME"] + bytes(8)) * 100_001 + b".", "opcodes"),
        "deep nesting": (
            HEADER + _OPS["BININT1"] + b"\0" + _OPS["TUPLE1"] * 50_000 + b".", "not an array"),
        "GLOBAL forbidden": (HEADER + b"cos\nsystem\n.", "forbidden global os.system"),
        "GLOBAL unterminated": (HEADER + b"c" + b"a" * 2000, "GLOBAL name"),
        "QuantizedWeight8bit elsewhere": (
            HEADER + b"cevil\nQuantizedWeight8bit\n).", "forbidden global"),
        "NEWOBJ with args": (
            HEADER + b"c__main__\nQuantizedWeight8bit\nK\x01\x85\x81.", "NEWOBJ"),
        "BUILD with junk state": (
            HEADER + b"c__main__\nQuantizedWeight8bit\n)\x81N" + _OPS["BUILD"] + b".", "state"),
        "unbuilt QuantizedWeight8bit": (HEADER + b"c__main__\nQuantizedWeight8bit\n)\x81.",
                                        "not an array"),
    }
    for name, (data, match) in cases.items():
        expect_rejected(tmp_path / name.replace(" ", "_"), data, match)


def test_patched_valid_streams_are_refused(tmp_path):
    write_array_file(tmp_path / "good", sample((2, 3), np.float32))
    good = (tmp_path / "good").read_bytes()
    assert b"\x8c\x01<" in good and b"K\x02K\x03\x86" in good and b"\x8c\x02f4" in good
    cases = {
        "big-endian": (good.replace(b"\x8c\x01<", b"\x8c\x01>"), "byte order"),
        "negative dim": (good.replace(b"K\x02K\x03\x86", b"J\xff\xff\xff\xffK\x03\x86"),
                         "dims"),
        "wrong payload size": (good.replace(b"K\x02K\x03\x86", b"K\x02K\x04\x86"), "needs 32"),
        "object dtype": (good.replace(b"\x8c\x02f4", b"\x8c\x02O8"), "unsupported dtype 'O8'"),
        "int64 dtype": (good.replace(b"\x8c\x02f4", b"\x8c\x02i8"), "unsupported dtype"),
        "fortran flag not bool": (good.replace(b"\x89C\x18", b"K\x01C\x18"), "is_fortran"),
    }
    for name, (data, match) in cases.items():
        assert data != good, name
        expect_rejected(tmp_path / name.replace(" ", "_"), data, match)

    weight, scales = sample((8, 4), np.int8), sample((2, 4), BF16)
    write_quantized_file(tmp_path / "q", weight, scales)
    good = (tmp_path / "q").read_bytes()
    swapped = good.replace(b"weight", b"wXight")
    expect_rejected(tmp_path / "bad_keys", swapped, "QuantizedWeight8bit state")
    float_weight = good.replace(b"\x8c\x02i1", b"\x8c\x02f1")
    expect_rejected(tmp_path / "odd_weight_dtype", float_weight, "dtype")


def test_quantized_shape_and_dtype_checks(tmp_path, standin_qw):
    def dumped(weight, scales):
        obj = standin_qw()
        obj.weight, obj.scales = weight, scales
        return pickle.dumps(obj, 4)

    w = sample((8, 4), np.int8)
    expect_rejected(tmp_path / "a", dumped(w.astype(np.float32), sample((2, 4), BF16)), "int8")
    expect_rejected(tmp_path / "b", dumped(w, sample((3, 4), BF16)), "divisible")
    expect_rejected(tmp_path / "c", dumped(w, sample((2, 5), BF16)), "differ")
    expect_rejected(tmp_path / "d", dumped(w, sample((4,), BF16)), "rank")
    expect_rejected(tmp_path / "e", dumped(w, sample((2, 4), np.int8)), "scales")


# ---- writer behaviour -------------------------------------------------------------------------


def test_writer_rejects_unsupported_input(tmp_path):
    for bad in (np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, ">f4"),
                np.zeros(3, np.complex64), np.array(["a"], dtype=object)):
        with pytest.raises(ValueError):
            write_array_file(tmp_path / "x", bad)
    with pytest.raises(ValueError, match="int8"):
        write_quantized_file(tmp_path / "x", np.zeros((4, 2), np.float32), np.ones((1, 2)))
    with pytest.raises(ValueError, match="scales"):
        write_quantized_file(tmp_path / "x", np.zeros((4, 2), np.int8), np.ones((1, 2), "i4"))
    with pytest.raises(ValueError, match="divisible"):
        write_quantized_file(tmp_path / "x", np.zeros((4, 2), np.int8), np.ones((3, 2), "f4"))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "tensor00000_000"
    write_array_file(path, np.arange(3, dtype=np.float32))
    before = path.read_bytes()

    def exploding_chunks(array):
        yield np.zeros(10, np.uint8)
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_c_order_chunks", exploding_chunks)
    with pytest.raises(OSError, match="disk full"):
        write_array_file(path, np.zeros(100_000, np.float32))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_parsing_does_not_read_the_payload(tmp_path, monkeypatch):
    a = sample((512, 512), np.float32)  # 1 MiB
    write_array_file(tmp_path / "big", a)
    bytes_read = []

    class CountingFile(io.FileIO):
        def read(self, n=-1):
            data = super().read(n)
            bytes_read.append(len(data))
            return data

    monkeypatch.setattr(reader, "open", lambda path, mode: CountingFile(path, mode), raising=False)
    spec = parse_tensor_file(tmp_path / "big")
    monkeypatch.undo()
    assert sum(bytes_read) < 400 and spec.nbytes == a.nbytes
    assert_same(read_array(spec), a)


def test_tensor_file_name():
    assert tensor_file_name(3) == "tensor00003_000"
    assert tensor_file_name(12345, 7) == "tensor12345_007"
    with pytest.raises(ValueError):
        tensor_file_name(-1)


def test_checkpoint_package_never_unpickles():
    files = sorted(Path(reader.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"reader.py", "writer.py", "loader.py", "release.py"}
    for f in files:
        source = f.read_text()
        for forbidden in ("pickle.load", ".loads(", "Unpickler", "import pickle\n", "eval(",
                          "exec("):
            assert forbidden not in source, (f.name, forbidden)
