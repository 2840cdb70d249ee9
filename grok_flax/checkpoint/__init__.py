"""Checkpoint I/O: the released Grok-1 files in, and out, and other formats.

- :mod:`~grok_flax.checkpoint.release`: what the release format *is* — file names, the order
  of the tensors, the two pickled forms, dtypes (no I/O);
- :mod:`~grok_flax.checkpoint.reader`: one tensor file → where its arrays' bytes are, without
  running the pickle;
- :mod:`~grok_flax.checkpoint.writer`: arrays → tensor files, byte for byte as the original
  code writes them; ``save_checkpoint`` writes a whole model;
- :mod:`~grok_flax.checkpoint.loader`: a ``ckpt-0`` folder → a (sharded) ``grok_flax.Grok``;
- :mod:`~grok_flax.checkpoint.convert`: safetensors and Orbax, both ways.
"""

from grok_flax.checkpoint.loader import checkpoint_dir, inspect_checkpoint, load_checkpoint
from grok_flax.checkpoint.release import PARAM_HOMES, CheckpointError, release_names
from grok_flax.checkpoint.writer import save_checkpoint

__all__ = [
    "PARAM_HOMES",
    "CheckpointError",
    "checkpoint_dir",
    "inspect_checkpoint",
    "load_checkpoint",
    "release_names",
    "save_checkpoint",
]
