"""Two processes × 4 CPU devices under jax.distributed (gloo) == one process: logits, KV
decode and ``Generator``'s tokens.

``launch_local`` (tests/multihost_worker.py) starts two workers on 127.0.0.1; each joins the job,
loads the reference tiny checkpoint onto the global 8-device mesh (reading only its own
devices' slices of the files), runs the forward and a KV-memory decode and gathers the
logits. They must equal the single-process logits. A hung or failed worker is killed.
"""

import json

import numpy as np
import pytest
from conftest import TINY
from multihost_worker import ReadLog, launch_local, run_checkpoint, run_processes

from grok_flax import GrokConfig
from grok_flax.checkpoint import load_checkpoint
from grok_flax.scale.mesh import make_mesh

pytestmark = pytest.mark.multihost

CASE = TINY
TIMEOUT_S = 240


@pytest.mark.parametrize(
    "mesh,axis_types", [("data=1,model=8", "auto"), ("data=2,model=4", "explicit")]
)
def test_two_processes_equal_one(tmp_path, mesh, axis_types):
    out = tmp_path / "out"
    launch_local(
        [
            "--checkpoint",
            str(CASE / "checkpoints"),
            "--meta",
            str(CASE / "meta.json"),
            "--mesh",
            mesh,
            "--axis-types",
            axis_types,
            "--out",
            str(out),
        ],
        num_processes=2,
        local_devices=4,
        timeout=TIMEOUT_S,
    )
    reports = [json.loads((out / f"process_{i}.json").read_text()) for i in range(2)]
    for i, r in enumerate(reports):
        assert r["process"] == i and r["processes"] == 2
        assert r["local_devices"] == 4 and r["global_devices"] == 8
    # each process read only its own devices' slices: about half of the checkpoint each
    # (the tensors split over the mesh), all of it between them
    total = reports[0]["checkpoint_file_bytes"]
    read = [r["bytes_read"] for r in reports]
    assert all(0.3 * total < b < 0.7 * total for b in read), (read, total)
    assert sum(read) >= 0.95 * total

    meta = json.loads((CASE / "meta.json").read_text())
    cfg = GrokConfig.from_reference_meta(meta, compute_dtype="float32")
    single = load_checkpoint(CASE / "checkpoints", cfg, progress=False)
    want = run_checkpoint(single, np.asarray(meta["tokens"], np.int32), make_mesh(1, 1))
    for i in range(2):
        got = np.load(out / f"logits_{i}.npz")
        assert set(got.files) == set(want)
        for name in want:
            if name.startswith("generated"):  # Generator on 2 processes: the same tokens
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"process {i}")
            else:
                np.testing.assert_allclose(
                    got[name], want[name], rtol=2e-4, atol=2e-4, err_msg=f"process {i}: {name}"
                )
    assert len(want["generated_greedy"]) == 8


def test_workers_output_is_read_while_they_run():
    """A worker that prints more than a pipe holds (64 KiB) must not block: its output is
    drained as it comes, and all of it is kept."""
    import sys

    code = "import sys; sys.stdout.write('x' * 1_000_000); sys.stdout.flush()"
    results = run_processes([[sys.executable, "-c", code]] * 2, timeout=60)
    assert [len(r.stdout) for r in results] == [1_000_000, 1_000_000]
    with pytest.raises(RuntimeError, match=r"process 0 \(rc 3\) ---\nboom"):
        run_processes(
            [[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]], timeout=60
        )


def test_read_log_is_undone(tmp_path):
    """ReadLog counts what the loader reads while active and puts the loader back after."""
    from grok_flax.checkpoint import loader

    original = loader._read_into
    meta = json.loads((CASE / "meta.json").read_text())
    cfg = GrokConfig.from_reference_meta(meta, compute_dtype="float32")
    with ReadLog() as log:
        assert loader._read_into is not original
        load_checkpoint(CASE / "checkpoints", cfg, progress=False)
    assert loader._read_into is original
    total = sum(f.stat().st_size for f in (CASE / "checkpoints" / "ckpt-0").iterdir())
    assert 0.9 * total < log.bytes <= total
