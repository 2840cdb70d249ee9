"""Execute the walkthrough notebooks with nbclient and report each one's wall time.

    python notebooks/run_all.py                    # re-execute every notebook in place
    python notebooks/run_all.py 03 05              # only the notebooks whose name starts so
    python notebooks/run_all.py --out runs/nb      # write executed copies there instead
    python notebooks/run_all.py --check            # execute, write nothing

The kernel is ``python3`` run by this interpreter (so the venv's packages), working in this
folder; every cell has ``--timeout`` seconds. Exits non-zero if any notebook fails; the
failing cell's error is printed. Executed notebooks are written without per-cell timing
metadata, so re-running changes only what the code printed or drew.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUDGET_SECONDS = 120  # each notebook's target on 2 CPU cores


def notebooks(patterns: list[str] | None = None) -> list[Path]:
    """The walkthrough notebooks in order (``NN_name.ipynb``), optionally filtered by prefix."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.ipynb"))
    if patterns:
        found = [p for p in found if any(p.name.startswith(s) for s in patterns)]
    return found


def run_notebook(
    path: Path, out: Path | None = None, timeout: int = 600, kernel: str = "python3"
) -> float:
    """Execute ``path`` (cwd: its folder) and write the result to ``out`` (None: don't).
    Returns the wall time in seconds; raises ``nbclient.exceptions.CellExecutionError``."""
    import tempfile

    import nbclient
    import nbformat
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as sockets:
        # the kernel talks over local IPC sockets in a private folder, not TCP (which the
        # kernel warns about: no encryption)
        km = KernelManager(kernel_name=kernel, transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = nbclient.NotebookClient(
            nb,
            km=km,
            kernel_name=kernel,
            timeout=timeout,
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        t0 = time.perf_counter()
        try:
            client.execute()
        finally:
            if km.has_kernel and km.is_alive():
                km.shutdown_kernel(now=False)
        seconds = time.perf_counter() - t0
    if out is not None:
        nbformat.write(nb, out)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--out", type=Path, help="folder for executed copies (default: in place)")
    parser.add_argument("--check", action="store_true", help="execute only, write nothing")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError

    paths = notebooks(args.only)
    if not paths:
        print("no notebooks matched", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    failed, total = [], 0.0
    for p in paths:
        out = None if args.check else (args.out / p.name if args.out else p)
        try:
            seconds = run_notebook(p, out, timeout=args.timeout)
        except CellExecutionError as e:
            print(f"{p.name:<34} FAILED", flush=True)
            print(str(e), file=sys.stderr)
            failed.append(p.name)
            continue
        total += seconds
        flag = "" if seconds <= BUDGET_SECONDS else f"  (over the {BUDGET_SECONDS} s budget)"
        print(f"{p.name:<34} {seconds:7.1f} s{flag}", flush=True)
    print(
        f"{len(paths) - len(failed)}/{len(paths)} notebooks ran in {total:.0f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
