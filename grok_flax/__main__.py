"""Command line: ``python -m grok_flax {inspect,demo} ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_inspect(args) -> int:
    from grok_flax.checkpoint import inspect_checkpoint

    rows = inspect_checkpoint(args.path, num_layers=args.num_layers)
    total = 0
    print(f"{'file':<16} {'name':<58} {'shape':<22} {'dtype':<9} {'q':<2} {'bytes':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['file']:<16} {r['name']:<58} ERROR: {r['error']}")
            continue
        total += r["bytes"]
        print(f"{r['file']:<16} {r['name']:<58} {str(r['shape']):<22} {r['dtype']:<9} "
              f"{'Q' if r['quantized'] else '':<2} {r['bytes']:>14,}")
    print(f"{len(rows)} tensors, {total:,} bytes ({total / 1e9:.2f} GB)")
    return 0


def _cmd_demo(args) -> int:
    from grok_flax.demo import run_demo

    run_demo()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grok_flax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print the tensor table of a ckpt-0 (reads no data)")
    p.add_argument("path", help="folder holding ckpt-0/, or ckpt-0/ itself")
    p.add_argument("--num-layers", type=int, default=None,
                   help="layers, for the tensor names (default: from the file count)")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("demo", help="the demo: build, load and run a small Grok")
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
