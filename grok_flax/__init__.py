"""grok_flax: Grok-1, xAI's 314B mixture-of-experts LLM, built piece by piece in Flax NNX."""

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

__version__ = "0.1.0"

__all__ = [
    "Attention", "CheckpointError", "DecoderLayer", "Grok", "GrokConfig", "KVMemory", "MoE",
    "QArray", "RMSNorm",
    "RotaryEmbedding", "Router", "abstract_model", "apply_rope", "attend_chunked",
    "attend_naive", "ffn_size", "kv_bytes_per_token", "load_checkpoint", "param_count",
    "quantize", "save_checkpoint", "soft_cap",
]
