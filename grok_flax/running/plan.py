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

``target="v5p:2x2x2"`` (a TPU slice, libtpu's topology name) compiles the same programs with
**XLA:TPU** on this machine, without a TPU: libtpu's deviceless topologies give the slice's
devices to compile for (``scale.mesh.topology_mesh``). Memory, HLO and the TPU cost model
(``cost_analysis()``: flops, bytes accessed, ``optimal_seconds``) are then the production
compiler's; nothing is run. ``cost=True`` adds figures for the *whole* model beside the
ideal, summed from parts compiled alone (the compiled cost analysis counts a loop's body
once and charges a sliced operand whole: see ``whole_model_cost``). "auto" algorithms and
tiles are resolved for the platform compiled for, never the host.

Command line::

    python -m grok_flax plan --config grok-1 --mesh data=1,model=8 --context 8192 --batch 1 \
        --device h100
    JAX_PLATFORMS=cpu python -m grok_flax plan --config grok-1 --target v5p:2x2x2 \
        --mesh data=1,model=8 --cost          # needs libtpu: pip install 'grok_flax[tpu]'
"""

import argparse
import math
import os
import re
import sys
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
from grok_flax.moe import dispatch_for
from grok_flax.running.steps import decode_step, prefill_step
from grok_flax.scale.mesh import AXES, make_mesh, parse_mesh_spec, topology_mesh
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
# TPU chips as libtpu's deviceless topologies name them (``device.device_kind``): HBM per chip,
# peak dense bf16 FLOP/s per chip and HBM bandwidth per chip, as Google's Cloud TPU
# system-architecture pages give them (read 2026-12; the pages' own units):
#   v4:  https://cloud.google.com/tpu/docs/v4  — 275 TFLOP/s (bf16 or int8), HBM2 32 GiB,
#        1200 GB/s. A chip has 2 TensorCores; the deviceless v4 topology lists each core as a
#        device, so a device holds half a chip.
#   v5e: https://cloud.google.com/tpu/docs/v5e — 197 TFLOP/s bf16, 393 TOP/s int8, HBM2 16 GB,
#        819 GB/s (the page's newer table says "800 GiBps"; 819 GB/s is its HBM2 row).
#   v5p: https://cloud.google.com/tpu/docs/v5p — 459 TFLOP/s bf16 (no int8 figure listed; the
#        newer table lists FP8 459), HBM2e 95 GB ("95 GiB" in the newer table), 2765 GB/s.
#   v6e: https://cloud.google.com/tpu/docs/v6e — 918 TFLOP/s bf16, 1836 TOP/s int8, 32 GB,
#        1640 GB/s (an older version of the page says 1600).
# Capacities are taken as GiB (as ``DEVICES`` above); usable HBM is a little less.
TPU_CHIPS: dict[str, tuple[str, int, float, float]] = {
    "TPU v4": ("tpu-v4", 32 * GiB, 275e12, 1200e9),
    "TPU v5 lite": ("tpu-v5e", 16 * GiB, 197e12, 819e9),
    "TPU v5": ("tpu-v5p", 95 * GiB, 459e12, 2765e9),
    "TPU v6 lite": ("tpu-v6e", 32 * GiB, 918e12, 1640e9),
}
TPU_SOURCES = {
    "TPU v4": "https://cloud.google.com/tpu/docs/v4",
    "TPU v5 lite": "https://cloud.google.com/tpu/docs/v5e",
    "TPU v5": "https://cloud.google.com/tpu/docs/v5p",
    "TPU v6 lite": "https://cloud.google.com/tpu/docs/v6e",
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
    # the compiler's cost analysis of the program as compiled (``compiled.cost_analysis()``),
    # per device. For the scanned model these count the layer loop's body once, not L times:
    # see ``whole_model_cost`` for figures that add up the layers.
    flops: float | None = None
    bytes_accessed: float | None = None
    optimal_seconds: float | None = None  # XLA:TPU's cost model; absent on CPU
    # bytes read + written by copies of the whole KV memory outside the layer loop (a layout
    # change XLA:TPU makes around the loop, ``_kv_copy_bytes``): real traffic every call
    kv_copies: int = 0
    compiled: object = field(default=None, repr=False, compare=False)

    @property
    def peak(self) -> int:
        """Arguments + outputs − aliased + temporaries: everything live during the program."""
        return self.argument + self.output - self.alias + self.temp


@dataclass
class LoopTerm:
    """A loop inside a layer whose body the compiled cost analysis counts once: what it is,
    how many *more* iterations a layer runs per call (``extra``, possibly fractional: a mean),
    and one iteration's cost compiled alone (per device)."""

    what: str
    extra: float
    flops: float
    bytes: float
    seconds: float | None

    @classmethod
    def compiled(cls, what: str, extra: float, cost: dict[str, float]) -> "LoopTerm":
        """From one iteration's compiled cost analysis (``_cost``)."""
        return cls(
            what,
            extra,
            cost.get("flops", 0.0),
            cost.get("bytes accessed", 0.0),
            cost.get("optimal_seconds"),
        )


@dataclass
class StepCost:
    """One program's cost per device for the whole model, and the ideal.

    ``flops``/``bytes``/``seconds`` (the TPU cost model's ``optimal_seconds``; None on CPU)
    are ``fixed + L × (layer + loops) + kv_copies``: ``layer`` is one decoder layer compiled
    alone with its own weights (nothing sliced from a stack), ``fixed`` the embedding, head
    and sampling (a 1-layer model's compile less that layer), ``loops`` the further
    iterations of the loops a layer's compile counts once (``LoopTerm``), ``kv_copies`` the
    whole-KV-memory copies found in the compiled serving program (their seconds at the
    chip's HBM bandwidth). ``check``: an unrolled compile of ``check_layers`` layers built
    the same way (each layer its own weights) divided by ``fixed + n × layer`` plus its own
    KV copies — flops, bytes, seconds (1.0 = it adds up). ``ideal_*``: ``ideal_cost``."""

    name: str
    tokens: int  # tokens per call (all rows)
    flops: float
    bytes: float
    seconds: float | None
    layer_flops: float
    layer_bytes: float
    layer_seconds: float | None
    fixed_flops: float
    fixed_bytes: float
    ideal_flops: float
    ideal_bytes: float
    check: tuple[float, float, float | None] | None = None
    check_layers: int = 0
    loops: list[LoopTerm] = field(default_factory=list)
    kv_copies: int = 0


@dataclass
class WholeModelCost:
    steps: list[StepCost]
    peak_flops: float | None = None  # the chip's published bf16 FLOP/s
    hbm_bandwidth: float | None = None  # its published HBM bytes/s

    def roofline_seconds(self, step: StepCost) -> float | None:
        """max(ideal FLOPs / peak, ideal bytes / bandwidth): the chip's limit."""
        if not self.peak_flops:
            return None
        return max(step.ideal_flops / self.peak_flops, step.ideal_bytes / self.hbm_bandwidth)


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
    target: str | None = None  # a TPU slice compiled for with XLA:TPU ("v5p:2x2x2")
    compiler: str = "XLA:CPU"  # what produced the compiled figures
    chip: str | None = None  # the devices' kind ("TPU v5")
    layout: str | None = None  # how the mesh's axes lie on the TPU torus
    cost: "WholeModelCost | None" = None  # whole-model cost figures (``cost=True``)

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


def _compile(name: str, step, args, kv_shape: tuple[int, ...] | None = None) -> ProgramMemory:
    """AOT-compile one of generate's jitted steps on abstract arguments. ``kv_shape``: the KV
    memory's per-device shape [L, B, S, K, H], to find copies of it (``_kv_copy_bytes``)."""
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    m = compiled.memory_analysis()
    cost = _cost(compiled)
    copies = _kv_copy_bytes(compiled.as_text(), kv_shape) if kv_shape else 0
    return ProgramMemory(
        name,
        int(m.argument_size_in_bytes),
        int(m.output_size_in_bytes),
        int(m.alias_size_in_bytes),
        int(m.temp_size_in_bytes),
        int(m.generated_code_size_in_bytes),
        time.perf_counter() - t0,
        flops=cost.get("flops"),
        bytes_accessed=cost.get("bytes accessed"),
        optimal_seconds=cost.get("optimal_seconds"),
        kv_copies=copies,
        compiled=compiled,
    )


_HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "f32": 4, "s32": 4, "f64": 8}
_ENTRY_COPY = re.compile(r"^\s*%\S+ = (\w+)\[([\d,]*)\]\S* copy\(")


def _kv_copy_bytes(hlo: str, kv_shape: tuple[int, ...]) -> int:
    """Bytes read + written by ``copy`` instructions of the whole KV memory (one of k, v:
    ``kv_shape`` per device) in the entry computation of compiled HLO text.

    XLA:TPU lays the loop-carried KV memory out differently from the program's argument
    (Grok-1 on v5p: one KV head per chip, and the loop wants it tiled with the head axis
    minor), so a program whose layers index a stack of KV memories copies all of it in
    before the layer loop and out after — every call. A layer compiled alone has no such
    copy, so ``whole_model_cost`` adds these from the serving program itself. (The HLO text
    is no API: if its format changes this finds nothing, and the report says none.)"""
    entry = hlo[hlo.find("\nENTRY") :]
    entry = entry[: entry.find("\n}")]
    total = 0
    for line in entry.splitlines():
        m = _ENTRY_COPY.match(line)
        if m and tuple(int(d) for d in m.group(2).split(",") if d) == tuple(kv_shape):
            total += 2 * math.prod(kv_shape) * _HLO_BYTES.get(m.group(1), 4)
    return total


def _cost(compiled) -> dict[str, float]:
    """``compiled.cost_analysis()`` as one dict (older JAX returns a list of one)."""
    try:
        cost = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - some backends have none
        import warnings

        warnings.warn(f"no cost analysis: {str(e).splitlines()[0][:200]}", stacklevel=2)
        return {}
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    out = {k: float(v) for k, v in (cost or {}).items() if isinstance(v, (int, float))}
    if out.get("optimal_seconds", 0.0) < 0:  # XLA:CPU has no cost model: it says -1
        del out["optimal_seconds"]
    return out


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
    target: str | None = None,
    cost: bool = False,
    attention_impl: str | None = None,
    moe_impl: str | None = None,
    check_layers: int = 2,
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
    ``target``: a TPU slice by libtpu's topology name (``"v5p:2x2x2"``, ``"v5e:4x8"``,
    ``"v6e:4x4"``): compile with XLA:TPU for its devices, no TPU needed (libtpu must be
    installed; ``data × model`` must equal the slice's devices); the fit is then checked
    against the chip's HBM unless ``device_memory`` says otherwise. ``cost=True``: also the
    whole model's flops / bytes / cost-model time per call beside the ideal
    (``whole_model_cost``: a layer, a 1-layer model, the loop bodies and a ``check_layers``-
    layer model compiled besides).
    ``attention_impl`` / ``moe_impl``: override the config's choice ("auto" is resolved for
    the platform compiled for — the *target's*, never the host's: ``GrokConfig.for_platform``).
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
    impls = {"attention_impl": attention_impl, "moe_impl": moe_impl}
    cfg = cfg.replace(
        compute_dtype=compute_dtype,
        sequence_len=max(cfg.sequence_len, context),
        **{k: v for k, v in impls.items() if v is not None},
    )
    device, capacity = resolve_device_memory(device_memory)

    layout = None
    if target is not None:
        if given is not None:
            raise ValueError("give either a mesh or a target, not both")
        mesh, layout = topology_mesh(target, data, model)
    else:
        mesh = given if given is not None else _mesh(data, model, backend)
    compiler, chip = "XLA:CPU" if backend == "cpu" else f"XLA ({backend})", None
    first = mesh.devices.flat[0] if isinstance(mesh, Mesh) else None
    if first is not None and first.platform == "tpu" and (target or jax.default_backend() != "tpu"):
        backend, chip = "tpu", first.device_kind
        compiler = f"XLA:TPU (libtpu {_libtpu_version()}, deviceless, never run)"
        if device_memory is None and chip in TPU_CHIPS:
            name, hbm, _, _ = TPU_CHIPS[chip]
            per_chip = _devices_per_chip(mesh)
            capacity = hbm // per_chip
            device = f"{DEVICES[name][0]}" + (
                f", 1/{per_chip} chip per device" if per_chip > 1 else ""
            )
    # "auto" algorithms for the platform compiled for: a deviceless TPU compile runs with
    # JAX_PLATFORMS=cpu, where the model itself would resolve them for the CPU
    cfg = cfg.for_platform(_tile_platform(backend), model_parallel=model, data_parallel=data)
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
        target=target,
        compiler=compiler,
        chip=chip,
        layout=layout,
    )

    if compile:
        chunk = min(prefill_chunk or context, context)
        result.prefill_chunk = chunk
        result.tokens, result.programs = _compile_programs(
            cfg, mesh, context, batch, chunk, _tile_platform(backend)
        )
        if cost:
            peak_bw = TPU_CHIPS.get(chip or "", (None, None, None, None))[2:]
            result.cost = whole_model_cost(result, mesh, *peak_bw, check_layers=check_layers)
    result.seconds = time.perf_counter() - t0
    return result


def _libtpu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libtpu")
    except PackageNotFoundError:
        return "?"


def _devices_per_chip(mesh) -> int:
    coords = [tuple(getattr(d, "coords", (d.id,))) for d in mesh.devices.flat]
    return max(1, len(coords) // len(set(coords)))


def _tile_platform(backend: str) -> str | None:
    """The platform ``moe.auto_tile`` should pick for when compiling for ``backend``: the
    target's, not the host's (a deviceless TPU compile runs with ``JAX_PLATFORMS=cpu``);
    None (the default backend's rule) for ``backend="default"``."""
    return backend if backend in ("cpu", "tpu") else None


def _with_tile(cfg: GrokConfig, pairs: int, platform: str | None) -> GrokConfig:
    """``cfg`` with ``moe_tile="auto"`` resolved for ``pairs`` token-expert pairs on
    ``platform`` (unchanged when the tile is fixed or the platform is the default's)."""
    from grok_flax.moe import auto_tile, gmm_tile

    if platform is None or cfg.moe_tile != "auto":
        return cfg
    if cfg.moe_impl == "gmm":  # the kernel's own rule (16…512 rows: its VMEM budget)
        return cfg.replace(moe_tile=gmm_tile(pairs, cfg.num_experts))
    return cfg.replace(moe_tile=auto_tile(pairs, cfg.num_experts, platform))


def _tile(cfg: GrokConfig, pairs: int, platform: str | None) -> int:
    """The rows per MoE tile the compiled program uses for ``pairs`` token-expert pairs:
    ``moe_tile``, or "auto" resolved as the program resolves it (``_with_tile``, else the
    default backend's rule)."""
    from grok_flax.moe import auto_tile

    tile = _with_tile(cfg, pairs, platform).moe_tile
    return auto_tile(pairs, cfg.num_experts, platform) if tile == "auto" else tile


def _compile_programs(
    cfg: GrokConfig,
    mesh,
    context: int,
    batch: int,
    chunk: int,
    platform: str | None = None,
    *,
    layers_apart: bool = False,
):
    """AOT-compile generate's prefill (a ``chunk``-token call into a ``context``-slot KV
    memory) and decode step for ``cfg`` on ``mesh`` -> (prefill's other inputs' bytes per
    device, [prefill, decode] ``ProgramMemory``). ``platform``: the one the MoE's
    ``moe_tile="auto"`` is resolved for (``_tile_platform``), per program.

    ``layers_apart=True`` (for ``whole_model_cost``'s check): each layer's weights are a
    separate argument, stacked inside the program, so no layer is sliced from a stacked
    argument (XLA folds the slice of the stack back to the argument). With the stack as the
    argument, an unrolled program copies each layer's whole expert stack out of it before
    taking the chosen experts (seen on XLA:TPU), which the serving program does not."""
    k = cfg.num_selected_experts
    prefill_cfg = _with_tile(cfg, batch * chunk * k, platform)
    decode_cfg = _with_tile(cfg, batch * k, platform)
    gdef, state, mgdef, mstate = _abstract(prefill_cfg, batch, context, mesh)
    decode_gdef = (
        gdef
        if decode_cfg == prefill_cfg
        else nnx.graphdef(nnx.eval_shape(lambda: Grok(decode_cfg, rngs=nnx.Rngs(0))))
    )

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
        jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=batch_sharding(mesh, 1, batch=batch)),
        0,
        f32(batch),
        f32(batch),
        ints(batch),
    )
    what = "prompt" if chunk == context else f"{chunk}-token chunk"
    k_leaf = jax.tree.leaves(mstate["k"])[0]
    kv_shape = tuple(k_leaf.sharding.shard_shape(k_leaf.shape))
    steps = [
        (f"prefill ({what} → {context}-slot KV)", prefill_step, gdef, prefill_in),
        ("decode (1 token + sampling)", decode_step, decode_gdef, decode_in),
    ]
    programs = []
    for name, step, graph, inputs in steps:
        if layers_apart:
            fn, params = _layers_apart(step, graph, mgdef, state, cfg.num_layers)
            args = (*params, mstate, *inputs)
        else:
            fn, args = step, (graph, state, mgdef, mstate, *inputs)
        programs.append(_compile(name, fn, args, kv_shape))
    return bytes_per_device(prefill_in), programs


def _layers_apart(step, graph, mem_graph, state, n: int):
    """``step`` (prefill_step / decode_step) with the model's ``n`` stacked layers taken as
    ``n`` separate per-layer states, stacked inside the program -> (jitted function of
    (layers, rest, memory, *inputs), (layers, rest) abstract arguments).

    So no layer's weights are sliced out of a stacked argument: XLA folds the slice of a
    stack it built back to the argument. (With the stack as the argument, an unrolled
    program copies each layer's whole expert stack out of it before taking the chosen
    experts — seen on XLA:TPU; the serving program, a scan, does not.) The KV memory stays
    one stacked argument, as the model carries it: see ``whole_model_cost`` on what that
    costs the check."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    def unstack(a):  # [n, ...] -> one layer's [...], sharded as the stack without its axis
        spec = tuple(a.sharding.spec)[1:]
        return jax.ShapeDtypeStruct(
            a.shape[1:], a.dtype, sharding=NamedSharding(a.sharding.mesh, P(*spec))
        )

    one = jax.tree.map(unstack, state["layers"])
    rest = {k: v for k, v in state.items() if k != "layers"}

    def run(layers, rest, mem_state, *inputs):
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)  # [n, ...]
        params = nnx.State({**rest, "layers": stacked})
        return step(graph, params, mem_graph, mem_state, *inputs)

    return jax.jit(run, donate_argnums=(2,)), ([one] * n, rest)


# --- whole-model cost ------------------------------------------------------------------------


def _expert_tile_cost(cfg: GrokConfig, mesh, tile: int) -> dict[str, float]:
    """One tile of the tiled MoE dispatch (``expert_ffn`` on [tile, D] rows with one expert's
    weights, sharded as in the model) compiled alone: its cost analysis per device."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from grok_flax.moe import expert_ffn
    from grok_flax.quant import QArray

    D, F = cfg.emb_size, cfg.ffn_size

    def weight(shape, spec, blocks):
        def sds(shape_, spec_, dtype):
            return jax.ShapeDtypeStruct(shape_, dtype, sharding=NamedSharding(mesh, spec_))

        if not cfg.quantized:
            return sds(shape, spec, cfg.pdtype)
        return QArray(
            sds(shape, spec, jnp.int8), sds((blocks, shape[1]), P(None, spec[1]), jnp.bfloat16)
        )

    w = weight((D, F), P("data", "model"), 1)
    w1 = weight((F, D), P("model", "data"), cfg.moe_out_scale_blocks)
    xt = jax.ShapeDtypeStruct((tile, D), cfg.dtype, sharding=NamedSharding(mesh, P()))
    compiled = jax.jit(expert_ffn).lower(xt, w, w, w1).compile()
    return _cost(compiled)


def ideal_cost(p: Plan, tokens_per_row: int, decode: bool) -> tuple[float, float]:
    """(FLOPs, bytes) per device that a call of ``tokens_per_row`` tokens per row *needs*:
    modelled from the config, not compiled.

    FLOPs: the routed work — every token through the attention projections and its k
    experts (2 FLOPs per weight), attention scores and values against the KV it attends
    (decode: the whole ``context``; a prefill chunk: ``context / 2`` keys per query, the
    mean over the chunks of a full-length prompt), and the un-embedding of one token per
    row. Bytes: the int8 weights (and scales) the call must read — the attention
    projections, the router, the norms and the embedding table (fp32 as stored) always;
    the experts the rows choose (decode, batch B: the expected number of distinct experts,
    E·(1 − (1 − k/E)^B); a prefill chunk: all of them) — plus the KV memory it reads and
    writes. All divided as the mesh divides them (weights over every device, heads over
    ``model``, rows over ``data`` when it divides the batch)."""
    cfg = p.config
    D, H, Nq, Nk = cfg.emb_size, cfg.key_size, cfg.num_q_heads, cfg.num_kv_heads
    E, F, L, V, k = (
        cfg.num_experts,
        cfg.ffn_size,
        cfg.num_layers,
        cfg.vocab_size,
        cfg.num_selected_experts,
    )
    devices = p.data * p.model
    rows = p.data if p.batch % p.data == 0 else 1  # devices the rows are split over
    n = p.batch * tokens_per_row  # tokens in the call
    attn = D * Nq * H + 2 * D * Nk * H + Nq * H * D
    expert = 3 * D * F
    keys = p.context if decode else p.context / 2
    flops = L * (2 * n * (attn + k * expert) / devices + 4 * n * keys * Nq * H / (p.model * rows))
    flops += 2 * p.batch * V * D / devices  # un-embed one token per row
    int8 = p.weights.get("int8 linears", p.weights.get("float linears", 0))
    expert_bytes = int8 * (E * expert) / (attn + E * expert)  # the experts' share
    chosen = E * (1 - (1 - k / E) ** p.batch) if decode else E
    nbytes = p.weight_bytes - expert_bytes + expert_bytes * chosen / E + p.kv
    return flops, nbytes


def _layer_alone_cost(cfg: GrokConfig, mesh, context: int, batch: int, tokens: int):
    """One decoder layer compiled alone, as the serving programs run it (``tokens`` per row
    into a ``context``-slot KV memory), with its *own* weights and a one-layer KV memory as
    arguments — nothing sliced out of a stacked ``[L, ...]`` array, which the cost analysis
    would charge whole. -> its cost analysis per device."""
    from grok_flax import axes
    from grok_flax.layer import DecoderLayer

    layer = nnx.eval_shape(lambda: DecoderLayer(cfg, rngs=nnx.Rngs(0)))
    graph, state = nnx.graphdef(layer), abstract_state(layer, mesh)
    memory = nnx.eval_shape(lambda: KVMemory(cfg.replace(num_layers=1), batch, context))
    mstate = abstract_state(memory, mesh)
    k, v = jax.tree.leaves(mstate["k"])[0], jax.tree.leaves(mstate["v"])[0]  # [1, B, S, K, H]

    def arg(dtype, *shape):
        return jax.ShapeDtypeStruct(
            shape, dtype, sharding=batch_sharding(mesh, len(shape), batch=batch)
        )

    h = arg(cfg.dtype, batch, tokens, cfg.emb_size)  # [B, T, D]
    positions, k_valid = arg(jnp.int32, batch, tokens), arg(jnp.bool_, batch, context)
    step = arg(jnp.int32, batch)

    def one_layer(state, k, v, h, positions, k_valid, step):
        def run(state, k, v, h, positions, k_valid, step):
            h, (k, v), _ = nnx.merge(graph, state)(
                h, positions, (k, v), k_valid=k_valid, step=step, layer=0
            )
            return h, k, v

        def out_specs(mesh_):  # a mesh with Explicit axes states its outputs' shardings
            return (
                axes.spec_for(axes.ACTIVATION, h.shape, mesh_),
                k.sharding.spec,
                v.sharding.spec,
            )

        return axes.run_on_mesh(mesh, run, out_specs, state, k, v, h, positions, k_valid, step)

    compiled = jax.jit(one_layer, donate_argnums=(1, 2)).lower(
        state, k, v, h, positions, k_valid, step
    )
    return _cost(compiled.compile())


def _key_block_cost(cfg: GrokConfig, mesh, batch: int, q_rows: int, k_rows: int):
    """The chunked attention on one block of ``q_rows`` queries against one block of
    ``k_rows`` keys (``attend_chunked`` with a single block each way), sharded as in the
    model (rows over ``data``, KV heads over ``model``), compiled alone: one iteration of the
    key-block loop, plus its once-per-query-block start and end (< 1 % of the block for
    Grok-1: the final division of [qc, heads, H])."""
    import warnings

    from jax.sharding import NamedSharding

    from grok_flax.attention import attend_chunked
    from grok_flax.axes import spec_for

    K, R, H = cfg.num_kv_heads, cfg.q_per_kv, cfg.key_size

    def sds(shape, logical, dtype):
        with warnings.catch_warnings():  # rows data does not divide are replicated: fine
            warnings.simplefilter("ignore")
            spec = spec_for(logical, shape, mesh)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    q = sds((batch, q_rows, K, R, H), ("batch", None, "kv_heads", None, None), cfg.dtype)
    kv = sds((batch, k_rows, K, H), ("batch", None, "kv_heads", None), cfg.dtype)
    q_pos = sds((batch, q_rows), ("batch", None), jnp.int32)
    k_pos = sds((batch, k_rows), ("batch", None), jnp.int32)
    k_valid = sds((batch, k_rows), ("batch", None), jnp.bool_)
    attend = partial(
        attend_chunked,
        multiplier=cfg.attn_output_multiplier,
        cap=cfg.attn_logit_cap,
        chunk=max(q_rows, k_rows),
    )
    return _cost(jax.jit(attend).lower(q, kv, kv, q_pos, k_pos, k_valid).compile())


def attention_block_pairs(context: int, chunk: int, block: int) -> float:
    """(query block, key block) pairs the chunked attention computes per ``chunk``-token
    prefill call, as the mean over the calls of a full ``context``-token prompt: a pair
    runs when one of its queries can see one of its keys (causal, filled slots); the rest
    are skipped by its ``cond`` at run time. Blocks are ``min(block, chunk)`` queries and
    ``min(block, context)`` keys, as ``attend_chunked`` cuts them."""
    qc, kc = min(block, chunk), min(block, context)
    key_blocks, calls = -(-context // kc), -(-context // chunk)
    total = 0
    for i in range(calls):
        for j in range(-(-chunk // qc)):
            last = i * chunk + min((j + 1) * qc, chunk) - 1  # the block's last position
            total += min(key_blocks, last // kc + 1)
    return total / calls


def whole_model_cost(
    p: Plan, mesh, peak_flops=None, hbm_bandwidth=None, *, check_layers: int = 2
) -> WholeModelCost:
    """Flops, bytes accessed and cost-model seconds per device of the plan's prefill call
    and decode step for the *whole* model, beside the ideal (``ideal_cost``).

    The compiler's cost analysis counts a loop's body once (the scanned 64-layer Grok-1 and
    a 1-layer model report the same flops), and charges a fusion that slices an operand
    the whole operand when the slice is fused into a matmul (a layer of the stacked
    ``[L, ...]`` weights or KV memory): so the serving programs' own figures add up neither
    the layers nor their bytes. Here the whole is summed from parts compiled alone:

    - ``layer``: one decoder layer with its own weights (``_layer_alone_cost``);
    - ``fixed``: a 1-layer model unrolled (its ``[1, ...]`` stacks are the whole arrays)
      less that layer: embedding, final norm, un-embedding, sampling;
    - loops a layer's compile counts once, each body compiled alone and added for every
      further iteration (``LoopTerm``): the prefill's MoE tiles (``lax.map`` + ``cond``;
      *balanced* routing: every expert gets its share of the chunk's token-expert pairs,
      real routing adds up to one partly filled tile per expert) and the chunked
      attention's (query block, key block) pairs (``attention_block_pairs``: the mean over
      a full-length prompt's chunks, the skipped blocks left out);
    - the copies of the whole KV memory the serving program makes around its layer loop
      (``_kv_copy_bytes``, read from its HLO), at the chip's HBM bandwidth.

    ``fixed + L × (layer + loops) + copies``. The check: an unrolled model of
    ``check_layers`` layers, each with its own weights (``_compile_programs(...,
    layers_apart=True)``), against ``fixed + n × layer`` + its copies (its loops are
    counted once per layer, as the layer's)."""
    cfg, L = p.config, p.config.num_layers
    chunk = p.prefill_chunk or p.context
    platform = _tile_platform(p.backend)
    one = _compile_programs(
        cfg.replace(num_layers=1, scan_layers=False), mesh, p.context, p.batch, chunk, platform
    )[1]
    n = max(1, check_layers)
    checked = _compile_programs(
        cfg.replace(num_layers=n, scan_layers=False),
        mesh,
        p.context,
        p.batch,
        chunk,
        platform,
        layers_apart=True,
    )[1]
    steps = []
    for i, (serving, tokens, decode) in enumerate(
        [(p.programs[0], chunk, False), (p.programs[1], 1, True)]
    ):
        pairs = p.batch * tokens * cfg.num_selected_experts
        step_cfg = _with_tile(cfg, pairs, platform)
        layer = _layer_alone_cost(step_cfg, mesh, p.context, p.batch, tokens)
        c1, cn = one[i], checked[i]
        has_seconds = c1.optimal_seconds is not None and "optimal_seconds" in layer
        lf, lb = layer.get("flops", 0.0), layer.get("bytes accessed", 0.0)
        ls = layer.get("optimal_seconds") if has_seconds else None
        ff, fb = c1.flops - lf, c1.bytes_accessed - lb
        fs = c1.optimal_seconds - ls if has_seconds else None

        def copy_seconds(nbytes):
            return nbytes / hbm_bandwidth if hbm_bandwidth else 0.0

        loops = _loop_terms(step_cfg, mesh, p, tokens, chunk, pairs, platform)
        per_layer = [
            lf + sum(t.extra * t.flops for t in loops),
            lb + sum(t.extra * t.bytes for t in loops),
            None if ls is None else ls + sum(t.extra * (t.seconds or 0.0) for t in loops),
        ]
        predicted = (
            ff + n * lf,
            fb + n * lb + cn.kv_copies,
            None if ls is None else fs + n * ls + copy_seconds(cn.kv_copies),
        )
        measured = (cn.flops, cn.bytes_accessed, cn.optimal_seconds)
        check = None  # the check program's cost analysis may be missing (then: no check)
        if None not in measured[:2]:
            check = tuple(
                None if m is None or q is None else m / q
                for m, q in zip(measured, predicted, strict=True)
            )
        ideal_flops, ideal_bytes = ideal_cost(p, tokens, decode)
        steps.append(
            StepCost(
                name=serving.name,
                tokens=p.batch * tokens,
                flops=ff + L * per_layer[0],
                bytes=fb + L * per_layer[1] + serving.kv_copies,
                seconds=None
                if ls is None
                else fs + L * per_layer[2] + copy_seconds(serving.kv_copies),
                layer_flops=lf,
                layer_bytes=lb,
                layer_seconds=ls,
                fixed_flops=ff,
                fixed_bytes=fb,
                ideal_flops=ideal_flops,
                ideal_bytes=ideal_bytes,
                check=check,
                check_layers=n,
                loops=loops,
                kv_copies=serving.kv_copies,
            )
        )
    return WholeModelCost(steps, peak_flops, hbm_bandwidth)


def _loop_terms(cfg, mesh, p: Plan, tokens, chunk, pairs, platform) -> list[LoopTerm]:
    """The loops one layer of a ``tokens``-per-row call runs whose body its compiled cost
    counts once, each with one iteration compiled alone (see ``whole_model_cost``)."""
    terms = []
    E = cfg.num_experts
    if dispatch_for(cfg.moe_impl, pairs, E) == "tiled":
        tile = max(1, min(_tile(cfg, pairs, platform), pairs))
        per_expert = -(-pairs // E)  # every expert's share of the pairs (balanced)
        tiles = E * -(-per_expert // tile)  # in whole tiles
        terms.append(
            LoopTerm.compiled(
                f"MoE tiles: {tiles} of {tile} rows per layer for {pairs} token-expert pairs "
                f"(balanced routing), one tile compiled alone",
                tiles - 1,
                _expert_tile_cost(cfg, mesh, tile),
            )
        )
    if tokens > 1 and cfg.attention_impl == "chunked":
        block = cfg.attention_chunk
        mean = attention_block_pairs(p.context, chunk, block)
        qc, kc = min(block, chunk), min(block, p.context)
        terms.append(
            LoopTerm.compiled(
                f"attention blocks: {mean:g} ({qc}-query × {kc}-key) blocks per layer, the "
                f"mean over a {p.context}-token prompt's {chunk}-token calls (blocks no "
                f"query sees are skipped), one block compiled alone",
                mean - 1,
                _key_block_cost(cfg, mesh, p.batch, qc, kc),
            )
        )
    return terms


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
    if p.programs:
        lines.append(_algorithms(p))
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
        if p.backend == "cpu":
            est = "XLA:CPU estimates"
        elif p.backend == "tpu":
            est = f"compiled by {p.compiler} for {p.chip}"
        else:
            est = f"XLA ({p.backend}) figures"
        lines.append("")
        if p.target:
            lines.append(f"TPU target {p.target}: {p.devices} × {p.chip}, mesh laid {p.layout}")
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
    if p.cost is not None:
        lines.extend(_format_cost(p))
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


def _format_cost(p: Plan) -> list[str]:
    c = p.cost
    lines = ["", f"whole-model cost per device per call ({p.compiler}; ideal: modelled):"]
    lines.append(
        f"  {'program':<40} {'GFLOP':>9} {'ideal':>9} {'×':>5} {'GB read':>8} {'ideal':>7} "
        f"{'×':>5} {'cost-model ms':>13} {'roofline ms':>11}"
    )
    for s in c.steps:
        roof = c.roofline_seconds(s)
        lines.append(
            f"  {s.name:<40} {s.flops / 1e9:9.1f} {s.ideal_flops / 1e9:9.1f} "
            f"{s.flops / s.ideal_flops:5.2f} {s.bytes / GB:8.3f} {s.ideal_bytes / GB:7.3f} "
            f"{s.bytes / s.ideal_bytes:5.2f} "
            f"{'-' if s.seconds is None else f'{s.seconds * 1e3:.3f}':>13} "
            f"{'-' if roof is None else f'{roof * 1e3:.3f}':>11}"
        )
    for s in c.steps:
        ms = "" if s.layer_seconds is None else f", {s.layer_seconds * 1e3:.4f} ms"
        lines.append(
            f"  {s.name.split(' ')[0]}: one layer alone {s.layer_flops / 1e9:.3f} GFLOP, "
            f"{s.layer_bytes / GB:.4f} GB{ms}; the rest (embedding, head, sampling) "
            f"{s.fixed_flops / 1e9:.3f} GFLOP, {s.fixed_bytes / GB:.4f} GB"
        )
        for t in s.loops:
            lines.append(
                f"    + {t.what}: {t.extra:g} more × {p.config.num_layers} layers × "
                f"{t.flops / 1e9:.3f} GFLOP, {t.bytes / GB:.4f} GB"
            )
        if s.kv_copies:
            lines.append(
                f"    + copies of the whole KV memory around the layer loop (in its HLO): "
                f"{s.kv_copies / GB:.3f} GB"
            )
        if s.check is None:
            lines.append(f"    check: no cost analysis for the {s.check_layers}-layer compile")
            continue
        sec = "" if s.check[2] is None else f", {s.check[2]:.3f} (cost-model time)"
        lines.append(
            f"    check: {s.check_layers}-layer unrolled compile (each layer its own "
            f"weights) / (rest + {s.check_layers} × layer) = {s.check[0]:.3f} (flops), "
            f"{s.check[1]:.3f} (bytes){sec}"
        )
    lines.append(
        "  compiled cost analyses summed as rest + L × (layer + loops) + KV copies; nothing was run"
    )
    if c.peak_flops:
        lines.append(
            f"  roofline: max(ideal FLOPs / {c.peak_flops / 1e12:.0f} TFLOP/s, ideal bytes / "
            f"{c.hbm_bandwidth / 1e9:.0f} GB/s), {p.chip}'s published peak bf16 and HBM "
            f"figures ({TPU_SOURCES.get(p.chip, 'plan.TPU_CHIPS')})"
        )
    return lines


def _algorithms(p: Plan) -> str:
    """Which attention and MoE algorithms the compiled programs use, as resolved for the
    platform compiled for: "attention: chunked, MoE: sparse (prefill tiled, tile 128;
    decode gather)"."""
    cfg = p.config
    chunk = p.prefill_chunk or p.context
    platform = _tile_platform(p.backend)
    parts = []
    for what, tokens in (("prefill", chunk), ("decode", 1)):
        pairs = p.batch * tokens * cfg.num_selected_experts
        impl = dispatch_for(cfg.moe_impl, pairs, cfg.num_experts)  # as MoE.__call__
        if impl == "tiled":
            impl = f"{impl}, tile {min(_tile(cfg, pairs, platform), pairs)}"
        elif impl == "gmm":
            impl = f"gmm, tile {_with_tile(cfg, pairs, 'tpu').moe_tile}"
        parts.append(f"{what} {impl}")
    attention = cfg.attention_impl
    return f"attention: {attention} (decode: one pass), MoE: {cfg.moe_impl} ({'; '.join(parts)})"


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
        "--target",
        default=None,
        help="a TPU slice by libtpu's topology name (v5p:2x2x2, v5e:4x8, v6e:4x4, ...): "
        "compile with XLA:TPU, no TPU needed (needs libtpu: pip install 'grok_flax[tpu]'); "
        "the mesh must use all its devices",
    )
    parser.add_argument(
        "--cost",
        action="store_true",
        help="also the whole model's flops / bytes / cost-model time per call beside the "
        "ideal (compiles a layer, 1- and 2-layer models and the loop bodies alone too)",
    )
    parser.add_argument(
        "--attention-impl",
        default=None,
        help="attention algorithm (the config's choice otherwise): auto, naive, chunked, "
        "tokamax, splash; 'auto' is resolved for the platform compiled for (--target: TPU)",
    )
    parser.add_argument(
        "--moe-impl",
        default=None,
        help="MoE dispatch (the config's choice otherwise): auto, dense, sparse, gather, "
        "tiled, ragged, tokamax, gmm; 'auto' is resolved for the platform compiled for",
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
    target = getattr(args, "target", None)
    if compile_:
        _ensure_devices(1 if target else shape["data"] * shape["model"], args.backend)
    if target and compile_:
        import importlib.util

        from grok_flax.scale.mesh import TPU_MISSING

        if importlib.util.find_spec("libtpu") is None:
            print(f"error: {TPU_MISSING}", file=sys.stderr)
            return 2
    result = plan(
        cfg,
        shape,
        context=args.context,
        batch=args.batch,
        device_memory=args.device,
        compile=compile_,
        backend=args.backend,
        prefill_chunk=args.prefill_chunk or None,
        target=target if compile_ else None,
        cost=getattr(args, "cost", False) and compile_,
        attention_impl=getattr(args, "attention_impl", None),
        moe_impl=getattr(args, "moe_impl", None),
    )
    print(result.report())
    fits = result.fits()
    return 0 if fits is None or fits else 1


__all__ = [
    "DEVICES",
    "LoopTerm",
    "TPU_CHIPS",
    "TPU_SOURCES",
    "attention_block_pairs",
    "Plan",
    "ProgramMemory",
    "StepCost",
    "WholeModelCost",
    "add_plan_arguments",
    "analytic_weight_bytes",
    "format_plan",
    "ideal_cost",
    "plan",
    "resolve_device_memory",
    "run_plan",
    "weight_bytes",
    "whole_model_cost",
]
