"""KV memory: keys and values of every layer for tokens already seen, so decoding is O(T).

Stored as ``nnx.Cache`` state, stacked over layers to match the scanned decoder:
``k``, ``v`` [L, B, S, K, H] (keys after RoPE) and ``step`` [B] — how many slots of each
row are filled. A forward pass with memory writes its tokens at ``step`` and advances it, so
rows of one batch can sit at different lengths. Slot s holds the token at position s.

Writes touch only the new tokens' slots (``write``: a scatter into the stacked memory, done
in place when the memory is donated), so a decode step writes 2 × L × B × K × H values, not
the whole memory. A write past the end is an error, never a clamp (``Grok.__call__``
checks; ``write`` itself drops out-of-range slots rather than clamping them onto others).

Grok-1: 2 (k, v) × 64 layers × 8 kv-heads × 128 × 2 bytes (bf16) = 256 KiB per token,
2 GiB for one 8192-token sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grok_flax.config import GrokConfig


def kv_bytes_per_token(cfg: GrokConfig, dtype=jnp.bfloat16) -> int:
    """Bytes of KV memory one token occupies, all layers together."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.key_size * jnp.dtype(dtype).itemsize


def write(stack: jax.Array, layer, new: jax.Array, step: jax.Array) -> jax.Array:
    """Write ``new`` [B, T, K, H] into ``stack`` [L, B, S, K, H] at layer ``layer``, slots
    ``step[b] .. step[b] + T - 1`` of each row b. Only those B·T slots are written (a scatter;
    in place when ``stack`` is donated); slots past S are dropped, never clamped."""
    B, T = new.shape[:2]
    rows = jnp.arange(B, dtype=jnp.int32)[:, None]  # [B, 1]
    slots = step[:, None] + jnp.arange(T, dtype=jnp.int32)  # [B, T]
    return stack.at[layer, rows, slots].set(
        new.astype(stack.dtype), mode="drop", unique_indices=True
    )


class KVMemory(nnx.Module):
    """Keys and values of every layer for the tokens seen so far, plus each row's fill level.

    ``k``, ``v`` [L, B, S, K, H] (``nnx.Cache``); ``step`` [B]: slots filled per row. Pass it
    to ``Grok.__call__`` to continue the rows; build it sharded with
    ``sharding.create_sharded(lambda: KVMemory(cfg, B, S), mesh)``.
    """

    def __init__(self, cfg: GrokConfig, batch_size: int, max_len: int | None = None, dtype=None):
        max_len = cfg.sequence_len if max_len is None else max_len
        if batch_size < 1 or max_len < 1:
            raise ValueError(
                f"KV memory needs batch_size, max_len >= 1, got {batch_size}, {max_len}"
            )
        if max_len > cfg.sequence_len:
            raise ValueError(
                f"KV memory of {max_len} slots exceeds the model's context "
                f"sequence_len={cfg.sequence_len}"
            )
        dtype = cfg.dtype if dtype is None else jnp.dtype(dtype)
        shape = (cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.key_size)
        axes = ("layers", "batch", "kv_seq", "kv_heads", "head_dim")
        self.k = nnx.Cache(jnp.zeros(shape, dtype), logical=axes)  # [L, B, S, K, H]
        self.v = nnx.Cache(jnp.zeros(shape, dtype), logical=axes)  # [L, B, S, K, H]
        self.step = nnx.Cache(jnp.zeros((batch_size,), jnp.int32), logical=("batch",))  # [B]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return 2 * self.k[...].nbytes + self.step[...].nbytes
