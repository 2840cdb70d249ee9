"""Loading a ≥1 GB official-format checkpoint: host-memory overhead and time vs ``cat``.

A checkpoint with random int8 weights is written tensor by tensor (never held whole), then
loaded in a fresh subprocess while a thread samples the process's anonymous resident memory
(RssAnon + RssShmem: not the page cache of mapped files). The loader's overhead is the peak
of that above its start, minus the bytes of the loaded arrays themselves (on CPU the
"devices" live in host RAM); time is taken in separate runs, without the sampler.

``cat`` of the same files to /dev/null is the I/O floor. A loader must also put the bytes
into *new* memory, which ``cat`` never does: the third contender reads the same files into
freshly mapped, page-aligned memory on as many threads as the loader uses, with no parsing
or JAX at all — the floor for any loader that materialises the arrays on this machine.
All three are timed with the page cache warm and, where the benchmark may empty it (root),
cold — the case of a real 300 GB checkpoint, which never sits in RAM. Each also reports the
kernel CPU time it spent: where that is what separates a loader from ``cat``, it shows.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load_line, machine, table

CFG = dict(
    vocab_size=32768,
    sequence_len=512,
    emb_size=1024,
    key_size=64,
    num_q_heads=16,
    num_kv_heads=4,
    num_layers=16,
    widening_factor=4.0,
    num_experts=8,
    num_selected_experts=2,
    compute_dtype="float32",
)

_CHILD = r"""
import json, resource, sys, threading, time
from pathlib import Path
import jax
from flax import nnx
from grok_flax import GrokConfig
from grok_flax.checkpoint import load_checkpoint

def rss_anon():  # anonymous memory, private or shared: everything but mapped files
    return sum(int(line.split()[1]) * 1024
               for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith(("RssAnon:", "RssShmem:")))

cfg = GrokConfig(**json.loads(sys.argv[2]))
jax.numpy.zeros(1).block_until_ready()  # start the backend before measuring
base, peak, stop = rss_anon(), [0], [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], rss_anon()); time.sleep(0.002)
th = threading.Thread(target=sample)
if sys.argv[3] == "memory":  # the sampler competes for the GIL: time is taken without it
    th.start()
r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
model = load_checkpoint(sys.argv[1], cfg, progress=False)
jax.block_until_ready(nnx.state(model))
secs, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
stop[0] = True
if th.is_alive():
    th.join()
arrays = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
print(json.dumps(dict(seconds=secs, peak=peak[0] - base, arrays=arrays,
                      user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime)))
"""


_FLOOR_CHILD = r"""
import json, mmap, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
files = sys.argv[1:]

def read(f):
    n = os.path.getsize(f)
    out, done = memoryview(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)), 0
    fd = os.open(f, os.O_RDONLY)
    while done < n:
        done += os.preadv(fd, [out[done:]], done)
    os.close(fd)
    return out

r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
with ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 1))) as pool:
    kept = list(pool.map(read, files))
secs, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(seconds=secs, user=r1.ru_utime - r0.ru_utime,
                      sys=r1.ru_stime - r0.ru_stime)))
"""


def write_checkpoint(path: Path, cfg) -> int:
    """Random official-format files, one tensor at a time; returns total bytes."""
    from grok_flax.checkpoint import release_names
    from grok_flax.checkpoint.release import tensor_file_name
    from grok_flax.checkpoint.writer import write_array_file, write_quantized_file
    from grok_flax.model import abstract_model
    from grok_flax.quant import QArray

    rng = np.random.default_rng(0)
    state = abstract_model(cfg)
    ckpt = path / "ckpt-0"
    ckpt.mkdir(parents=True)
    for i, (_, mpath, layer) in enumerate(release_names(cfg.num_layers)):
        node = state
        for p in mpath:
            node = getattr(node, p)
        aval = node.get_value()
        f = ckpt / tensor_file_name(i)
        if isinstance(aval, QArray):
            w = rng.integers(-127, 128, aval.weight.shape[1:], dtype=np.int8)
            s = (rng.random(aval.scales.shape[1:], np.float32) * 0.01).astype(aval.scales.dtype)
            write_quantized_file(f, w, s)
        else:
            shape = aval.shape[1:] if layer is not None else aval.shape
            write_array_file(f, rng.standard_normal(shape, np.float32))
    return sum(f.stat().st_size for f in ckpt.iterdir())


def main(repeats: int = 5, cold_repeats: int = 5) -> list[dict]:
    from grok_flax import GrokConfig

    cfg = GrokConfig(**CFG)
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        size = write_checkpoint(Path(tmp), cfg)
        files = sorted(str(f) for f in (Path(tmp) / "ckpt-0").iterdir())
        subprocess.run(["sync"], check=True)  # no write-back of the new files while timing
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm cache

        def child(*argv) -> str:
            out = subprocess.run(
                [sys.executable, "-c", *argv], capture_output=True, text=True, check=True
            )
            return out.stdout.strip().splitlines()[-1]

        def cat() -> dict:
            r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            secs, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
            return dict(seconds=secs, sys=r1.ru_stime - r0.ru_stime)

        r = json.loads(child(_CHILD, tmp, json.dumps(CFG), "memory"))
        contenders = {
            "cat": cat,
            "floor": lambda: json.loads(child(_FLOOR_CHILD, *files)),
            "load": lambda: json.loads(child(_CHILD, tmp, json.dumps(CFG), "time")),
        }
        runs: dict[str, list[dict]] = {k: [] for k in contenders}
        cold: dict[str, list[dict]] = {k: [] for k in contenders}
        for _ in range(repeats):  # interleaved; every contender is a fresh process
            for k, fn in contenders.items():
                runs[k].append(fn())
        for _ in range(cold_repeats if _drop_page_cache() else 0):
            for k, fn in contenders.items():  # the page cache emptied before each one
                _drop_page_cache()
                cold[k].append(fn())
    overhead = max(0, r["peak"] - r["arrays"])
    rows = [
        {
            "checkpoint GB": size / 1e9,
            "loaded arrays GB": r["arrays"] / 1e9,
            "peak RssAnon GB": r["peak"] / 1e9,
            "overhead GB": overhead / 1e9,
            "overhead / ckpt": overhead / size,
            **_timing_columns(runs),
        }
    ]
    if cold["load"]:
        rows.append(
            {
                **rows[0],
                "peak RssAnon GB": "",
                "overhead GB": "",
                "overhead / ckpt": "cold cache",
                **_timing_columns(cold),
            }
        )
    return rows


def _timing_columns(runs: dict[str, list[dict]]) -> dict:
    """Medians, the load/cat ratio of each round, and the kernel CPU time each contender
    spent (``cat`` reads through one reused buffer; the others fault in new memory)."""
    med = {
        k: {m: statistics.median(r[m] for r in rs) for m in ("seconds", "sys")}
        for k, rs in runs.items()
    }
    ratios = [lo["seconds"] / c["seconds"] for lo, c in zip(runs["load"], runs["cat"], strict=True)]
    load_s, cat_s, floor_s = (med[k]["seconds"] for k in ("load", "cat", "floor"))
    return {
        "load s": load_s,
        "cat s": cat_s,
        "load / cat": load_s / cat_s,
        "load / cat per round": f"{min(ratios):.2f}–{max(ratios):.2f}",
        "read-into-new-memory s": floor_s,
        "load / read-into-new-memory": load_s / floor_s,
        "kernel CPU s load / new memory / cat": " / ".join(
            f"{med[k]['sys']:.2f}" for k in ("load", "floor", "cat")
        ),
    }


def _drop_page_cache() -> bool:
    """Empty the page cache (needs root); False where that is not allowed."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


if __name__ == "__main__":
    print(load_line(), flush=True)
    print(table(main(), f"Loading an official-format checkpoint ({machine()})"))
