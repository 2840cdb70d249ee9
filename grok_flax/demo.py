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
