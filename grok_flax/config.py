"""Configuration: every number that defines a Grok-1-architecture model.

Field names follow the reference code's ``LanguageModelConfig`` / ``TransformerConfig``
(xai-org/grok-1, ``model.py``), so a config written for the original code reads the same here.
``GrokConfig.grok_1()`` is exactly the released model; the small presets keep the architecture
and shrink the sizes for tests and demos.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

_FLOAT_DTYPES = ("float32", "bfloat16", "float16")
_COMPUTE_DTYPES = ("auto", *_FLOAT_DTYPES)
_ATTENTION_IMPLS = ("auto", "naive", "chunked", "tokamax", "splash")
_MOE_IMPLS = ("auto", "dense", "sparse", "gather", "tiled", "ragged", "tokamax", "gmm")
# what attention_impl / moe_impl "auto" become per platform (GrokConfig.for_platform): the XLA
# paths everywhere but TPU, where the TPU plan's compiled figures choose the Pallas kernels
# (Grok-1 on v5p-8: a third of the prefill temporaries, 0.72x the cost-model time;
# docs/tpu_projection.md); a platform not listed takes "default"
AUTO_IMPLS = {
    "default": {"attention_impl": "chunked", "moe_impl": "sparse"},
    "tpu": {"attention_impl": "splash", "moe_impl": "gmm"},
}


def ffn_size(emb_size: int, widening_factor: float) -> int:
    """The reference's rule for the expert hidden width: 2/3 of widening × emb, rounded up to 8.

    Grok-1: int(8 × 6144) × 2 // 3 = 32768 (already a multiple of 8).
    """
    size = int(widening_factor * emb_size) * 2 // 3
    return size + (8 - size) % 8


def resolve_dtype(name: str, platform: str | None = None):
    """ "auto" -> bfloat16 on accelerators, float32 on CPU; other names as they are."""
    if name != "auto":
        return jnp.dtype(name)
    import jax

    platform = platform or jax.default_backend()
    return jnp.dtype(jnp.float32 if platform == "cpu" else jnp.bfloat16)


def current_platform() -> str:
    """The platform a program traced now is for: the current mesh's devices' ("tpu" while
    compiling for a deviceless TPU slice under ``jax.set_mesh``, though JAX's own backend is
    the CPU), else JAX's default backend."""
    import jax

    device = jax.sharding.get_abstract_mesh().abstract_device
    return device.platform if device is not None else jax.default_backend()


@dataclass(frozen=True)
class GrokConfig:
    """Every number that defines a Grok-1-architecture model (frozen; a comment on each field in
    the source says what it is). ``GrokConfig.grok_1()`` is the released model exactly;
    ``small()`` and ``tiny()`` keep the architecture at demo and test sizes; ``load()`` reads a
    preset, a JSON file or a folder's ``config.json``. Invalid values raise ``ValueError``
    naming what is wrong."""

    # --- language model (reference: LanguageModelConfig) ---
    vocab_size: int = 128 * 1024  # number of token ids; the embedding has one row per id
    pad_token: int = 0  # keys whose token id is not > pad_token are masked (as the reference)
    eos_token: int = 2  # generation stops when a row emits this id
    sequence_len: int = 8192  # context length: the largest KV memory a model is asked for
    embedding_multiplier_scale: float = 78.38367176906169  # input embeddings × this
    output_multiplier_scale: float = 0.5773502691896257  # logits × this
    # --- transformer (reference: TransformerConfig) ---
    emb_size: int = 48 * 128  # model width D
    key_size: int = 128  # per-head width H of queries, keys and values
    num_q_heads: int = 48  # query heads
    num_kv_heads: int = 8  # key/value heads (grouped-query attention: q heads share them)
    num_layers: int = 64  # decoder layers
    widening_factor: float = 8.0  # expert hidden width = ffn_size(emb_size, widening_factor)
    attn_output_multiplier: float = 0.08838834764831845  # attention logits × this (1/sqrt(128))
    num_experts: int = 8  # experts per MoE layer
    num_selected_experts: int = 2  # top-k experts each token is routed to
    # --- fixed in the reference code, named here ---
    rope_base: float = 10000.0  # rotary embedding base ("base_exponent")
    norm_eps: float = 1e-5  # RMSNorm epsilon
    attn_logit_cap: float | None = 30.0  # logits -> cap * tanh(logits / cap); None: no cap
    # --- storage and compute ---
    quantized: bool = True  # linear weights as int8 + scales (as released) or plain floats
    attn_out_scale_blocks: int = 8  # scale blocks G along the input of attention's output proj.
    moe_out_scale_blocks: int = 8  # scale blocks G along the input of the experts' linear_1
    # activations ("fprop_dtype"). "auto": bfloat16 on GPU/TPU, as the release; float32 on CPU,
    # where XLA computes the release's bf16 graph in f32 anyway (excess precision), so the
    # reference's own CPU logits are matched to the last bf16 bit rather than to ~1e-2.
    compute_dtype: str = "auto"
    param_dtype: str = "float32"  # embedding, norms, router, and float (unquantized) linears
    # --- algorithms (same function, different cost) ---
    # "naive": full T×S logits (reference); "chunked": online softmax over blocks; "tokamax":
    # tokamax.dot_product_attention (flash kernels on GPU/TPU; needs the `kernels` extra);
    # "splash": Pallas TPU splash attention (jax.experimental), the 30·tanh cap in the kernel;
    # "auto": per platform (AUTO_IMPLS, GrokConfig.for_platform): chunked but on TPU
    attention_impl: str = "auto"
    attention_chunk: int = 512  # query/key block size of the chunked attention
    # "dense": reference all-experts; "sparse": only routed pairs (tiled/gather); "ragged":
    # grouped matmuls (lax.ragged_dot); "tokamax": tokamax.ragged_dot reading int8 in the
    # kernel (GPU/TPU; needs the `kernels` extra); "gmm": tokamax's Pallas TPU grouped matmul
    # (megablox) reading int8; "auto": per platform (AUTO_IMPLS, GrokConfig.for_platform):
    # sparse but on TPU
    moe_impl: str = "auto"
    # rows per tile of the sorted, grouped expert matmul; "auto": on CPU half the mean rows
    # per expert as a power of two in 64..256, on GPU the mean in 256..1024, on TPU in
    # 128..1024 (moe.auto_tile); gmm: the mean in 16..512 (moe.gmm_tile)
    moe_tile: int | str = "auto"
    scan_layers: bool = True  # one compiled layer under lax.scan (False: a Python loop)
    # run the Pallas TPU kernels ("splash", "gmm") in Pallas's interpret mode: the same kernel
    # body as JAX operations, on any backend (how the tests check them on CPU; slow)
    pallas_interpret: bool = False
    # --- ablation switches: Grok-1 is the default; others change the function (demo/ablate.py) ---
    use_rope: bool = True  # rotary embedding on q and k (False: no positions, only causality)
    post_norms: bool = True  # the sandwich's post-attention/post-MoE RMSNorms (False: pre-norm)
    renormalize_gates: bool = False  # top-k gates divided by their sum (Grok-1: raw probabilities)

    def __post_init__(self):
        problems = []

        def positive(*names):
            for n in names:
                v = getattr(self, n)
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    problems.append(f"{n} must be a positive integer, got {v!r}")

        positive(
            "vocab_size",
            "sequence_len",
            "emb_size",
            "key_size",
            "num_q_heads",
            "num_kv_heads",
            "num_layers",
            "num_experts",
            "num_selected_experts",
            "attn_out_scale_blocks",
            "moe_out_scale_blocks",
            "attention_chunk",
        )
        if self.moe_tile != "auto":
            positive("moe_tile")
        for name in (
            "quantized",
            "scan_layers",
            "pallas_interpret",
            "use_rope",
            "post_norms",
            "renormalize_gates",
        ):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid GrokConfig: " + "; ".join(problems))
        if self.num_q_heads % self.num_kv_heads:
            problems.append(
                f"num_q_heads ({self.num_q_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.key_size % 2:
            problems.append(f"key_size ({self.key_size}) must be even for rotary embeddings")
        if self.num_selected_experts > self.num_experts:
            problems.append(
                f"num_selected_experts ({self.num_selected_experts}) cannot exceed "
                f"num_experts ({self.num_experts})"
            )
        if not 0 <= self.pad_token < self.vocab_size:
            problems.append(f"pad_token {self.pad_token} outside vocab [0, {self.vocab_size})")
        if not 0 <= self.eos_token < self.vocab_size:
            problems.append(f"eos_token {self.eos_token} outside vocab [0, {self.vocab_size})")
        if not self.widening_factor > 0:
            problems.append(f"widening_factor must be > 0, got {self.widening_factor}")
        if self.quantized:
            d_attn = self.num_q_heads * self.key_size
            if d_attn % self.attn_out_scale_blocks:
                problems.append(
                    f"attn_out_scale_blocks ({self.attn_out_scale_blocks}) must "
                    f"divide num_q_heads*key_size ({d_attn})"
                )
            if self.ffn_size % self.moe_out_scale_blocks:
                problems.append(
                    f"moe_out_scale_blocks ({self.moe_out_scale_blocks}) must "
                    f"divide the expert width ({self.ffn_size})"
                )
        for name, allowed in (
            ("compute_dtype", _COMPUTE_DTYPES),
            ("param_dtype", _FLOAT_DTYPES),
            ("attention_impl", _ATTENTION_IMPLS),
            ("moe_impl", _MOE_IMPLS),
        ):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in (
            "embedding_multiplier_scale",
            "output_multiplier_scale",
            "attn_output_multiplier",
            "rope_base",
            "norm_eps",
            "attn_logit_cap",
        ):
            v = getattr(self, name)
            if name == "attn_logit_cap" and v is None:
                continue  # no cap: an ablation, not the release
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                problems.append(f"{name} must be a positive number, got {v!r}")
        if problems:
            raise ValueError("invalid GrokConfig: " + "; ".join(problems))

    # --- derived sizes ---
    @property
    def ffn_size(self) -> int:
        """Expert hidden width (Grok-1: 32768)."""
        return ffn_size(self.emb_size, self.widening_factor)

    @property
    def q_per_kv(self) -> int:
        """Query heads per key/value head: R in ``attention.py`` (Grok-1: 6)."""
        return self.num_q_heads // self.num_kv_heads

    @property
    def dtype(self):
        """The activation dtype, with "auto" resolved for the default JAX backend."""
        return resolve_dtype(self.compute_dtype)

    @property
    def pdtype(self):
        return jnp.dtype(self.param_dtype)

    def for_platform(
        self, platform: str | None = None, model_parallel: int = 1, data_parallel: int = 1
    ) -> GrokConfig:
        """This config with ``attention_impl`` / ``moe_impl`` "auto" resolved for ``platform``
        ("cpu", "gpu", "tpu"; default: ``current_platform()``, the current mesh's devices' or
        JAX's default backend) by ``AUTO_IMPLS``; explicit choices are kept.
        ``model_parallel`` / ``data_parallel``: the mesh's ``model`` and ``data`` sizes, for
        the limits below."""
        auto = dict(AUTO_IMPLS.get(platform or current_platform(), AUTO_IMPLS["default"]))
        # the Pallas TPU kernels work on whole 128-lane blocks: a model narrower than that
        # (the tests' small ones) takes the XLA path; "gmm" needs each device's share of the
        # expert width >= 128 (MoE checks it again on its mesh)
        if auto["attention_impl"] == "splash" and self.key_size < 128:
            auto["attention_impl"] = AUTO_IMPLS["default"]["attention_impl"]
        if auto["moe_impl"] == "gmm" and min(self.emb_size, self.ffn_size // model_parallel) < 128:
            auto["moe_impl"] = AUTO_IMPLS["default"]["moe_impl"]
        # the release splits the weights' model width D over "data" too; gmm runs per device
        # and gathers that axis for every layer (Grok-1 on v5e-32, data=4: prefill temp 0.62
        # GB against sparse's 0.08, compiled), where XLA's own path keeps it split
        if auto["moe_impl"] == "gmm" and data_parallel > 1:
            auto["moe_impl"] = AUTO_IMPLS["default"]["moe_impl"]
        changes = {k: v for k, v in auto.items() if getattr(self, k) == "auto"}
        return self.replace(**changes) if changes else self

    def replace(self, **changes) -> GrokConfig:
        """A copy with ``changes`` applied (validated again, like any new config)."""
        return dataclasses.replace(self, **changes)

    # --- presets ---
    @classmethod
    def grok_1(cls, **overrides) -> GrokConfig:
        """Exactly the released Grok-1 (xai-org/grok-1 ``run.py``): 314B parameters."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> GrokConfig:
        """A few-thousand-parameter model for unit tests (same architecture)."""
        base = dict(
            vocab_size=256,
            sequence_len=64,
            emb_size=32,
            key_size=8,
            num_q_heads=4,
            num_kv_heads=2,
            num_layers=2,
            widening_factor=2.0,
            num_experts=4,
            num_selected_experts=2,
            embedding_multiplier_scale=3.0,
            output_multiplier_scale=0.5,
            attn_output_multiplier=0.35,
            attn_out_scale_blocks=4,
            moe_out_scale_blocks=4,
            attention_chunk=16,
            moe_tile=8,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def small(cls, **overrides) -> GrokConfig:
        """The size of the bundled demo model: trainable on a laptop CPU."""
        base = dict(
            vocab_size=4096,
            sequence_len=256,
            emb_size=256,
            key_size=32,
            num_q_heads=8,
            num_kv_heads=2,
            num_layers=4,
            widening_factor=4.0,
            num_experts=8,
            num_selected_experts=2,
            embedding_multiplier_scale=16.0,
            output_multiplier_scale=0.0625,
            attn_output_multiplier=0.17677669529,
            attention_chunk=128,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def presets(cls) -> dict[str, Any]:
        """The presets by name, as ``load`` and ``--config`` accept them."""
        return {"grok-1": cls.grok_1, "small": cls.small, "tiny": cls.tiny}

    # --- serialisation ---
    def to_dict(self) -> dict[str, Any]:
        """Every field by name (what ``from_dict`` reads back)."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The fields as JSON text; written to ``path`` too when one is given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: GrokConfig | None = None) -> GrokConfig:
        """Fields left out take ``base``'s values (Grok-1 by default); unknown fields raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown GrokConfig field(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))})"
            )
        return dataclasses.replace(base or cls(), **d)

    @classmethod
    def from_json(cls, source: str | Path) -> GrokConfig:
        """Read a JSON object of fields from a file path or a JSON string."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("config JSON must be an object of GrokConfig fields")
        return cls.from_dict(d)

    @classmethod
    def load(cls, source: str | Path) -> GrokConfig:
        """A config by name or place: a preset (``"grok-1"``, ``"small"``, ``"tiny"``), a JSON
        file of fields (the others take Grok-1's values), a folder holding ``config.json``,
        or JSON text. The one loader behind every ``--config``."""
        text = str(source).strip()
        presets = cls.presets()
        if text.replace("_", "-") in presets:
            return presets[text.replace("_", "-")]()
        if text.startswith("{"):
            return cls.from_json(text)
        path = Path(text)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(f"{path} is a folder without a config.json")
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(
                f"unknown config {text!r}: a preset (grok-1, small, tiny), a JSON "
                f"file of GrokConfig fields, or a folder holding config.json"
            )
        return cls.from_json(path)

    @classmethod
    def from_reference_meta(cls, meta: dict[str, Any], **overrides) -> GrokConfig:
        """Config from a ``meta.json`` written next to a reference-code checkpoint.

        Its ``"config"`` object holds the reference's ``TransformerConfig`` /
        ``LanguageModelConfig`` fields; top-level keys that are config fields (``pad_token``,
        ``eos_token``, ``num_experts`` …) are taken too, other top-level keys (tokens, notes)
        are not config. Initialiser-only fields of the reference (``embed_std``, ``seed``,
        ``init_scale`` …) carry no meaning for the forward pass and are dropped; any other
        unknown field inside ``"config"`` is an error.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        init_only = {
            "embed_std",
            "seed",
            "init_scale",
            "embedding_init_scale",
            "model_size",
            "name",
            "shard_activations",
            "data_axis",
            "model_axis",
            "capacity_factor",
            "fprop_dtype",
            "model_type",
            "init_scale_override",
            "shard_embeddings",
        }
        flat = {k: v for k, v in meta.items() if k in names}
        flat.update({k: v for k, v in meta.get("config", {}).items() if k not in init_only})
        flat.update(overrides)
        return cls.from_dict(flat)
