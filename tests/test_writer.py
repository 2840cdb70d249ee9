"""Tests of grok_flax.checkpoint.writer: tensor files written byte for byte as the original
code writes them (the reference checkpoint rewritten identically, the live pickler matched),
round trips of every dtype and layout, atomic writes.
"""

from __future__ import annotations

import io
import pickle
from functools import partial

import numpy as np
import pytest
from checkpoint_files import BF16, DTYPES, assert_same, sample, unpickle_own_file

from grok_flax.checkpoint import writer
from grok_flax.checkpoint.reader import parse_tensor_file, read_array, read_tensor_file
from grok_flax.checkpoint.release import ArraySpec, QuantizedSpec, tensor_file_name
from grok_flax.checkpoint.writer import write_array_file, write_quantized_file


def test_rewriting_reference_files_is_byte_identical(reference_ckpt, tmp_path):
    for f in sorted(reference_ckpt.glob("tensor*")):
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


def test_writer_rejects_unsupported_input(tmp_path):
    for bad in (
        np.zeros(3, np.int64),
        np.zeros(3, bool),
        np.zeros(3, ">f4"),
        np.zeros(3, np.complex64),
        np.array(["a"], dtype=object),
    ):
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


def test_tensor_file_name():
    assert tensor_file_name(3) == "tensor00003_000"
    assert tensor_file_name(12345, 7) == "tensor12345_007"
    with pytest.raises(ValueError):
        tensor_file_name(-1)
