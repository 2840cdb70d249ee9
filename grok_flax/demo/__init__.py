"""The demo model: a small Grok trained on the Python standard library, shipped with the package.

- ``bundled/``: its checkpoint (release format), tokenizer and config — :func:`load` reads it;
- :mod:`~grok_flax.demo.corpus`: the training text and the tokenizer trained on it;
- :mod:`~grok_flax.demo.train`: ``python -m grok_flax.demo.train`` rebuilds ``bundled/``;
- :mod:`~grok_flax.demo.eval`: held-out loss, routing statistics, sample continuations;
- :func:`run_demo`: what ``make demo`` shows (Grok-1 at full size, abstractly, and this small
  one running).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np


def run_demo(out_dir: str | Path = "runs/demo", walkthrough: bool = True) -> None:
    """``make demo``: the bundled model generates Python, its routing is drawn, the full-size
    Grok-1 is built abstractly, and (from a source checkout) the walkthrough notebooks run."""
    from grok_flax import viz
    from grok_flax.config import GrokConfig
    from grok_flax.model import abstract_model, param_count
    from grok_flax.running.generate import Generator, stream_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    full = abstract_model(GrokConfig.grok_1())
    print(
        f"Grok-1 built abstractly in {time.perf_counter() - t:.2f}s: "
        f"{param_count(full):,} parameters\n"
    )

    model, tokenizer, cfg = load()
    prompt = "def read_lines(path):\n"
    print(
        f"bundled demo model ({param_count(model):,} parameters, {cfg.num_experts} experts, "
        f"top-{cfg.num_selected_experts}) continues {prompt!r}:\n"
    )
    gen = Generator(model, tokenizer)
    sys.stdout.write(prompt)
    for piece in stream_text(gen, prompt, max_new_tokens=48):
        sys.stdout.write(piece)
        sys.stdout.flush()
    r = gen.last
    print(f"\n\n[{r.speed()}]")

    ids = r.prompt_tokens[0] + r.tokens[0]
    _, caught = model(jnp.asarray([ids[:40]]), capture=("routing",))
    fig = viz.routing_heatmap(
        np.asarray(caught["experts"]),
        viz.token_labels(tokenizer, ids[:40]),
        num_experts=cfg.num_experts,
        title="demo model: chosen experts per token and layer",
    )
    fig.savefig(out / "routing.png", dpi=110, bbox_inches="tight")
    print(f"routing figure: {out / 'routing.png'}")

    notebooks = Path(__file__).resolve().parents[2] / "notebooks" / "run_all.py"
    if walkthrough and notebooks.is_file():
        import subprocess

        print("\nexecuting the walkthrough notebooks (copies in runs/notebooks) ...", flush=True)
        subprocess.run(
            [sys.executable, str(notebooks), "--out", str(out.parent / "notebooks")], check=True
        )
        print(
            "\nnext: `make lab` opens the walkthrough in JupyterLab, starting at "
            "notebooks/01_tour.ipynb (docs/walkthrough.md lists all ten); `make book` builds "
            "it as a website into runs/book/ (serve it: .venv/bin/python -m http.server -d "
            "runs/book 8000, then open http://localhost:8000)"
        )


# --- the bundled demo model (built by `python -m grok_flax.demo.train`) ----------------------
DEMO_DIR = Path(__file__).resolve().parent / "bundled"
DEMO_FILES = ("config.json", "tokenizer.model", "ckpt-0")


def demo_dir() -> Path:
    """The bundled demo folder (``grok_flax/demo/bundled`` of the installed package)."""
    return DEMO_DIR


def config(path=None):
    """The bundled demo model's ``GrokConfig`` (reads only its config.json)."""
    from grok_flax.config import GrokConfig

    return GrokConfig.load(Path(path) if path is not None else demo_dir())


def load(path=None, *, mesh=None):
    """The bundled small Grok (trained on the Python stdlib) -> (model, tokenizer, config).

    ``path``: another folder of the same layout (``config.json``, ``tokenizer.model``,
    ``ckpt-0/``), e.g. one written by ``python -m grok_flax.demo.train --out DIR``. The tokenizer is
    a ``grok_flax.running.tokenizer.Tokenizer`` (a ``sentencepiece.SentencePieceProcessor`` if that
    module is unavailable).
    """
    from grok_flax.checkpoint import load_checkpoint

    d = Path(path) if path is not None else demo_dir()
    missing = [f for f in DEMO_FILES if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{d}: demo model file(s) missing: {', '.join(missing)}. Rebuild it with "
            f"`python -m grok_flax.demo.train --out {d}` (see docs/demo_model.md)."
        )
    model = load_checkpoint(d, config(d), mesh=mesh, progress=False)
    try:
        from grok_flax.running.tokenizer import Tokenizer

        tokenizer = Tokenizer(d / "tokenizer.model")
    except ImportError:
        import sentencepiece as spm

        tokenizer = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    return model, tokenizer, model.cfg
