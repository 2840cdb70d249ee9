"""Tests of grok_flax.checkpoint.reader: tensor files parsed without running their pickle —
the reference checkpoint, numpy 2 pickles, and every kind of hostile or damaged stream
refused.

Test code (never the module) uses ``pickle`` on files the tests themselves wrote, to prove
the format is standard.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from checkpoint_files import BF16, assert_same, sample, unpickle_own_file

from grok_flax.checkpoint import reader
from grok_flax.checkpoint.reader import parse_tensor_file, read_array, read_tensor_file
from grok_flax.checkpoint.release import ArraySpec, CheckpointError, QuantizedSpec
from grok_flax.checkpoint.writer import write_array_file, write_quantized_file


def test_reference_files_parse(reference_ckpt):
    files = sorted(reference_ckpt.glob("tensor*"))
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


@pytest.mark.slow
def test_reference_values_match_independent_parse(reference_ckpt, standin_qw):
    for f in sorted(reference_ckpt.glob("tensor*")):
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


def test_reference_payload_offsets_match_pickletools(reference_ckpt):
    """The spec's offset is where pickletools sees the BINBYTES argument start."""
    f = reference_ckpt / "tensor00003_000"
    data = f.read_bytes()
    payloads = [
        (pos, arg)
        for op, arg, pos in pickletools.genops(data)
        if op.name == "BINBYTES" or (op.name == "SHORT_BINBYTES" and len(arg) > 1)
    ]
    spec = parse_tensor_file(f)
    for (pos, arg), part in zip(payloads, (spec.weight, spec.scales), strict=True):
        assert part.offset == pos + 5 and part.nbytes == len(arg)
        assert read_array(part).tobytes() == arg


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
            _reconstruct(),
            np.ndarray,
            (0,),
            b"b",
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
            _reconstruct(),
            np.ndarray,
            (0,),
            b"b",
            state=(1, (dtype_call,), np.dtype("f4"), False, b"\0" * 4),
        ),
        "nested REDUCE as payload": Reduces(
            _reconstruct(),
            np.ndarray,
            (0,),
            b"b",
            state=(1, (1,), np.dtype("f4"), False, Reduces(bytes, 4)),
        ),
        "unbuilt dtype": Reduces(
            _reconstruct(),
            np.ndarray,
            (0,),
            b"b",
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
            _reconstruct(),
            np.ndarray,
            (0,),
            b"b",
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
        "huge BINBYTES8": (
            HEADER + _OPS["BINBYTES8"] + struct.pack("<Q", huge) + b"x.",
            "past the end",
        ),
        "huge BINUNICODE": (HEADER + _OPS["BINUNICODE"] + struct.pack("<I", 2**31) + b".", "limit"),
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
        "too many opcodes": (HEADER + (_OPS["FRAME"] + bytes(8)) * 100_001 + b".", "opcodes"),
        "deep nesting": (
            HEADER + _OPS["BININT1"] + b"\0" + _OPS["TUPLE1"] * 50_000 + b".",
            "not an array",
        ),
        "GLOBAL forbidden": (HEADER + b"cos\nsystem\n.", "forbidden global os.system"),
        "GLOBAL unterminated": (HEADER + b"c" + b"a" * 2000, "GLOBAL name"),
        "QuantizedWeight8bit elsewhere": (
            HEADER + b"cevil\nQuantizedWeight8bit\n).",
            "forbidden global",
        ),
        "NEWOBJ with args": (HEADER + b"c__main__\nQuantizedWeight8bit\nK\x01\x85\x81.", "NEWOBJ"),
        "BUILD with junk state": (
            HEADER + b"c__main__\nQuantizedWeight8bit\n)\x81N" + _OPS["BUILD"] + b".",
            "state",
        ),
        "unbuilt QuantizedWeight8bit": (
            HEADER + b"c__main__\nQuantizedWeight8bit\n)\x81.",
            "not an array",
        ),
    }
    for name, (data, match) in cases.items():
        expect_rejected(tmp_path / name.replace(" ", "_"), data, match)


def test_patched_valid_streams_are_refused(tmp_path):
    write_array_file(tmp_path / "good", sample((2, 3), np.float32))
    good = (tmp_path / "good").read_bytes()
    assert b"\x8c\x01<" in good and b"K\x02K\x03\x86" in good and b"\x8c\x02f4" in good
    cases = {
        "big-endian": (good.replace(b"\x8c\x01<", b"\x8c\x01>"), "byte order"),
        "negative dim": (good.replace(b"K\x02K\x03\x86", b"J\xff\xff\xff\xffK\x03\x86"), "dims"),
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


def test_checkpoint_package_never_unpickles():
    files = sorted(Path(reader.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"reader.py", "writer.py", "loader.py", "release.py"}
    for f in files:
        source = f.read_text()
        for forbidden in (
            "pickle.load",
            ".loads(",
            "Unpickler",
            "import pickle\n",
            "eval(",
            "exec(",
        ):
            assert forbidden not in source, (f.name, forbidden)
