"""The demo behind ``make demo``: Grok-1 at full size (abstractly) and a small one running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np


def run_demo() -> None:
    from grok_flax import GrokConfig, abstract_model, param_count
    from grok_flax.checkpoint import load_checkpoint

    t = time.perf_counter()
    full = abstract_model(GrokConfig.grok_1())
    print(f"Grok-1 built abstractly in {time.perf_counter() - t:.2f}s: "
          f"{param_count(full):,} parameters")
    ref = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "grok1-tiny"
    if (ref / "meta.json").is_file():
        meta = json.loads((ref / "meta.json").read_text())
        cfg = GrokConfig.from_reference_meta(meta)
        model = load_checkpoint(ref / "checkpoints", cfg, progress=False)
        tokens = np.asarray(meta["tokens"], np.int32)
        got = np.asarray(model(jnp.asarray(tokens)).astype(jnp.float32))
        want = np.load(ref / "logits.npy")
        n = int((tokens[1] > 0).sum())
        print(f"reference checkpoint {ref.name}: max |logits - original code| = "
              f"{np.abs(got[0] - want[0]).max():.4f} (row 0), "
              f"{np.abs(got[1, :n] - want[1, :n]).max():.4f} (row 1)")


# --- the bundled demo model (grok_flax/data/demo/, built by `python -m grok_flax.train`) ---
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
DEMO_FILES = ("config.json", "tokenizer.model", "ckpt-0")


def demo_dir() -> Path:
    """The bundled demo folder, located through the installed package's resources."""
    from importlib import resources

    return Path(str(resources.files("grok_flax") / "data" / "demo"))


def load(path=None, *, mesh=None):
    """The bundled small Grok (trained on the Python stdlib) -> (model, tokenizer, config).

    ``path``: another folder of the same layout (``config.json``, ``tokenizer.model``,
    ``ckpt-0/``), e.g. one written by ``python -m grok_flax.train --out DIR``. The tokenizer is
    a ``grok_flax.tokenizer.Tokenizer`` (a ``sentencepiece.SentencePieceProcessor`` if that
    module is unavailable).
    """
    import dataclasses

    from grok_flax.checkpoint import load_checkpoint
    from grok_flax.config import GrokConfig

    d = Path(path) if path is not None else demo_dir()
    missing = [f for f in DEMO_FILES if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{d}: demo model file(s) missing: {', '.join(missing)}. Rebuild it with "
            f"`python -m grok_flax.train --out {d}` (see docs/demo_model.md).")
    fields = json.loads((d / "config.json").read_text())
    known = {f.name for f in dataclasses.fields(GrokConfig)}
    cfg = GrokConfig.from_dict({k: v for k, v in fields.items() if k in known})
    model = load_checkpoint(d, cfg, mesh=mesh, progress=False)
    try:
        from grok_flax.tokenizer import Tokenizer

        tokenizer = Tokenizer(d / "tokenizer.model")
    except ImportError:
        import sentencepiece as spm

        tokenizer = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    return model, tokenizer, model.cfg
