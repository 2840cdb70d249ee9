"""The multi-process check the tests run: N processes on 127.0.0.1 under ``jax.distributed``.

``python tests/multihost_worker.py launch --checkpoint DIR --meta META --out OUT`` starts
``--num-processes`` workers (``--local-devices`` simulated CPU devices each, gloo
collectives). Each worker joins the job (``grok_flax.scale.distributed.initialize``), loads
the checkpoint onto the global mesh, reading only its own devices' slices (counted by
:class:`ReadLog`), runs :func:`run_checkpoint` and writes ``process_I.json`` (what it read)
and ``logits_I.npz``. Every worker's output is read while it runs, so a chatty worker never
blocks on a full pipe; if one fails or the timeout passes, every worker is killed.

Test machinery, not part of the package: a real job runs its own script on every host (see
docs/multihost.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_checkpoint(model, tokens: np.ndarray, mesh) -> dict[str, np.ndarray]:
    """Forward on ``tokens`` [B, T]; then the first T-1 tokens into a sharded KV memory and
    one decode step; then ``Generator`` on the mesh, greedy and sampled. Returns the gathered
    logits and the generated tokens (the same on every process)."""
    from flax import nnx

    from grok_flax.kv_memory import KVMemory
    from grok_flax.running.generate import Generator
    from grok_flax.scale.distributed import gather
    from grok_flax.scale.sharding import batch_sharding, create_sharded, put_global

    cfg = model.cfg
    B, T = tokens.shape
    toks = put_global(tokens, batch_sharding(mesh, 2, batch=B))
    forward = nnx.jit(lambda m, t: m(t))
    out = {"forward": gather(forward(model, toks))}
    memory = create_sharded(lambda: KVMemory(cfg, B, T + 8), mesh)
    step = nnx.jit(lambda m, t, mem: m(t, mem))
    out["prefill"] = gather(step(model, toks[:, :-1], memory))
    out["decode"] = gather(step(model, toks[:, -1:], memory))
    out["kv_k"] = gather(memory.k[...])
    # generation: the first row's real tokens as a prompt, greedy and sampled
    prompt = [int(t) for t in tokens[0] if t > cfg.pad_token][: T // 2]
    gen = Generator(model, max_len=min(cfg.sequence_len, 64), mesh=mesh)
    out["generated_greedy"] = np.asarray(gen.generate([prompt], max_new_tokens=8).tokens[0])
    sampled = gen.generate(
        [prompt, prompt[:3]], max_new_tokens=8, temperature=0.8, top_p=0.9, seed=3
    )
    out["generated_sampled"] = np.asarray(sum(sampled.tokens, []))
    return out


class ReadLog:
    """While active, counts the bytes the loader reads from checkpoint files (each slice once).

    A context manager: it wraps ``loader._read_into`` on entry and puts the original back on
    exit."""

    def __init__(self):
        self.slices: set = set()
        self.bytes = 0
        self.lock = threading.Lock()  # the loader reads on several threads

    def __enter__(self):
        from grok_flax.checkpoint import loader

        self._loader, self._original = loader, loader._read_into

        def recording(out, spec, index):
            self._original(out, spec, index)
            key = (str(spec.path), spec.offset, loader._index_key(index))
            with self.lock:
                if key not in self.slices:
                    self.slices.add(key)
                    self.bytes += out.size * np.dtype(spec.dtype).itemsize

        loader._read_into = recording
        return self

    def __exit__(self, *exc):
        self._loader._read_into = self._original


def worker(args: argparse.Namespace) -> int:
    from grok_flax.scale.distributed import initialize

    idx, count = initialize(
        args.coordinator,
        args.num_processes,
        args.process_id,
        local_device_count=args.local_devices,
        initialization_timeout=args.init_timeout,
    )
    import jax

    from grok_flax.checkpoint import checkpoint_dir, load_checkpoint
    from grok_flax.config import GrokConfig
    from grok_flax.scale.mesh import make_mesh, parse_mesh_spec

    t0 = time.perf_counter()
    meta = json.loads(Path(args.meta).read_text())
    cfg = GrokConfig.from_reference_meta(meta, compute_dtype=args.compute_dtype)
    shape = parse_mesh_spec(args.mesh)
    if args.axis_types == "explicit":  # JAX's default mesh: sharding in the types
        mesh = jax.make_mesh((shape["data"], shape["model"]), ("data", "model"))
    else:
        mesh = make_mesh(shape["data"], shape["model"])  # over the global jax.devices()
    with ReadLog() as log:
        model = load_checkpoint(args.checkpoint, cfg, mesh=mesh, progress=False)
    load_s = time.perf_counter() - t0
    tokens = np.asarray(meta["tokens"], np.int32)
    out = run_checkpoint(model, tokens, mesh)
    total = sum(f.stat().st_size for f in checkpoint_dir(args.checkpoint).iterdir())
    report = dict(
        process=idx,
        processes=count,
        local_devices=jax.local_device_count(),
        global_devices=jax.device_count(),
        bytes_read=log.bytes,
        slices_read=len(log.slices),
        checkpoint_file_bytes=total,
        load_seconds=load_s,
        seconds=time.perf_counter() - t0,
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"process_{idx}.json").write_text(json.dumps(report, indent=1))
    np.savez(out_dir / f"logits_{idx}.npz", **out)
    print(json.dumps(report), flush=True)
    jax.distributed.shutdown()
    return 0


# --- launching N local processes -------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(local_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags.strip()} --xla_force_host_platform_device_count={local_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _drain(stream, into: list[str]) -> None:
    """Read a worker's output as it comes (so it never blocks on a full pipe)."""
    for line in stream:
        into.append(line)
    stream.close()


def launch_local(
    worker_args: list[str], num_processes: int = 2, local_devices: int = 4, timeout: float = 240.0
) -> list[subprocess.CompletedProcess]:
    """Run ``num_processes`` workers on 127.0.0.1 (``local_devices`` CPU devices each) and
    wait for all of them (see :func:`run_processes`)."""
    port = free_port()
    cmds = [
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "worker",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            str(num_processes),
            "--process-id",
            str(i),
            "--local-devices",
            str(local_devices),
            *worker_args,
        ]
        for i in range(num_processes)
    ]
    return run_processes(cmds, _child_env(local_devices), timeout)


def run_processes(
    cmds: list[list[str]], env: dict[str, str] | None = None, timeout: float = 240.0
) -> list[subprocess.CompletedProcess]:
    """Run the commands side by side, reading their output while they run. If one fails, or
    ``timeout`` seconds pass, every one still running is killed and ``RuntimeError`` says
    why, with the end of each one's output."""
    procs, logs, readers = [], [], []
    for cmd in cmds:
        p = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        logs.append([])
        readers.append(threading.Thread(target=_drain, args=(p.stdout, logs[-1]), daemon=True))
        readers[-1].start()
        procs.append(p)
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout:.0f} s"
                break
            bad = [p for p in procs if p.poll() not in (None, 0)]
            if bad:
                failed = f"process exited with {bad[0].returncode}"
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p, r in zip(procs, readers, strict=True):
            p.wait()
            r.join(timeout=10)
    results = [
        subprocess.CompletedProcess(p.args, p.returncode, "".join(log), "")
        for p, log in zip(procs, logs, strict=True)
    ]
    if failed or any(r.returncode for r in results):
        text = "\n".join(
            f"--- process {i} (rc {r.returncode}) ---\n{r.stdout[-4000:]}"
            for i, r in enumerate(results)
        )
        raise RuntimeError(f"local multi-process run failed: {failed or 'non-zero exit'}\n{text}")
    return results


# --- command line ----------------------------------------------------------------------------


def _add_worker_args(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", required=True, help="folder holding ckpt-0/")
    p.add_argument("--meta", required=True, help="meta.json of a reference case (config, tokens)")
    p.add_argument("--mesh", default="data=1,model=8", help="global mesh, e.g. data=2,model=4")
    p.add_argument(
        "--axis-types",
        choices=("auto", "explicit"),
        default="auto",
        help="mesh from grok_flax.scale.sharding.make_mesh (Auto axes) or "
        "jax.make_mesh (Explicit axes)",
    )
    p.add_argument("--out", required=True, help="folder for process_N.json / logits_N.npz")
    p.add_argument("--compute-dtype", default="float32", help="float32 or bfloat16")
    p.add_argument(
        "--init-timeout", type=int, default=120, help="seconds to wait for every process to join"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/multihost_worker.py", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="one process: load, forward, decode, gather")
    w.add_argument("--coordinator", required=True, help="host:port of process 0")
    w.add_argument("--num-processes", type=int, required=True, help="processes in the job")
    w.add_argument("--process-id", type=int, required=True, help="this process's index")
    w.add_argument(
        "--local-devices",
        type=int,
        default=None,
        help="simulate this many CPU devices in this process",
    )
    _add_worker_args(w)
    la = sub.add_parser("launch", help="run N workers on 127.0.0.1")
    la.add_argument("--num-processes", type=int, default=2, help="workers to start")
    la.add_argument("--local-devices", type=int, default=4, help="CPU devices per worker")
    la.add_argument("--timeout", type=float, default=240.0, help="seconds before all are killed")
    _add_worker_args(la)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker(args)
    passthrough = [
        "--checkpoint",
        args.checkpoint,
        "--meta",
        args.meta,
        "--mesh",
        args.mesh,
        "--axis-types",
        args.axis_types,
        "--out",
        args.out,
        "--compute-dtype",
        args.compute_dtype,
        "--init-timeout",
        str(args.init_timeout),
    ]
    for r in launch_local(passthrough, args.num_processes, args.local_devices, args.timeout):
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
