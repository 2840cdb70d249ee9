"""grok_flax: Grok-1, xAI's 314B mixture-of-experts LLM, built piece by piece in Flax NNX.

The model, one file per component (each taught by a notebook): ``config``, ``rope``,
``norm``, ``attention``, ``router``, ``moe``, ``quant``, ``kv_memory``, ``layer``, ``model``;
with them ``axes`` (logical axis names → mesh axes) and ``inputs`` (the forward pass's input
checks). The core imports only the core.
Around it, grouped by role (see docs/architecture.md):

- ``grok_flax.checkpoint``: the released files — read (no pickle runs), written, loaded, converted;
- ``grok_flax.running``: generate text — tokenizer, sampling, the prefill and decode steps,
  the memory plan of serving on a mesh;
- ``grok_flax.scale``: meshes, placing arrays on them, several processes;
- ``grok_flax.demo``: the small bundled model — its corpus, training, evaluation;
- ``grok_flax.viz``: figures of routing, attention, RoPE, sharding (matplotlib Figures).
"""

import importlib

from grok_flax import checkpoint, running, scale
from grok_flax.attention import Attention, attend_chunked, attend_naive, soft_cap
from grok_flax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from grok_flax.config import GrokConfig, ffn_size
from grok_flax.kv_memory import KVMemory, kv_bytes_per_token
from grok_flax.layer import DecoderLayer
from grok_flax.model import Grok, abstract_model, param_count
from grok_flax.moe import MoE
from grok_flax.norm import RMSNorm
from grok_flax.quant import QArray, quantize
from grok_flax.rope import RotaryEmbedding, apply_rope
from grok_flax.router import Router
from grok_flax.running.generate import Generator, generate
from grok_flax.running.tokenizer import Tokenizer
from grok_flax.scale.mesh import make_mesh, mesh_devices
from grok_flax.scale.sharding import shard_module

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "CheckpointError",
    "DecoderLayer",
    "Generator",
    "Grok",
    "GrokConfig",
    "KVMemory",
    "MoE",
    "QArray",
    "RMSNorm",
    "RotaryEmbedding",
    "Router",
    "Tokenizer",
    "abstract_model",
    "apply_rope",
    "attend_chunked",
    "attend_naive",
    "checkpoint",
    "demo",
    "ffn_size",
    "generate",
    "kv_bytes_per_token",
    "load_checkpoint",
    "make_mesh",
    "mesh_devices",
    "param_count",
    "quantize",
    "running",
    "save_checkpoint",
    "scale",
    "shard_module",
    "soft_cap",
    "viz",
]

_LAZY = ("demo", "viz")  # imported on first use (viz brings in matplotlib)


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"grok_flax.{name}")
    raise AttributeError(f"module 'grok_flax' has no attribute {name!r}")
