"""Command line: ``python -m grok_flax {inspect,generate,convert,plan,demo} ...``.

Every user error exits with status 2 and one line on stderr (``error: ...``); arguments are
checked before anything is loaded.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Grok-1 in Flax NNX: inspect, run, convert and plan checkpoints in the "
    "release's format. Every user error exits with status 2 and one line on stderr."
)


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
        print(
            f"{r['file']:<16} {r['name']:<58} {str(r['shape']):<22} {r['dtype']:<9} "
            f"{'Q' if r['quantized'] else '':<2} {r['bytes']:>14,}"
        )
    print(f"{len(rows)} tensors, {total:,} bytes ({total / 1e9:.2f} GB)")
    bad = sum("error" in r for r in rows)
    if bad:
        raise ValueError(f"{bad} of {len(rows)} tensors could not be read (the ERROR rows above)")
    return 0


def _simulate_devices_for(mesh_text: str | None) -> None:
    """On a CPU-only machine, ask XLA for enough simulated devices for ``--mesh``
    (must run before JAX starts its backend; a user-set device count is left alone)."""
    import os

    if not mesh_text or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    from grok_flax.scale.mesh import parse_mesh_spec

    shape = parse_mesh_spec(mesh_text)
    n = shape["data"] * shape["model"]
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
    ).strip()


def _check_generate_args(args) -> None:
    """The cheap checks, before any file is read."""
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.max_len is not None and args.max_len < 2:
        raise ValueError(f"--max-len must be >= 2, got {args.max_len}")
    if args.checkpoint is None and args.config is not None:
        raise ValueError(
            "--config needs --checkpoint (without both, the bundled demo model is used)"
        )
    if args.checkpoint is not None and args.tokenizer is None:
        raise ValueError("--checkpoint needs --tokenizer (the release's tokenizer.model)")
    if args.mesh:
        from grok_flax.scale.mesh import parse_mesh_spec

        parse_mesh_spec(args.mesh)


def _checkpoint_config(args):
    """--config, else the checkpoint folder's config.json, else Grok-1."""
    from pathlib import Path

    from grok_flax.config import GrokConfig

    if args.config is not None:
        return GrokConfig.load(args.config)
    for folder in (Path(args.checkpoint), Path(args.checkpoint).parent):
        if (folder / "config.json").is_file():
            return GrokConfig.load(folder / "config.json")
    return GrokConfig.grok_1()


def _check_prompt_fits(tokenizer, args, max_len: int) -> None:
    n = len(tokenizer.encode(args.prompt))
    if n == 0:
        raise ValueError("--prompt is empty")
    if args.max_new_tokens >= max_len:
        raise ValueError(
            f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt "
            f"in a context of {max_len}"
        )
    room = max_len - args.max_new_tokens
    if n > room and not args.truncate_left:
        raise ValueError(
            f"the prompt has {n} tokens; with --max-new-tokens "
            f"{args.max_new_tokens} the context of {max_len} leaves room for "
            f"{room}: shorten it, lower --max-new-tokens, or pass --truncate-left "
            f"to drop its start"
        )


def _cmd_generate(args) -> int:
    _check_generate_args(args)
    _simulate_devices_for(args.mesh)
    from grok_flax.running.tokenizer import Tokenizer

    if args.checkpoint is None:
        from grok_flax import demo

        cfg = demo.config()
        tokenizer = Tokenizer(args.tokenizer or demo.demo_dir() / "tokenizer.model")
    else:
        cfg = _checkpoint_config(args)
        tokenizer = Tokenizer(args.tokenizer)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} pieces but the config's "
                f"vocab_size is {cfg.vocab_size}"
            )
    max_len = cfg.sequence_len if args.max_len is None else args.max_len
    if max_len > cfg.sequence_len:
        raise ValueError(f"--max-len {max_len} exceeds the model's context {cfg.sequence_len}")
    _check_prompt_fits(tokenizer, args, max_len)

    from grok_flax.running.generate import Generator, stream_text

    mesh = None
    if args.mesh:
        from grok_flax.scale.mesh import make_mesh, parse_mesh_spec

        mesh = make_mesh(**parse_mesh_spec(args.mesh))
    if args.checkpoint is None:
        from grok_flax import demo

        model, _, cfg = demo.load(mesh=mesh)
    else:
        from grok_flax.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint, cfg, mesh=mesh, progress=not args.quiet)
    gen = Generator(model, tokenizer, max_len=max_len, mesh=mesh)
    kw = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        truncate="left" if args.truncate_left else None,
    )
    for piece in stream_text(gen, args.prompt, **kw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    r = gen.last
    if not args.quiet:
        print(
            f"[{len(r.prompt_tokens[0])} prompt tokens, {len(r.tokens[0])} new "
            f"({r.finish_reasons[0]}); {r.speed()}]",
            file=sys.stderr,
        )
    return 0


def _cmd_convert(args) -> int:
    from grok_flax.checkpoint.convert import convert
    from grok_flax.config import GrokConfig

    cfg = None if args.config is None else GrokConfig.load(args.config)
    out = convert(args.src, args.dst, cfg)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_plan(args) -> int:
    from grok_flax.running.plan import run_plan

    return run_plan(args)


def _cmd_demo(args) -> int:
    from grok_flax.demo import run_demo

    run_demo()
    return 0


class _Help(argparse.HelpFormatter):
    """Help that ends each option with its default, when it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            not action.option_strings
            or "%(default)" in text
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The one argument tree of ``python -m grok_flax``."""
    from grok_flax.running.plan import add_plan_arguments

    parser = argparse.ArgumentParser(
        prog="python -m grok_flax", description=DESCRIPTION, formatter_class=_Help
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Help)

    p = command("inspect", "print the tensor table of a ckpt-0 (reads no data)")
    p.add_argument("path", help="folder holding ckpt-0/, or ckpt-0/ itself")
    p.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help="layers, for the tensor names (default: from the file count)",
    )
    p.set_defaults(func=_cmd_inspect)

    p = command("generate", "stream a continuation of --prompt to stdout")
    p.add_argument(
        "--checkpoint",
        help="folder holding ckpt-0/ (default: the bundled demo "
        "model); its config.json is read when present",
    )
    p.add_argument(
        "--config",
        help="a preset (grok-1, small, tiny), a JSON file of GrokConfig "
        "fields (others take Grok-1's values) or a folder holding "
        "config.json (default: the checkpoint's, else grok-1)",
    )
    p.add_argument("--tokenizer", help="SentencePiece tokenizer.model (needed with --checkpoint)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most")
    p.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy"
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus sampling: keep the smallest set of tokens holding this "
        "probability, in (0, 1]; 1 = off",
    )
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler, in [0, 2**32)")
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="KV memory size in tokens (default: the config's sequence_len)",
    )
    p.add_argument("--mesh", help="device mesh, e.g. data=1,model=8 (simulated on a CPU)")
    p.add_argument(
        "--truncate-left",
        action="store_true",
        help="drop the start of a prompt that doesn't fit (without it: an error)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress/speed on stderr")
    p.set_defaults(func=_cmd_generate)

    p = command("convert", "official ckpt-0 <-> safetensors <-> orbax, exactly")
    p.add_argument("src", help="official folder, *.safetensors, or *.orbax folder")
    p.add_argument("dst", help="official folder, *.safetensors, or *.orbax folder")
    p.add_argument(
        "--config",
        help="preset, GrokConfig JSON file or folder (needed when SRC "
        "is an official checkpoint without config.json)",
    )
    p.set_defaults(func=_cmd_convert)

    p = command("plan", "per-device memory of the full model on a mesh (AOT)")
    add_plan_arguments(p)
    p.set_defaults(func=_cmd_plan)

    p = command("demo", "the demo: the bundled model generates, then the walkthrough notebooks run")
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line(e: BaseException) -> str:
    from grok_flax.checkpoint import CheckpointError

    text = str(e).strip() or type(e).__name__
    lines = [ln.strip().removeprefix("- ") for ln in text.splitlines() if ln.strip()]
    if isinstance(e, CheckpointError) and len(lines) > 2:
        return f"{lines[0]} {lines[1]} (and {len(lines) - 2} more)"
    return "; ".join(lines) if len(lines) <= 3 else f"{lines[0]} (...)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, OverflowError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
