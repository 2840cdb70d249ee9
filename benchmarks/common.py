"""Timing helpers shared by the benchmarks: interleaved repeats, medians, a results table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import jax


def block(x):
    return jax.block_until_ready(x)


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each fn, timed in turn (a, b, a, b, …) after warm-up, so
    that a change of machine load hits every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def load_average() -> float:
    """The 1-minute load average (figures for the docs need it below 1)."""
    return os.getloadavg()[0]


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy over the next ``seconds`` while this process sleeps (from
    ``/proc/stat``): the other processes' use, free of this benchmark's own threads, which
    linger in the load average for minutes. None where /proc/stat is missing."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    cores = os.cpu_count() or 1
    return cores * (1 - (idle1 - idle0) / max(1, total1 - total0))


def load_line() -> str:
    """The machine's load before a benchmark starts: ratios measured on a busy machine are
    distorted (the all-experts reference, one big multi-threaded matmul, suffers most)."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    others = busy_cores()
    line = f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {cores} cores"
    if others is not None:
        line += f"; other processes now use {others:.2f} cores"
    # the load average also carries this process's own recent threads; the 1-s sample does not
    busy = others >= 0.5 if others is not None else one >= 1
    if busy:
        line += " — BUSY: ratios will be distorted"
    return line


def machine() -> str:
    dev = jax.devices()[0]
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind})"
    )


def temp_bytes(fn, *args) -> int:
    """XLA's temporary-buffer estimate for ``jit(fn)(*args)``."""
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def table(rows: list[dict], title: str) -> str:
    keys = list(rows[0])
    width = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    lines = [
        f"## {title}",
        "",
        "| " + " | ".join(k.ljust(width[k]) for k in keys) + " |",
        "|" + "|".join("-" * (width[k] + 2) for k in keys) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[k]).ljust(width[k]) for k in keys) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
