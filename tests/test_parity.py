"""Parity with checkpoints written by the original Grok-1 code (../shared/reference/*).

Each case folder holds ``checkpoints/ckpt-0`` (official format), ``meta.json`` (the
reference config + token rows) and ``logits.npy`` (the reference forward, bf16 activations).
Every case found is checked; more can be added with GROK_FLAX_REFERENCE_CASES=dir1:dir2.
"""

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_cases

from grok_flax import GrokConfig
from grok_flax.checkpoint import load_checkpoint

CASES = reference_cases() + [Path(p) for p in
                             os.environ.get("GROK_FLAX_REFERENCE_CASES", "").split(":") if p]


def parity_report(case: Path, **overrides) -> dict:
    meta = json.loads((case / "meta.json").read_text())
    # fp32 activations on every platform: the reference logits were computed on CPU, where
    # XLA evaluates the release's bf16 graph in f32. (On an H200 with compute_dtype "auto" =
    # bf16, grok1-tiny drifts to max |Δ| 0.97 / top-1 89% from bf16 rounding flipping router
    # near-ties; fp32 there gives max |Δ| 0.013 / top-1 100%, as on CPU.)
    cfg = GrokConfig.from_reference_meta(meta, **{"compute_dtype": "float32", **overrides})
    model = load_checkpoint(case / "checkpoints", cfg, progress=False)
    tokens = np.asarray(meta["tokens"], np.int32)
    want = np.load(case / "logits.npy").astype(np.float32)
    got = np.asarray(model(jnp.asarray(tokens)).astype(jnp.float32))
    # positions before the first padding token of each row carry meaning
    valid = np.cumprod(tokens > cfg.pad_token, axis=1).astype(bool)
    diff = np.abs(got - want)[valid]
    mine = got.argmax(-1)
    ref_top = want.max(-1)
    ref_of_mine = np.take_along_axis(want, mine[..., None], -1)[..., 0]
    scale = max(1.0, float(np.abs(want[valid]).max()))
    return dict(
        max_abs=float(diff.max()), mean_abs=float(diff.mean()), scale=scale,
        top1=float((mine == want.argmax(-1))[valid].mean()),
        # my top token is (one of) the reference's top tokens up to bf16 rounding of its logits
        top1_up_to_ties=float((ref_of_mine >= ref_top - scale * 2.0**-8)[valid].mean()),
        corr=float(np.corrcoef(got[valid].ravel(), want[valid].ravel())[0, 1]),
        positions=int(valid.sum()),
    )


@pytest.mark.skipif(not CASES, reason="no reference case in ../shared/reference")
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
@pytest.mark.parametrize("impl", [dict(), dict(attention_impl="naive", moe_impl="dense")],
                         ids=["fast", "oracle"])
def test_logits_match_the_original_code(case, impl):
    r = parity_report(case, **impl)
    print(case.name, impl, r)
    assert r["top1_up_to_ties"] >= 0.99, r
    assert r["top1"] >= 0.95, r
    assert r["max_abs"] <= r["scale"] * 2.0**-4, r  # a few bf16 steps at the largest logit
    assert r["mean_abs"] <= r["scale"] * 2.0**-7, r
    assert r["corr"] >= 0.999, r


@pytest.mark.skipif(not CASES, reason="no reference case in ../shared/reference")
def test_shipped_case_top1_is_exact():
    case = next((c for c in CASES if c.name == "grok1-tiny"), None)
    if case is None:
        pytest.skip("grok1-tiny not present")
    r = parity_report(case)
    assert r["top1"] >= 0.99 and r["max_abs"] < 0.02, r
