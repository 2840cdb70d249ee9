"""Memory plan: what one device holds to serve a Grok model on a ``(data, model)`` mesh.

``plan(config, {"data": 1, "model": 8}, context=8192, batch=1)`` answers, per device:

- **weights** — int8 linears, their bf16 scales, the fp32 embedding, norms and router — summed
  from the model's *sharded abstract state* (``nnx.eval_shape`` + the sharding rules: exact
  shard shapes, no memory allocated), next to the whole model's bytes;
- **KV memory** for ``batch`` rows of ``context`` tokens, the same way;
- what the compiler reports for the real programs: the model's prefill (a ``context``-token
  prompt into the KV memory) and one decode step are lowered ahead of time on abstract sharded
  inputs (``jax.ShapeDtypeStruct`` + ``NamedSharding``) and compiled;
  ``compiled.memory_analysis()`` gives argument / output / aliased / temporary bytes per
  device. Their argument bytes must equal weights + KV memory + tokens (checked to 1%).

By default the programs are compiled for simulated CPU devices (``backend="cpu"``): weights,
KV memory and arguments are exact for any accelerator, but the **temporary (activation)
bytes are XLA:CPU's estimate** — its fusion and buffer reuse differ from XLA:GPU/TPU's, and it
computes bf16 dots with f32 intermediates. On a machine with the mesh's accelerators
``backend="default"`` compiles for them instead and the numbers are the real compiler's.

Command line::

    python -m grok_flax plan --config grok-1 --mesh data=1,model=8 --context 8192 --batch 1 \
        --device h100
"""

import argparse
import math
import os
import re
import time
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, Mesh

from grok_flax.config import GrokConfig
from grok_flax.kv_memory import KVMemory
from grok_flax.model import Grok
from grok_flax.running.steps import decode_step, prefill_step
from grok_flax.scale.mesh import AXES, make_mesh, parse_mesh_spec
from grok_flax.scale.sharding import abstract_state, batch_sharding, bytes_per_device

GB, GiB = 10**9, 2**30
MiB = 2**20

# Device memory (HBM) per device, as the runtime reports it where known (nvidia-smi MiB),
# else the nominal capacity. Usable memory is a little less: the runtime and the framework
# reserve some, and JAX on GPU preallocates 75% unless XLA_PYTHON_CLIENT_MEM_FRACTION /
# XLA_PYTHON_CLIENT_PREALLOCATE say otherwise.
DEVICES: dict[str, tuple[str, int]] = {
    "h100": ("NVIDIA H100 80GB (SXM)", 81559 * MiB),
    "h200": ("NVIDIA H200 141GB", 143771 * MiB),
    "a100-40": ("NVIDIA A100 40GB", 40960 * MiB),
    "a100-80": ("NVIDIA A100 80GB", 81920 * MiB),
    "b200": ("NVIDIA B200 (nominal 180 GiB usable)", 180 * GiB),
    "mi300x": ("AMD Instinct MI300X 192GB", 192 * GiB),
    "tpu-v4": ("Google TPU v4 (32 GiB HBM)", 32 * GiB),
    "tpu-v5e": ("Google TPU v5e (16 GiB HBM)", 16 * GiB),
    "tpu-v5p": ("Google TPU v5p (95 GiB HBM)", 95 * GiB),
    "tpu-v6e": ("Google TPU v6e Trillium (32 GiB HBM)", 32 * GiB),
}
DEVICE_ALIASES = {
    "a100": "a100-80",
    "v5e": "tpu-v5e",
    "v5p": "tpu-v5p",
    "v4": "tpu-v4",
    "v6e": "tpu-v6e",
    "tpu": "tpu-v5e",
    "trillium": "tpu-v6e",
    "mi300": "mi300x",
}


# --- results ---------------------------------------------------------------------------------


@dataclass
class ProgramMemory:
    """One compiled program's memory, per device, in bytes (``memory_analysis()``)."""

    name: str
    argument: int
    output: int
    alias: int  # outputs that reuse an argument's buffer (the donated KV memory)
    temp: int  # activations and other temporaries
    code: int
    compile_seconds: float

    @property
    def peak(self) -> int:
        """Arguments + outputs − aliased + temporaries: everything live during the program."""
        return self.argument + self.output - self.alias + self.temp


@dataclass
class Plan:
    """The result of ``plan``: per-device and whole-model bytes by kind, the compiled programs'
    memory, and the device checked against; ``report()`` is the text the command prints."""

    config: GrokConfig
    data: int
    model: int
    context: int
    batch: int
    weights: dict[str, int]  # per device, by kind
    weights_whole: dict[str, int]  # the whole (unsharded) model, by kind
    kv: int  # KV memory per device
    kv_whole: int
    tokens: int  # the prefill step's other inputs per device (tokens, lengths, logits kept)
    prefill_chunk: int | None = None  # tokens per compiled prefill call
    programs: list[ProgramMemory] = field(default_factory=list)
    backend: str = "cpu"  # what the programs were compiled for
    device: str | None = None
    device_memory: int | None = None
    seconds: float = 0.0

    @property
    def devices(self) -> int:
        return self.data * self.model

    @property
    def weight_bytes(self) -> int:
        return sum(self.weights.values())

    @property
    def resident(self) -> int:
        """Weights + KV memory: held for as long as the model serves."""
        return self.weight_bytes + self.kv

    @property
    def peak(self) -> int:
        """The largest program's peak if compiled, else the resident bytes."""
        return max([p.peak for p in self.programs], default=self.resident)

    def fits(self, device_memory: int | None = None) -> bool | None:
        """Whether the peak fits ``device_memory`` bytes (default: the plan's device); None
        when no device memory is known."""
        device_memory = device_memory or self.device_memory
        return None if device_memory is None else self.peak <= device_memory

    def report(self) -> str:
        """The plan as the text ``python -m grok_flax plan`` prints (``format_plan``)."""
        return format_plan(self)

    def __str__(self) -> str:
        return self.report()


# --- accounting ------------------------------------------------------------------------------


def _weight_kind(path: tuple, leaf_name: str | None) -> str:
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if names and names[0] == "embed":
        return "embedding"
    if leaf_name == "weight":
        return "int8 linears"
    if leaf_name == "scales":
        return "scales"
    if "router" in names:
        return "router"
    if any(n.endswith("norm") for n in names):
        return "norms"
    return "float linears"


WEIGHT_KINDS = ("int8 linears", "scales", "float linears", "embedding", "router", "norms")


def weight_bytes(abstract_state, per_device: bool = True) -> dict[str, int]:
    """Bytes of a model's parameters by kind, per device (from the shardings) or whole."""
    out = dict.fromkeys(WEIGHT_KINDS, 0)
    flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    for path, leaf in flat:
        last = path[-1]
        leaf_name = getattr(last, "name", None)  # QArray fields are GetAttrKey
        shape = tuple(leaf.shape)
        sharding = getattr(leaf, "sharding", None)
        if per_device and sharding is not None:
            shape = sharding.shard_shape(shape)
        out[_weight_kind(path, leaf_name)] += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return {k: v for k, v in out.items() if v}


def analytic_weight_bytes(cfg: GrokConfig) -> dict[str, int]:
    """The whole model's parameter bytes by kind, by formula from the config alone (an
    independent check of the model's shapes)."""
    D, H, Nq, Nk = cfg.emb_size, cfg.key_size, cfg.num_q_heads, cfg.num_kv_heads
    E, F, L, V = cfg.num_experts, cfg.ffn_size, cfg.num_layers, cfg.vocab_size
    p = np.dtype(cfg.param_dtype).itemsize
    linear = L * (D * Nq * H + 2 * D * Nk * H + Nq * H * D + 3 * E * D * F)
    out = {"embedding": V * D * p, "router": L * D * E * p, "norms": (4 * L + 1) * D * p}
    if cfg.quantized:
        scales = L * (
            Nq * H
            + 2 * Nk * H
            + cfg.attn_out_scale_blocks * D
            + 2 * E * F
            + E * cfg.moe_out_scale_blocks * D
        )
        out.update({"int8 linears": linear, "scales": scales * 2})  # bf16 scales
    else:
        out["float linears"] = linear * p
    return {k: out[k] for k in WEIGHT_KINDS if out.get(k)}


def _abstract(cfg: GrokConfig, batch: int, context: int, mesh):
    """(model graphdef, model state, memory graphdef, memory state): shapes only, the states'
    leaves carrying their shardings on ``mesh``."""
    model = nnx.eval_shape(lambda: Grok(cfg, rngs=nnx.Rngs(0)))
    memory = nnx.eval_shape(lambda: KVMemory(cfg, batch, context))
    return (
        nnx.graphdef(model),
        abstract_state(model, mesh),
        nnx.graphdef(memory),
        abstract_state(memory, mesh),
    )


def _mesh(data: int, model: int, backend: str):
    """A concrete mesh over ``backend``'s devices, or an abstract one if there are too few."""
    try:
        devices = jax.devices("cpu" if backend == "cpu" else None)
    except RuntimeError:
        devices = []
    if len(devices) >= data * model:
        return make_mesh(data, model, devices=devices)
    return AbstractMesh((data, model), AXES)


def _compile(name: str, step, args) -> ProgramMemory:
    """AOT-compile one of generate's jitted steps on abstract arguments."""
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    m = compiled.memory_analysis()
    return ProgramMemory(
        name,
        int(m.argument_size_in_bytes),
        int(m.output_size_in_bytes),
        int(m.alias_size_in_bytes),
        int(m.temp_size_in_bytes),
        int(m.generated_code_size_in_bytes),
        time.perf_counter() - t0,
    )


# --- the plan --------------------------------------------------------------------------------


def plan(
    config: GrokConfig | str,
    mesh_shape: dict[str, int] | tuple[int, int] | str,
    context: int = 8192,
    batch: int = 1,
    device_memory: int | str | None = None,
    *,
    compile: bool = True,
    backend: str = "cpu",
    prefill_chunk: int | None = 512,
    compute_dtype: str = "bfloat16",
) -> Plan:
    """Per-device memory of serving ``config`` on a ``(data, model)`` mesh.

    ``mesh_shape``: ``{"data": d, "model": m}``, ``(d, m)``, ``"data=1,model=8"``, or a mesh
    itself (``jax.make_mesh(..., ("data", "model"))`` with Explicit or Auto axes, or
    ``sharding.make_mesh``), which the programs are then compiled for.
    ``device_memory``: bytes, ``"80GiB"``-style text, or a name of ``DEVICES`` ("h100").
    ``compile=True`` AOT-compiles the prefill and one decode step as ``generate`` runs them:
    the prompt goes into a ``context``-slot KV memory in chunks of ``prefill_chunk`` tokens
    (512, generate's default; ``None`` = the whole ``context`` at once). Compiling needs
    ``data × model`` devices of ``backend`` ("cpu": simulated, from
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``jax_num_cpu_devices`` set
    before JAX starts; ``python -m grok_flax plan`` does this); ``compile=False`` gives the
    exact weight and KV figures for any mesh size without devices. ``compute_dtype`` is
    bfloat16, as on the accelerators the plan is for ("auto" would mean float32 here on CPU).
    """
    t0 = time.perf_counter()
    cfg = GrokConfig.load(config) if isinstance(config, str) else config
    given = None
    if isinstance(mesh_shape, (Mesh, AbstractMesh)):
        given, mesh_shape = mesh_shape, dict(mesh_shape.shape)
    if isinstance(mesh_shape, str):
        mesh_shape = parse_mesh_spec(mesh_shape)
    if not isinstance(mesh_shape, dict):
        mesh_shape = dict(zip(("data", "model"), mesh_shape, strict=True))
    data, model = int(mesh_shape.get("data", 1)), int(mesh_shape.get("model", 1))
    if context < 1 or batch < 1:
        raise ValueError(f"context and batch must be >= 1, got {context}, {batch}")
    cfg = cfg.replace(compute_dtype=compute_dtype, sequence_len=max(cfg.sequence_len, context))
    device, capacity = resolve_device_memory(device_memory)

    mesh = given if given is not None else _mesh(data, model, backend)
    if compile and isinstance(mesh, AbstractMesh):
        have = len(jax.devices("cpu" if backend == "cpu" else None))
        raise ValueError(
            f"compiling for a {data}×{model} mesh needs {data * model} {backend} devices, "
            f"{have} available: set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{data * model} (or jax.config.update('jax_num_cpu_devices', {data * model})) "
            f"before JAX starts, or pass compile=False for the analytic figures only"
        )
    gdef, state, mgdef, mstate = _abstract(cfg, batch, context, mesh)
    tok_sharding = batch_sharding(mesh, 2, batch=batch)
    result = Plan(
        config=cfg,
        data=data,
        model=model,
        context=context,
        batch=batch,
        weights=weight_bytes(state),
        weights_whole=weight_bytes(state, per_device=False),
        kv=bytes_per_device(mstate),
        kv_whole=bytes_per_device(
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), mstate)
        ),
        tokens=bytes_per_device(
            jax.ShapeDtypeStruct((batch, context), jnp.int32, sharding=tok_sharding)
        ),
        backend=backend if compile else "none",
        device=device,
        device_memory=capacity,
    )

    if compile:
        chunk = min(prefill_chunk or context, context)

        def arg(dtype, *shape):
            return jax.ShapeDtypeStruct(
                shape, dtype, sharding=batch_sharding(mesh, len(shape), batch=batch)
            )

        ints, f32 = partial(arg, jnp.int32), partial(arg, jnp.float32)
        # generate's own steps: a chunk of the prompt into the memory (keeping the logits of
        # rows that end in it), and one decode step with sampling
        prefill_in = (
            ints(batch, chunk),
            ints(batch),
            arg(cfg.dtype, batch, cfg.vocab_size),
            arg(jnp.bool_, batch),
            ints(batch),
        )
        keys = jax.eval_shape(lambda: jax.vmap(jax.random.key)(jnp.zeros(batch, jnp.uint32)))
        decode_in = (
            ints(batch),
            jax.ShapeDtypeStruct(
                keys.shape, keys.dtype, sharding=batch_sharding(mesh, 1, batch=batch)
            ),
            0,
            f32(batch),
            f32(batch),
            ints(batch),
        )
        what = "prompt" if chunk == context else f"{chunk}-token chunk"
        result.prefill_chunk = chunk
        result.tokens = bytes_per_device(prefill_in)
        result.programs = [
            _compile(
                f"prefill ({what} → {context}-slot KV)",
                prefill_step,
                (gdef, state, mgdef, mstate, *prefill_in),
            ),
            _compile(
                "decode (1 token + sampling)", decode_step, (gdef, state, mgdef, mstate, *decode_in)
            ),
        ]
    result.seconds = time.perf_counter() - t0
    return result


def resolve_device_memory(value) -> tuple[str | None, int | None]:
    """None / bytes / '80GiB' / '141GB' / a ``DEVICES`` name -> (label, bytes)."""
    if value is None:
        return None, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value / GiB:.1f} GiB", int(value)
    text = str(value).strip().lower()
    name = DEVICE_ALIASES.get(text, text)
    if name in DEVICES:
        return DEVICES[name]
    m = re.fullmatch(r"([0-9.]+)\s*(gib|gb|mib|mb|tib|tb|b)?", text)
    if not m:
        raise ValueError(
            f"unknown device {value!r}: give bytes, e.g. '80GiB', or one of {', '.join(DEVICES)}"
        )
    unit = {
        "gib": GiB,
        "gb": GB,
        "mib": MiB,
        "mb": 10**6,
        "tib": 2**40,
        "tb": 10**12,
        "b": 1,
        None: 1,
    }[m.group(2)]
    n = int(float(m.group(1)) * unit)
    return f"{n / GiB:.1f} GiB", n


# --- text ------------------------------------------------------------------------------------


def _gb(n: int) -> str:
    return f"{n / GB:9.3f} GB {n / GiB:9.3f} GiB"


def format_plan(p: Plan) -> str:
    """A plan as a report: per-device bytes by kind, the compiled programs' memory, the fit."""
    cfg = p.config
    lines = []
    quant = "int8 linears + bf16 scales" if cfg.quantized else f"{cfg.param_dtype} linears"
    lines.append(
        f"Memory plan: {cfg.num_layers} layers, D={cfg.emb_size}, "
        f"{cfg.num_experts} experts, vocab {cfg.vocab_size} ({quant}, "
        f"{cfg.param_dtype} embedding)"
    )
    lines.append(
        f"mesh data={p.data} × model={p.model} ({p.devices} devices), context "
        f"{p.context}, batch {p.batch}, compute {cfg.compute_dtype}"
    )
    lines.append("")
    lines.append("per device (exact, from the sharded abstract state):")

    def row(label, n, whole):
        lines.append(f"  {label:<36} {_gb(n)}   whole {whole / GB:9.3f} GB")

    for kind, n in p.weights.items():
        row(f"weights: {kind}", n, p.weights_whole[kind])
    row("weights total", p.weight_bytes, sum(p.weights_whole.values()))
    row(f"KV memory ({cfg.dtype.name}, {p.batch}×{p.context} tokens)", p.kv, p.kv_whole)
    row("weights + KV memory", p.resident, sum(p.weights_whole.values()) + p.kv_whole)
    if p.programs:
        est = "XLA:CPU estimates" if p.backend == "cpu" else f"XLA ({p.backend}) figures"
        lines.append("")
        lines.append(f"compiled programs, per device ({est}; arguments exact):")
        lines.append(
            f"  {'program (GB)':<40} {'arguments':>10} {'outputs':>9} {'aliased':>9} "
            f"{'temp':>9} {'peak':>9}  compile"
        )
        for m in p.programs:
            lines.append(
                f"  {m.name:<40} {m.argument / GB:10.3f} {m.output / GB:9.3f} "
                f"{m.alias / GB:9.3f} {m.temp / GB:9.3f} {m.peak / GB:9.3f}"
                f"  {m.compile_seconds:5.1f} s"
            )
        prefill = p.programs[0]
        want = p.resident + p.tokens
        diff = (prefill.argument - want) / want
        lines.append(
            f"  prefill arguments vs weights + KV memory + its other inputs: "
            f"{prefill.argument / GB:.3f} vs {want / GB:.3f} GB ({diff:+.3%})"
        )
        lines.append(
            f"  the prefill un-embeds only each row's last prompt token: "
            f"{p.batch}×{cfg.vocab_size} logits, not {p.batch}×"
            f"{p.prefill_chunk or p.context}×{cfg.vocab_size}"
        )
        if p.backend == "cpu":
            lines.append(
                "  temp is XLA:CPU's figure: fusion, buffer reuse and bf16 handling "
                "differ on GPU/TPU"
            )
    lines.append("")
    peak_what = "peak of the compiled programs" if p.programs else "weights + KV memory"
    lines.append(f"needs per device: {p.peak / GB:.2f} GB ({p.peak / GiB:.2f} GiB) = {peak_what}")
    if p.device_memory is not None:
        ok = p.fits()
        lines.append(
            f"{p.device}: {p.device_memory / GiB:.1f} GiB per device -> "
            f"{'FITS' if ok else 'DOES NOT FIT'} (headroom "
            f"{(p.device_memory - p.peak) / GiB:+.1f} GiB)"
        )
    else:
        fits = [
            f"{n} ({(cap - p.peak) / GiB:+.1f} GiB)"
            for n, (_, cap) in DEVICES.items()
            if p.peak <= cap
        ]
        lines.append(
            "fits (nominal capacity, headroom): "
            + (", ".join(fits) if fits else "none of " + ", ".join(DEVICES))
        )
    lines.append(f"planned in {p.seconds:.1f} s")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


def add_plan_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m grok_flax plan``, added to ``parser``."""
    parser.add_argument(
        "--config",
        default="grok-1",
        help=f"preset ({', '.join(GrokConfig.presets())}), a JSON file of "
        f"GrokConfig fields or a folder holding config.json",
    )
    parser.add_argument(
        "--mesh",
        default="data=1,model=8",
        help="mesh shape, 'data=1,model=8' or '1x8' (data × model)",
    )
    parser.add_argument("--context", type=int, default=8192, help="KV memory length")
    parser.add_argument("--batch", type=int, default=1, help="rows served at once")
    parser.add_argument(
        "--prefill-chunk",
        type=int,
        default=512,
        help="prompt tokens per prefill call, as generate; 0 = the whole context at once",
    )
    parser.add_argument(
        "--device",
        default=None,
        help=f"device to check the fit against: {', '.join(DEVICES)} or "
        f"bytes such as 80GiB (without it: list the devices it fits)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="override num_layers (e.g. to plan a cut-down model)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="analytic figures only (any mesh size, no devices needed)",
    )
    parser.add_argument(
        "--backend",
        choices=("cpu", "default"),
        default="cpu",
        help="compile for simulated CPU devices, or for the default JAX "
        "backend (real accelerators: the real compiler's numbers)",
    )
    return parser


def _ensure_devices(n: int, backend: str) -> None:
    """Ask JAX for at least ``n`` simulated CPU devices, before it starts (no-op once it has
    started, or if ``XLA_FLAGS`` already asks for enough)."""
    if backend != "cpu":
        return
    m = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    try:
        jax.config.update("jax_platforms", "cpu")  # never grab an accelerator for this
        if m is None or int(m.group(1)) < n:
            jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # JAX already started: plan() says if there are too few devices


def run_plan(args: argparse.Namespace) -> int:
    """``python -m grok_flax plan``: plan, print the report; exit status 0 if it fits (or no
    device was named), 1 if not."""
    cfg = GrokConfig.load(args.config)
    if args.layers is not None:
        cfg = cfg.replace(num_layers=args.layers)
    shape = parse_mesh_spec(args.mesh)
    compile_ = not args.no_compile
    if compile_:
        _ensure_devices(shape["data"] * shape["model"], args.backend)
    result = plan(
        cfg,
        shape,
        context=args.context,
        batch=args.batch,
        device_memory=args.device,
        compile=compile_,
        backend=args.backend,
        prefill_chunk=args.prefill_chunk or None,
    )
    print(result.report())
    fits = result.fits()
    return 0 if fits is None or fits else 1


__all__ = [
    "DEVICES",
    "Plan",
    "ProgramMemory",
    "add_plan_arguments",
    "analytic_weight_bytes",
    "format_plan",
    "plan",
    "resolve_device_memory",
    "run_plan",
    "weight_bytes",
]
