"""Checkers for the "Try this" exercises of notebook 07:
`notebooks/07_meshes_and_sharding.ipynb`."""

from __future__ import annotations

import functools

import numpy as np

from grok_flax.config import GrokConfig
from grok_flax.course import exercise


# --------------------------------------------------------------------------------------------
# 1. FSDP alone: the bytes per device on a data=8 × model=1 mesh
# --------------------------------------------------------------------------------------------
@functools.cache
def _weight_bytes(data: int, model: int) -> int:
    """Bytes of Grok-1's weights one device holds on a data × model mesh (abstract: nothing is
    allocated, no devices are needed)."""
    from flax import nnx
    from jax.sharding import AbstractMesh

    from grok_flax.model import abstract_model
    from grok_flax.scale.sharding import abstract_state, bytes_per_device

    mesh = AbstractMesh((data, model), ("data", "model"))
    grok1 = abstract_model(GrokConfig.grok_1())
    return bytes_per_device(abstract_state(nnx.state(grok1, nnx.Param), mesh))


def _whole_bytes() -> int:
    return _weight_bytes(1, 1)


@exercise(
    "07",
    task="How many bytes of Grok-1's weights does one device hold on a data=8 × model=1 mesh "
    "(FSDP alone, no tensor parallelism)? An int, computed with bytes_per_device.",
    wrong=[
        lambda: _weight_bytes(1, 8),
        lambda: _whole_bytes() // 8,
        lambda: _whole_bytes(),
        lambda: _weight_bytes(8, 1) / 2**30,
    ],
    praise="Under 1 MB away from the 1×8 mesh's 39.85 GB: the rule table splits every big "
    "weight 8 ways on either mesh — only which small arrays stay whole changes (on 8×1 the "
    "scales of weights whose D is split, on 1×8 the router).",
)
def fsdp_bytes(answer) -> str | None:
    want = _weight_bytes(8, 1)
    got = float(answer)
    if got == want:
        return None
    if got == _weight_bytes(1, 8):
        return (
            "that is the 1×8 mesh's figure (model=8). Build the mesh with data=8, model=1: "
            "the two differ by the small arrays that stay whole."
        )
    if got == _whole_bytes():
        return "that is the whole model: you measured a one-device mesh (data=1, model=1)."
    if abs(got - _whole_bytes() / 8) < 1:
        return (
            "that is the whole model divided by 8, which assumes every array is split. Some "
            "small ones are not (norm scales; on 8×1 the int8 scales whose weight's D is "
            "split): ask bytes_per_device for the real layout."
        )
    if abs(got * 2**30 - want) / want < 1e-3:
        return "right amount, wrong unit: give bytes (an int), not GiB."
    return (
        f"{got:,.0f} bytes is not it. Build make_mesh(8, 1), abstract_state(nnx.state(grok1, "
        "nnx.Param), mesh) and bytes_per_device of that."
    )


# --------------------------------------------------------------------------------------------
# 2. The scale blocks of linear_1: the library's layout and the release's
# --------------------------------------------------------------------------------------------
def _scale_bytes(cfg: GrokConfig, model: int = 8) -> tuple[int, int]:
    """Bytes of linear_1's bf16 scales on one device of a 1 × model mesh, over all layers and
    experts: (the library: all G blocks everywhere; the release: G / model blocks each)."""
    L, E, G, D = cfg.num_layers, cfg.num_experts, cfg.moe_out_scale_blocks, cfg.emb_size
    return L * E * G * D * 2, L * E * (G // model) * D * 2


@exercise(
    "07",
    task="On the release's 1×8 mesh, how many bytes of the experts' linear_1 scales (all 64 "
    "layers, all 8 experts, bfloat16) does one device hold — in this library's layout, and in "
    "the release's? A pair (library, release).",
    wrong=[
        lambda: _scale_bytes(GrokConfig.grok_1())[::-1],
        lambda: (_scale_bytes(GrokConfig.grok_1())[1],) * 2,
        lambda: tuple(b // 64 for b in _scale_bytes(GrokConfig.grok_1())),
        lambda: tuple(b * 2 for b in _scale_bytes(GrokConfig.grok_1())),
    ],
    praise="The library keeps all 8 blocks on every device (50 MB), the release one each "
    "(6 MB): 44 MB of a device's ~40 GB, the price of a layout that works on any mesh.",
)
def scale_bytes(answer) -> str | None:
    lib, rel = _scale_bytes(GrokConfig.grok_1())
    try:
        got_lib, got_rel = (float(a) for a in answer)
    except (TypeError, ValueError):
        return "give a pair of numbers: (bytes in this library's layout, bytes in the release's)."
    if (got_lib, got_rel) == (lib, rel):
        return None
    if (got_lib, got_rel) == (rel, lib):
        return (
            "swapped: the library keeps *all* G = 8 blocks on every device (the larger number), "
            "the release splits them over the 8 devices, one block each."
        )
    if got_lib == got_rel:
        return (
            "the two layouts differ: the library never splits the block axis G, the release "
            "gives each of the 8 model-axis devices one of the 8 blocks."
        )
    if (got_lib * 64, got_rel * 64) == (lib, rel):
        return "that is one layer: linear_1 is stacked over all 64 layers."
    if (got_lib / 2, got_rel / 2) == (lib, rel):
        return "twice too many: a bfloat16 scale is 2 bytes, and linear_1 has D, not 2·D, columns."
    return (
        "count the scales [64 layers, 8 experts, G blocks, D = 6,144] at 2 bytes each: G = 8 "
        "on every device in the library, G / 8 = 1 per device in the release."
    )


# --------------------------------------------------------------------------------------------
# 3. Expert parallelism: each token's slot in the all-to-all send buffer
# --------------------------------------------------------------------------------------------
def _slots(expert, num_experts: int) -> np.ndarray:
    expert = np.asarray(expert)
    onehot = np.eye(num_experts, dtype=np.int64)[expert]
    return (np.cumsum(onehot, 0) * onehot).sum(-1) - 1


_CASES = [
    (np.array([3, 1, 3, 0, 1, 3, 2, 2]), 4),
    (np.array([0, 0, 0, 0, 0, 0]), 8),
    (np.array([7, 6, 5, 4, 3, 2, 1, 0]), 8),
    (np.random.default_rng(0).integers(0, 8, 64), 8),
]


@exercise(
    "07",
    task="Write slots(expert, num_experts): for a device's tokens' chosen experts [T] (ints), "
    "each token's slot in the [num_experts, capacity, D] send buffer — 0, 1, 2, … in token "
    "order among the tokens going to the same expert.",
    wrong=[
        lambda: lambda e, n: np.arange(len(e)),
        lambda: lambda e, n: _slots(e, n) + 1,
        lambda: lambda e, n: np.asarray(e),
    ],
    praise="Packed slots: expert e's tokens fill rows 0…count-1 of its buffer, so the buffer "
    "can be cut to a capacity C < T (tokens past C are dropped) — the knob expert "
    "parallelism trades between memory, traffic and lost tokens.",
)
def send_slots(answer) -> str | None:
    for expert, n in _CASES:
        want = _slots(expert, n)
        got = np.asarray(answer(expert, n)).reshape(-1)
        if got.shape != want.shape:
            return f"for {len(expert)} tokens you returned {got.size} slots: one per token."
        if np.array_equal(got, want):
            continue
        if np.array_equal(got, np.arange(len(expert))):
            return (
                "that is each token's own index: unique, but expert e's tokens then sit at "
                "scattered rows, so every expert's buffer needs all T rows. Number them "
                "0, 1, 2, … among the tokens with the same expert."
            )
        if np.array_equal(got, want + 1):
            return "off by one: the first token for an expert goes to slot 0."
        return (
            f"for experts {expert.tolist()[:8]} you gave {got.tolist()[:8]}, expected "
            f"{want.tolist()[:8]}: count, in token order, the earlier tokens with the same expert."
        )
    return None
