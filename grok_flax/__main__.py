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


def _simulate_devices_for(mesh_text: str | None) -> None:
    """On a CPU-only machine, ask XLA for enough simulated devices for ``--mesh``
    (must run before JAX starts its backend; a user-set device count is left alone)."""
    import os

    if not mesh_text or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS",
                                                                                   ""):
        return
    from grok_flax.sharding import parse_mesh_spec

    shape = parse_mesh_spec(mesh_text)
    n = shape["data"] * shape["model"]
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()


def _load_config(text: str | None):
    from grok_flax.config import GrokConfig

    if text is None or text in ("grok-1", "grok_1"):
        return GrokConfig.grok_1()
    return GrokConfig.from_json(text)


def _cmd_generate(args) -> int:
    _simulate_devices_for(args.mesh)
    from grok_flax.generate import Generator, stream_text

    mesh = None
    if args.mesh:
        from grok_flax.sharding import make_mesh, parse_mesh_spec

        mesh = make_mesh(**parse_mesh_spec(args.mesh))
    if args.checkpoint is None:
        if args.config is not None:
            raise ValueError("--config needs --checkpoint (without both, the bundled demo "
                             "model is used)")
        from grok_flax import demo

        model, tokenizer, cfg = demo.load(mesh=mesh)
        if args.tokenizer:
            from grok_flax.tokenizer import Tokenizer

            tokenizer = Tokenizer(args.tokenizer)
    else:
        from grok_flax.checkpoint import load_checkpoint
        from grok_flax.tokenizer import Tokenizer

        if args.tokenizer is None:
            raise ValueError("--checkpoint needs --tokenizer (the tokenizer.model of the "
                             "release)")
        cfg = _load_config(args.config)
        tokenizer = Tokenizer(args.tokenizer)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the config's "
                             f"vocab_size is {cfg.vocab_size}")
        model = load_checkpoint(args.checkpoint, cfg, mesh=mesh, progress=not args.quiet)
    gen = Generator(model, tokenizer, max_len=args.max_len, mesh=mesh)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
              top_p=args.top_p, top_k=args.top_k, seed=args.seed,
              truncate="left" if args.truncate_left else None)
    for piece in stream_text(gen, args.prompt, **kw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    r = gen.last
    if not args.quiet:
        print(f"[{len(r.prompt_tokens[0])} prompt tokens, {len(r.tokens[0])} new "
              f"({r.finish_reasons[0]}); prefill {r.prefill_tokens_per_s:.1f} tok/s, decode "
              f"{r.decode_tokens_per_s:.1f} tok/s (first call includes compilation)]",
              file=sys.stderr)
    return 0


def _cmd_convert(args) -> int:
    from grok_flax.convert import convert

    cfg = None if args.config is None else _load_config(args.config)
    out = convert(args.src, args.dst, cfg)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_plan(args) -> int:
    from grok_flax.plan import run_plan

    return run_plan(args)


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
    p = sub.add_parser("generate", help="stream a continuation of --prompt to stdout")
    p.add_argument("--checkpoint", help="folder holding ckpt-0/ (default: the bundled demo)")
    p.add_argument("--config", help="JSON file of GrokConfig fields (others take Grok-1's "
                   "values), or 'grok-1' for the release config")
    p.add_argument("--tokenizer", help="SentencePiece tokenizer.model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-len", type=int, default=None,
                   help="KV memory size (default: the config's sequence_len)")
    p.add_argument("--mesh", help="e.g. data=1,model=8")
    p.add_argument("--truncate-left", action="store_true",
                   help="drop the start of a prompt that doesn't fit (default: error)")
    p.add_argument("--quiet", action="store_true", help="no progress/speed on stderr")
    p.set_defaults(func=_cmd_generate)
    p = sub.add_parser("convert", help="official ckpt-0 <-> safetensors <-> orbax, exactly")
    p.add_argument("src", help="official folder, *.safetensors, or *.orbax folder")
    p.add_argument("dst", help="official folder, *.safetensors, or *.orbax folder")
    p.add_argument("--config", help="GrokConfig JSON (needed when SRC is an official "
                   "checkpoint without config.json beside it), or 'grok-1'")
    p.set_defaults(func=_cmd_convert)
    from grok_flax.plan import add_plan_arguments

    p = sub.add_parser("plan", help="per-device memory of the full model on a mesh (AOT)")
    add_plan_arguments(p)
    p.set_defaults(func=_cmd_plan)
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
