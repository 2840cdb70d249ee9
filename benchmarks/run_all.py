"""Run every benchmark and print (and save to docs/benchmarks.md) the tables.

    python -m benchmarks.run_all                 # everything (~10 min on 2 cores)
    python -m benchmarks.run_all moe attention   # some, printed only
    python -m benchmarks.run_all --allow-busy    # write the docs even on a busy machine

A full run rewrites docs/benchmarks.md: each section's table is replaced, the prose written
under it is kept. It refuses to write when the machine was busy (1-minute load ≥ 1) before
any benchmark started, since load distorts the ratios (the all-experts reference, one big
multi-threaded matmul, suffers most); the tables are still printed. Before each later
benchmark the load average still carries this run's own threads, so the line also gives the
cores other processes use at that moment.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import load_average, load_line, machine, table  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
TITLES = {
    "moe": "MoE: sparse dispatch vs the reference all-experts algorithm (T=2048, d=512, "
    "ffn 1376, 8 experts, top-2, int8 experts, fp32)",
    "attention": "Attention: chunked online softmax vs naive T×T (GQA 2×2 heads of 64, fp32, "
    "chunk 512)",
    "decode": "Decode step with KV memory vs recomputing the prefix (4 layers, d=256, "
    "8 experts, memory 4096)",
    "compile": "AOT compile of 64-layer Grok-1 (prefill of 8192 tokens into KV memory + one "
    "decode step), 1×8 mesh: scan vs Python loop (loop: 16 layers measured, ×4)",
    "load": "Loading a generated 1.26 GB official-format checkpoint",
    "generate": "Decode with Generator: 2 layers with Grok-1's 131,072-token vocabulary, one "
    "device and a 1×8 mesh, greedy and sampled",
}
_MARK = "<!-- benchmark: {} -->"


def run(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each benchmark's table (markdown) and the load line printed before it."""
    tables, loads = {}, []
    for name in names:
        loads.append(f"{name}: {load_line()}")
        print(loads[-1], flush=True)
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t = time.perf_counter()
        rows = mod.main(16) if name == "compile" else mod.main()
        tables[name] = table(rows, TITLES[name])
        print(tables[name], f"\n({time.perf_counter() - t:.0f} s)\n", flush=True)
    return tables, loads


def sections(text: str) -> dict[str, str]:
    """The prose under each benchmark's table in an existing report, by benchmark name."""
    prose = {}
    for name, body in re.findall(
        r"<!-- benchmark: (\w+) -->\n(.*?)(?=<!-- benchmark: |\Z)", text, flags=re.S
    ):
        lines = body.strip("\n").split("\n")
        # skip the heading, the blank line and the table; what follows is prose
        i = 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("|")):
            i += 1
        prose[name] = "\n".join(lines[i:]).strip()
    return prose


def report(tables: dict[str, str], loads: list[str], old: str = "") -> str:
    """docs/benchmarks.md: a header, then per benchmark its marker, table and kept prose."""
    kept = sections(old)
    date = datetime.date.today().isoformat()
    out = [
        f"# Benchmarks\n\nMachine: {machine()}. Medians of interleaved repeats after "
        f"warm-up; produced by `python -m benchmarks.run_all` on {date} (each table "
        f"replaced, the prose under it kept). GPU figures: "
        f"[benchmarks_gpu.md](benchmarks_gpu.md) (`python -m benchmarks.bench_accelerator`)."
        f"\n\nLoad before each benchmark:\n\n" + "\n".join(f"- {x}" for x in loads) + "\n"
    ]
    for name, text in tables.items():
        part = f"{_MARK.format(name)}\n{text}\n"
        if kept.get(name):
            part += f"\n{kept[name]}\n"
        out.append(part)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all, and write the docs): {', '.join(TITLES)}",
    )
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="write docs/benchmarks.md even if the load was ≥ 1",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in TITLES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(TITLES)}")
    busy = load_average() >= 1
    tables, loads = run(args.names or list(TITLES))
    if args.names:
        return 0
    if busy and not args.allow_busy:
        print(
            f"not writing {DOC}: the machine was busy when the run started ({loads[0]}); "
            f"re-run when it is idle, or pass --allow-busy",
            file=sys.stderr,
        )
        return 1
    DOC.write_text(report(tables, loads, DOC.read_text() if DOC.exists() else ""))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
