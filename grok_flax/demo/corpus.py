"""The demo model's corpus and tokenizer: the Python standard library's own sources.

The documents are the ``.py`` files of the running interpreter's standard library (code and
docstrings, PSF licence): every machine with CPython ≥ 3.10 has them, so the corpus needs no
download. The selection is deterministic — sorted relative paths, fixed exclusions, a size
cap — and the held-out split is by *file*, from a hash of its relative path, so a held-out file
is never seen in training. (Different Python versions ship slightly different files; the split
rule is the same everywhere.)

Excluded: test packages (``test``, ``tests``, ``idle_test``, ``test_*.py``), ``site-packages``,
the generated codec tables under ``encodings/`` and ``pydoc_data/`` (a 750 KB dump of the
documentation), and any file over ``MAX_FILE_BYTES``.

The tokenizer is a SentencePiece BPE trained here with Grok-1's conventions: the same special
ids (pad 0 ``[PAD]``, bos 1 ``[BOS]``, eos 2 ``[EOS]``, unk 3 ``[UNK]``), byte fallback,
digits split, identity normalisation with whitespace kept, and runs of newlines and spaces as
user-defined pieces (as Grok-1); runs of spaces (indentation) are learned as "▁▁▁▁"-style
pieces, so an indented line start costs one or two tokens.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MAX_FILE_BYTES = 200_000
HELDOUT_PERCENT = 5
EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "encodings",
        "pydoc_data",
    }
)
# Grok-1's tokenizer reserves the same kinds of pieces: newline runs and tab runs. (Grok-1 also
# lists runs of spaces, but SentencePiece turns spaces into "▁" before matching user symbols,
# so those are never produced; runs of "▁" are learned as ordinary BPE pieces instead.)
USER_SYMBOLS = ["\n" * n for n in range(1, 5)] + ["\t" * n for n in range(1, 3)]


def stdlib_root() -> Path:
    """The folder of this Python's standard library (the corpus's source)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(rel: Path) -> bool:
    if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
        return True
    return rel.name.startswith("test_") or rel.name == "test.py"


def is_heldout(rel_path: str) -> bool:
    """The split rule: a file is held out iff sha1(relative posix path) mod 100 < 5."""
    digest = hashlib.sha1(rel_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


@dataclass(frozen=True)
class Document:
    """One source file of the corpus: its path under the standard library and its text."""

    path: str  # relative to the stdlib root, posix
    text: str


def stdlib_documents(
    root: str | os.PathLike | None = None,
    split: str = "train",
    max_file_bytes: int = MAX_FILE_BYTES,
    limit: int | None = None,
) -> list[Document]:
    """The documents of ``split`` ("train", "heldout" or "all"), sorted by path."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be train, heldout or all, got {split!r}")
    root = Path(root) if root is not None else stdlib_root()
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if _excluded(rel) or not p.is_file() or p.stat().st_size > max_file_bytes:
            continue
        rel_s = rel.as_posix()
        if split != "all" and is_heldout(rel_s) != (split == "heldout"):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(Document(rel_s, text))
        if limit is not None and len(docs) >= limit:
            break
    return docs


def _lines(docs: Sequence[Document], max_len: int) -> Iterator[str]:
    for d in docs:
        for line in d.text.splitlines():
            if line.strip():
                yield line[:max_len]


def train_tokenizer(
    docs: Sequence[Document],
    model_prefix: str | os.PathLike,
    vocab_size: int = 4096,
    max_bytes: int | None = None,
) -> Path:
    """Train the SentencePiece BPE on the lines of ``docs``; returns ``<prefix>.model``.

    Deterministic: the input is every non-blank line in document order (no sampling, no
    shuffling), optionally cut at ``max_bytes`` of text.
    """
    import sentencepiece as spm

    lines, total = [], 0
    for line in _lines(docs, 4000):
        lines.append(line)
        total += len(line) + 1
        if max_bytes is not None and total >= max_bytes:
            break
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.9995,
        byte_fallback=True,
        split_digits=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        user_defined_symbols=USER_SYMBOLS,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        pad_piece="[PAD]",
        bos_piece="[BOS]",
        eos_piece="[EOS]",
        unk_piece="[UNK]",
        unk_surface="[UNK]",
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentencepiece_length=16,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def encode_documents(tokenizer, docs: Sequence[Document]) -> np.ndarray:
    """One int32 stream: ``[BOS] doc [EOS]`` for every document, in order. ``tokenizer``:
    anything whose ``encode(str)`` gives ids without BOS (a ``SentencePieceProcessor`` or a
    ``grok_flax.running.tokenizer.Tokenizer``)."""
    parts = [np.asarray([BOS_ID, *tokenizer.encode(d.text), EOS_ID], np.int32) for d in docs]
    return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def unigram_loss(
    train_stream: np.ndarray, eval_targets: np.ndarray, vocab_size: int, alpha: float = 1.0
) -> float:
    """Cross-entropy (nats/token) of ``eval_targets`` under the add-``alpha`` unigram model of
    ``train_stream``: the baseline a language model has to beat. Pad targets are ignored."""
    counts = np.bincount(train_stream, minlength=vocab_size).astype(np.float64) + alpha
    counts[PAD_ID] = 0  # never a target
    logp = np.log(np.maximum(counts, 1e-300) / counts.sum())
    t = eval_targets[eval_targets != PAD_ID]
    return float(-logp[t].mean())
