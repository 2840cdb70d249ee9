"""Shared by the reader's and the writer's tests: sample arrays, byte-exact comparison, and
a test-only unpickler of files the tests wrote themselves (in a child process)."""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.float32, np.float16, BF16, np.int8, np.int32, np.float64]


def sample(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(shape) * 50).astype(dtype)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.asarray(a).tobytes(order="C") == np.asarray(b).tobytes(order="C")


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

    out = subprocess.run(
        [sys.executable, "-c", _UNPICKLE_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    d = json.loads(out.stdout)

    def dec(e):
        dtype = np.dtype(ml_dtypes.bfloat16) if e["dtype"] == "bfloat16" else np.dtype(e["dtype"])
        return np.frombuffer(base64.b64decode(e["data"]), dtype).reshape(e["shape"])

    if "array" in d:
        return dec(d["array"])
    return types.SimpleNamespace(cls=d["class"], weight=dec(d["weight"]), scales=dec(d["scales"]))


# ---- the reference checkpoint written by the original code -----------------------------------
