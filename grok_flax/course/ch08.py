"""Checkers for the "Try this" exercises of notebook 08:
`notebooks/08_loading_and_running.ipynb`."""

from __future__ import annotations

import numpy as np

from grok_flax.course import exercise

_NAMES = ("moe/linear/w", "multi_head_attention/query/w", "rms_norm_3/scale", "router/w")


def _release_names(num_layers: int) -> list[str]:
    from grok_flax.checkpoint import release_names

    return [name for name, _, _ in release_names(num_layers)]


def _numeric_order(name: str, num_layers: int) -> int:
    """A plausible mistake: layers in numeric order (0, 1, 2, …)."""
    top = ["language_model/in_out_embed/embeddings", "language_model/rms_norm/scale"]
    if name in top:
        return top.index(name)
    per_layer = sorted(n.split("/", 2)[2] for n in _release_names(1)[2:])
    layer = int(name.split("/")[1].removeprefix("decoder_layer_"))
    return 2 + layer * len(per_layer) + per_layer.index(name.split("/", 2)[2])


def _forgot_top_files(name: str, num_layers: int) -> int:
    """A plausible mistake: counting from the first layer file, without the two top files."""
    return _release_names(num_layers).index(name) - 2


@exercise(
    "08",
    task="A function file_index(name, num_layers) -> the index i of tensor{i:05d}_000 holding "
    "that release name, worked out without release_names.",
    wrong=[lambda: _numeric_order, lambda: _forgot_top_files],
    praise="Sorted names put decoder_layer_10 … _19 before _2: Grok-1's layer 2 starts at file "
    "146, not 26.",
)
def file_index(answer) -> str | None:
    if not callable(answer):
        return "give a function file_index(name, num_layers) -> int."
    for L in (4, 64, 3, 12):
        names = _release_names(L)
        picks = (
            names
            if L <= 4
            else [n for n in names if n.startswith("language")]
            + [
                f"transformer/decoder_layer_{layer}/{p}"
                for layer in (0, 1, 2, 9, 10, L - 1)
                for p in _NAMES
            ]
        )
        for name in picks:
            got, want = int(answer(name, L)), names.index(name)
            if got == want:
                continue
            if got == _numeric_order(name, L):
                return (
                    f"{name} ({L} layers) is file {want}, not {got}: you put the layers in "
                    "numeric order, but the release sorts the names as strings, so "
                    "decoder_layer_10 comes before decoder_layer_2."
                )
            if got == want - 2:
                return (
                    f"{name} ({L} layers) is file {want}, not {got}: files 0 and 1 are the "
                    "embeddings and the final norm ('language_model/…' sorts before "
                    "'transformer/…')."
                )
            return f"{name} ({L} layers) is file {want}, not {got}."
    return None


def _logit_rows() -> list[np.ndarray]:
    rng = np.random.default_rng(8)
    rows = [rng.normal(size=50).astype(np.float32) * s for s in (0.5, 2.0, 5.0)]
    tied = np.round(rng.normal(size=40), 1).astype(np.float32)  # ties at the k-th value
    return [*rows, tied]


def _k_plus_one(logits, k):
    x = np.asarray(logits)
    return x >= np.sort(x)[-(k + 1)]


def _k_smallest(logits, k):
    x = np.asarray(logits)
    return x <= np.sort(x)[k - 1]


@exercise(
    "08",
    task="A function top_k_mask(logits, k) -> a bool array [V], True for the logits the "
    "top-k filter keeps (ties with the k-th largest kept, as the library does).",
    wrong=[lambda: _k_plus_one, lambda: _k_smallest],
    praise="The same tokens grok_flax.running.sampling.top_k_filter keeps, ties included.",
)
def top_k_mask(answer) -> str | None:
    import jax.numpy as jnp

    from grok_flax.running.sampling import MASKED, top_k_filter

    if not callable(answer):
        return "give a function top_k_mask(logits, k) -> bool array."
    for row in _logit_rows():
        for k in (1, 2, 5, 17):
            want = np.asarray(top_k_filter(jnp.asarray(row)[None], jnp.asarray([k])))[0] > MASKED
            got = np.asarray(answer(row.copy(), k), bool)
            if got.shape != want.shape:
                return f"for {row.size} logits the mask has shape {got.shape}, not {want.shape}."
            if got.sum() == want.sum() + 1 and (got >= want).all():
                return f"with k={k} you keep one token too many ({got.sum()}): an off-by-one."
            if (got & want).sum() == 0 and got.sum():
                return f"with k={k} you keep the smallest logits: top-k keeps the largest."
            if not (got == want).all():
                return (
                    f"with k={k} you keep {got.sum()} tokens, the library {want.sum()}; "
                    f"they differ at {np.flatnonzero(got != want)[:5].tolist()} "
                    "(ties with the k-th largest value are kept)."
                )
    return None


def _quantized_files() -> list:
    from grok_flax.checkpoint import release_names
    from grok_flax.demo import demo_dir

    ckpt = demo_dir() / "ckpt-0"
    return [
        ckpt / f"tensor{i:05d}_000"
        for i, (name, path, layer) in enumerate(release_names(4))
        if path[1:2] in (("attn",), ("moe",)) and layer in (0, 3)
    ]


def _opcode_positions(path):
    """A plausible mistake: the byte offsets of the opcodes, not of their payloads."""
    import pickletools

    data = open(path, "rb").read()
    return tuple(
        pos for op, arg, pos in pickletools.genops(data) if isinstance(arg, bytes) and len(arg) > 64
    )


def _swapped(path):
    return tuple(reversed(_opcode_positions(path)))


@exercise(
    "08",
    task="A function payload_offsets(path) -> (weight offset, scales offset): where the int8 "
    "weight's and the bf16 scales' raw bytes start in a QuantizedWeight8bit tensor file, found "
    "by walking the opcodes (no pickle.load).",
    wrong=[lambda: _opcode_positions, lambda: _swapped],
    praise="The offsets parse_tensor_file records: from there read_array memory-maps the bytes.",
)
def payload_offsets(answer) -> str | None:
    from grok_flax.checkpoint.reader import parse_tensor_file

    if not callable(answer):
        return "give a function payload_offsets(path) -> (int, int)."
    for path in _quantized_files():
        spec = parse_tensor_file(path)
        want = (spec.weight.offset, spec.scales.offset)
        got = tuple(int(v) for v in answer(path))
        if got == want:
            continue
        if got == want[::-1]:
            return f"{path.name}: the weight comes first in the file ({want}), you gave {got}."
        if len(got) == 2 and all(0 < w - g <= 9 for g, w in zip(got, want, strict=True)):
            return (
                f"{path.name}: {got} are where the BINBYTES opcodes start; the payload "
                f"starts after the opcode byte and its length field, at {want}."
            )
        return f"{path.name}: the payloads start at bytes {want}, you gave {got}."
    return None


_WHOLE_GROK1 = 318.24e9  # Grok-1's weights in bytes (int8 + bf16 scales + fp32 embedding)


def _plan_weights(data: int, model: int) -> int:
    import warnings

    from grok_flax.running.plan import plan

    with warnings.catch_warnings():  # batch 1 is not split over data: replicated, as intended
        warnings.simplefilter("ignore", UserWarning)
        p = plan("grok-1", {"data": data, "model": model}, context=8192, compile=False)
    return p.weight_bytes


@exercise(
    "08",
    task="A function weights_per_chip(data, model) -> the bytes of Grok-1's weights one chip "
    "holds on a data × model mesh sharded as the release shards it (within 1%).",
    wrong=[lambda: lambda d, m: _WHOLE_GROK1 / m, lambda: lambda d, m: _WHOLE_GROK1 / d],
    praise="The release splits every weight matrix over both axes (its model width D over "
    "'data', its output width over 'model'), so 32 chips hold 1/32 each: ~10 GB, which is why "
    "a v5e-32 (16 GiB per chip) holds Grok-1.",
)
def weights_per_chip(answer) -> str | None:
    if not callable(answer):
        return "give a function weights_per_chip(data, model) -> bytes."
    for data, model in ((1, 8), (4, 8), (2, 8), (2, 4), (8, 8)):
        want, got = _plan_weights(data, model), float(answer(data, model))
        if abs(got - want) <= 0.01 * want:
            continue
        if data > 1 and abs(got - _WHOLE_GROK1 / model) <= 0.01 * want * data:
            return (
                f"data={data} × model={model}: {got / 1e9:.2f} GB is a whole copy per "
                f"data row, as in plain data parallelism; the release also splits each "
                f"weight's model width D over 'data' (axes.RULES: 'embed': 'data'), so a "
                f"chip holds {want / 1e9:.2f} GB."
            )
        return (
            f"data={data} × model={model}: one chip holds {want / 1e9:.2f} GB, not {got / 1e9:.2f}."
        )
    return None
