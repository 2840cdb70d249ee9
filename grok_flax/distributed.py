"""Several processes, one model: ``jax.distributed`` on a cluster, or on one machine.

With ``jax.distributed`` every process (one per host) runs the *same* program; the mesh spans
the global ``jax.devices()`` and each process touches only its own devices' shards. Nothing in
``grok_flax`` needs to know: ``make_mesh`` builds the global mesh, ``load_checkpoint`` reads
only the blocks of this process's devices (each distinct block once) and joins them with
``jax.make_array_from_single_device_arrays``, and a jitted forward runs across all hosts.
See ``docs/multihost.md``.

- ``initialize(...)``: ``jax.distributed.initialize`` plus the CPU settings (gloo
  collectives, simulated devices). With no arguments on a TPU pod / SLURM / Open MPI job the
  coordinator, process count and index are detected.
- ``python -m grok_flax.distributed worker ...``: one process of the check the tests run —
  load a checkpoint onto the global mesh, run the forward and a KV-memory decode, gather the
  logits; ``launch`` starts N such workers on 127.0.0.1 (``launch_local``).
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


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_count: int | None = None,
               cpu_collectives: str | None = "gloo", **kwargs) -> tuple[int, int]:
    """Join the job: returns ``(process_index, process_count)``.

    Call once per process, before any other JAX operation. ``local_device_count`` simulates
    that many CPU devices in this process (tests, development); ``cpu_collectives`` is the
    CPU backend's cross-process collectives ("gloo"; ignored by GPU/TPU). Other keyword
    arguments go to ``jax.distributed.initialize`` (``local_device_ids``,
    ``initialization_timeout`` …). With everything left ``None`` on a TPU pod or under
    SLURM / Open MPI, JAX detects the cluster itself.
    """
    import jax

    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)
    return jax.process_index(), jax.process_count()


def gather(x) -> np.ndarray:
    """A global array (sharded over any processes) -> the whole array, on every process."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# --- the check: forward and decode of a checkpoint on a global mesh --------------------------

def run_checkpoint(model, tokens: np.ndarray, mesh) -> dict[str, np.ndarray]:
    """Forward on ``tokens`` [B, T]; then the first T-1 tokens into a sharded KV memory and
    one decode step; then ``Generator`` on the mesh, greedy and sampled. Returns the gathered
    logits and the generated tokens (the same on every process)."""
    from flax import nnx

    from grok_flax.kv_memory import KVMemory
    from grok_flax.sharding import batch_sharding, create_sharded, put_global

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
    from grok_flax.generate import Generator

    prompt = [int(t) for t in tokens[0] if t > cfg.pad_token][:T // 2]
    gen = Generator(model, max_len=min(cfg.sequence_len, 64), mesh=mesh)
    out["generated_greedy"] = np.asarray(gen.generate([prompt], max_new_tokens=8).tokens[0])
    sampled = gen.generate([prompt, prompt[:3]], max_new_tokens=8, temperature=0.8, top_p=0.9,
                           seed=3)
    out["generated_sampled"] = np.asarray(sum(sampled.tokens, []))
    return out


class _ReadLog:
    """Counts the bytes this process reads from the checkpoint files (each slice once)."""

    def __init__(self):
        self.slices: set = set()
        self.bytes = 0
        self.lock = threading.Lock()  # the loader reads on several threads

    def install(self):
        from grok_flax import checkpoint

        original = checkpoint._read_into
        _index_key = checkpoint._index_key

        def recording(out, spec, index):
            original(out, spec, index)
            key = (str(spec.path), spec.offset, _index_key(index))
            with self.lock:
                if key not in self.slices:
                    self.slices.add(key)
                    self.bytes += out.size * np.dtype(spec.dtype).itemsize

        checkpoint._read_into = recording


def worker(args: argparse.Namespace) -> int:
    idx, count = initialize(args.coordinator, args.num_processes, args.process_id,
                            local_device_count=args.local_devices,
                            initialization_timeout=args.init_timeout)
    import jax

    from grok_flax.checkpoint import checkpoint_dir, load_checkpoint
    from grok_flax.config import GrokConfig
    from grok_flax.sharding import make_mesh, parse_mesh_spec

    t0 = time.perf_counter()
    meta = json.loads(Path(args.meta).read_text())
    cfg = GrokConfig.from_reference_meta(meta, compute_dtype=args.compute_dtype)
    shape = parse_mesh_spec(args.mesh)
    if args.axis_types == "explicit":  # JAX's default mesh: sharding in the types
        mesh = jax.make_mesh((shape["data"], shape["model"]), ("data", "model"))
    else:
        mesh = make_mesh(shape["data"], shape["model"])  # over the global jax.devices()
    log = _ReadLog()
    log.install()
    model = load_checkpoint(args.checkpoint, cfg, mesh=mesh, progress=False)
    load_s = time.perf_counter() - t0
    tokens = np.asarray(meta["tokens"], np.int32)
    out = run_checkpoint(model, tokens, mesh)
    total = sum(f.stat().st_size for f in checkpoint_dir(args.checkpoint).iterdir())
    report = dict(process=idx, processes=count, local_devices=jax.local_device_count(),
                  global_devices=jax.device_count(), bytes_read=log.bytes,
                  slices_read=len(log.slices), checkpoint_file_bytes=total,
                  load_seconds=load_s, seconds=time.perf_counter() - t0)
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
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def launch_local(worker_args: list[str], num_processes: int = 2, local_devices: int = 4,
                 timeout: float = 240.0) -> list[subprocess.CompletedProcess]:
    """Run ``num_processes`` workers on 127.0.0.1 (``local_devices`` CPU devices each) and
    wait for all of them. If one fails, or ``timeout`` seconds pass, every worker still
    running is killed; raises ``RuntimeError`` with their output."""
    port = free_port()
    env = _child_env(local_devices)
    procs = []
    for i in range(num_processes):
        cmd = [sys.executable, "-m", "grok_flax.distributed", "worker",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
               "--process-id", str(i), "--local-devices", str(local_devices), *worker_args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
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
    results = []
    for p in procs:
        stdout, _ = p.communicate()
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, ""))
    if failed or any(r.returncode for r in results):
        logs = "\n".join(f"--- process {i} (rc {r.returncode}) ---\n{r.stdout[-4000:]}"
                         for i, r in enumerate(results))
        raise RuntimeError(f"local multi-process run failed: {failed or 'non-zero exit'}\n"
                           f"{logs}")
    return results


# --- command line ----------------------------------------------------------------------------

def _add_worker_args(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", required=True, help="folder holding ckpt-0/")
    p.add_argument("--meta", required=True, help="meta.json of a reference case (config, "
                                                 "tokens)")
    p.add_argument("--mesh", default="data=1,model=8")
    p.add_argument("--axis-types", choices=("auto", "explicit"), default="auto",
                   help="mesh from grok_flax.sharding.make_mesh (Auto axes) or "
                        "jax.make_mesh (Explicit axes)")
    p.add_argument("--out", required=True, help="folder for process_N.json / logits_N.npz")
    p.add_argument("--compute-dtype", default="float32")
    p.add_argument("--init-timeout", type=int, default=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grok_flax.distributed",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="one process: load, forward, decode, gather")
    w.add_argument("--coordinator", default=None, help="host:port of process 0 (default: "
                                                       "detected on TPU pods / SLURM)")
    w.add_argument("--num-processes", type=int, default=None)
    w.add_argument("--process-id", type=int, default=None)
    w.add_argument("--local-devices", type=int, default=None,
                   help="simulate this many CPU devices in this process")
    _add_worker_args(w)
    la = sub.add_parser("launch", help="run N workers on 127.0.0.1")
    la.add_argument("--num-processes", type=int, default=2)
    la.add_argument("--local-devices", type=int, default=4)
    la.add_argument("--timeout", type=float, default=240.0)
    _add_worker_args(la)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker(args)
    passthrough = ["--checkpoint", args.checkpoint, "--meta", args.meta, "--mesh", args.mesh,
                   "--axis-types", args.axis_types,
                   "--out", args.out, "--compute-dtype", args.compute_dtype,
                   "--init-timeout", str(args.init_timeout)]
    for r in launch_local(passthrough, args.num_processes, args.local_devices, args.timeout):
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
