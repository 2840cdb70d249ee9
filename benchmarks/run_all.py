"""Run every benchmark and print (and save to docs/benchmarks.md) the tables.

    python -m benchmarks.run_all            # everything (~10 min on 2 cores)
    python -m benchmarks.run_all moe attention
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import importlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import machine, table  # noqa: E402

TITLES = {
    "moe": "MoE: sparse dispatch vs the reference all-experts algorithm (int8 experts)",
    "attention": "Attention: chunked online softmax vs naive T×T (GQA 2×2 heads of 64, fp32)",
    "decode": "Decode step with KV memory vs recomputing the prefix (4 layers, 8 experts)",
    "compile": "AOT compile of 64-layer Grok-1, 1×8 mesh: scan vs Python loop (loop: 16 "
               "layers measured, ×4)",
    "load": "Loading a generated ≥1 GB official-format checkpoint",
    "generate": "End to end generation, GrokConfig.small() with random weights",
}


def main(names: list[str]) -> str:
    out = [f"# Benchmarks\n\nMachine: {machine()}. Medians of interleaved repeats after "
           f"warm-up; produced by `python -m benchmarks.run_all`. GPU figures: "
           f"[benchmarks_gpu.md](benchmarks_gpu.md) (`python -m benchmarks.bench_accelerator`)."
           f"\n"]
    for name in names:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t = time.perf_counter()
        rows = mod.main(16) if name == "compile" else mod.main()
        text = table(rows, TITLES[name])
        print(text, f"\n({time.perf_counter() - t:.0f} s)\n", flush=True)
        out.append(text + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    names = sys.argv[1:] or list(TITLES)
    report = main(names)
    if not sys.argv[1:]:
        Path(__file__).resolve().parents[1].joinpath("docs", "benchmarks.md").write_text(report)
