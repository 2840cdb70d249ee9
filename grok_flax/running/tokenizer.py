"""Grok-1's tokenizer: a thin wrapper over SentencePiece.

The release's ``tokenizer.model`` is a BPE model with 131072 pieces and byte fallback;
``[PAD]`` = 0, ``[BOS]`` = 1, ``[EOS]`` = 2, ``[UNK]`` = 3. The release's ``run.py`` does not
prepend BOS, so ``encode`` doesn't either unless asked.
"""

from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm


class Tokenizer:
    """A SentencePiece model: ``encode(text) -> ids``, ``decode(ids) -> text``, pieces."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        self.path = path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{path} is not a SentencePiece model ({first})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.bos_id = self.sp.pad_id(), self.sp.bos_id()
        self.eos_id, self.unk_id = self.sp.eos_id(), self.sp.unk_id()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``, with the BOS / EOS id added when asked."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        ids = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids) -> str:
        """The text of token ids (any integers: lists, numpy or JAX arrays)."""
        return self.sp.decode([int(i) for i in ids])

    def piece(self, i: int) -> str:
        """The piece's text (``▁`` marks a leading space), e.g. for plot labels."""
        return self.sp.id_to_piece(int(i))

    def pieces(self, ids) -> list[str]:
        """The piece of each id (see ``piece``)."""
        return [self.piece(i) for i in ids]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"
