"""Measure the bundled demo model (the numbers of ``docs/demo_model.md``)::

    python -m grok_flax.demo.eval [--dir grok_flax/demo/bundled] [--float-ckpt DIR] \\
        [--json grok_flax/demo/bundled/eval.json] [--figure docs/demo_routing.png]

- held-out cross-entropy / perplexity of the int8 model on the held-out stdlib files, against
  a unigram model of the training stream (the baseline to beat);
- the cost of int8: the same loss with the float weights (``--float-ckpt``: the folder written
  by ``python -m grok_flax.demo.train --float-out``);
- greedy continuations of a few code prompts, and how much greedy decoding repeats itself
  (distinct-2: distinct bigrams / bigrams of 200 greedy tokens after each of 5 prompts);
- routing vs token class: each held-out token gets a class from Python's ``tokenize`` module
  run over its source (identifier, keyword, whitespace, punctuation, number, string/prose),
  and the mutual information I(class; chosen expert) is measured per layer — for the trained
  model, for the same architecture at its initial weights (random routers also split tokens
  by identity, so some MI is there before any training) and for shuffled classes (the
  finite-sample floor). A per-class expert histogram is drawn as a figure.
"""

from __future__ import annotations

import argparse
import io
import json
import keyword
import math
import string
import sys
import time
import tokenize
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from grok_flax.demo import corpus

CLASSES = ("identifier", "keyword", "whitespace", "punctuation", "number", "string/prose")
SPECIAL = -1  # BOS / EOS: no class, left out of the routing statistics
PROMPTS = (
    "def fibonacci(n):\n",
    "import os\nimport sys\n\n\ndef main():\n",
    'class Stack:\n    """A last-in, first-out stack."""\n\n    def __init__(self):\n',
    "    def __repr__(self):\n        return ",
    "for i, line in enumerate(",
)


# ------------------------------------------------------------------------------ token classes
def _byte_classes(text: str) -> np.ndarray | None:
    """The class of every UTF-8 byte of ``text`` from Python's tokenizer (None if it fails)."""
    data = text.encode()
    cls = np.full(len(data), CLASSES.index("whitespace"), np.int8)
    lines = text.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(line.encode()) for line in lines])

    def offset(row, col):
        if row - 1 >= len(lines):
            return len(data)
        return int(starts[row - 1]) + len(lines[row - 1][:col].encode())

    kinds = {
        tokenize.NUMBER: "number",
        tokenize.STRING: "string/prose",
        tokenize.COMMENT: "string/prose",
        tokenize.OP: "punctuation",
        tokenize.ERRORTOKEN: "punctuation",
    }
    for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"):  # Python >= 3.12
        if hasattr(tokenize, name):
            kinds[getattr(tokenize, name)] = "string/prose"
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NAME:
                kind = "keyword" if keyword.iskeyword(tok.string) else "identifier"
            else:
                kind = kinds.get(tok.type)
            if kind is None:
                continue  # NEWLINE, NL, INDENT, DEDENT, ENDMARKER: whitespace
            cls[offset(*tok.start) : offset(*tok.end)] = CLASSES.index(kind)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return cls


def _piece_class(piece: str) -> int:
    """Fallback rule on a piece's text, for sources Python's tokenizer rejects."""
    s = piece.replace("▁", " ").strip()
    if not s or piece.startswith("<0x0") or piece.startswith("<0x2"):
        return CLASSES.index("whitespace")
    if s.isdigit():
        return CLASSES.index("number")
    if keyword.iskeyword(s):
        return CLASSES.index("keyword")
    if s.isidentifier():
        return CLASSES.index("identifier")
    if all(c in string.punctuation for c in s):
        return CLASSES.index("punctuation")
    return CLASSES.index("string/prose")


def token_classes(sp, text: str) -> tuple[list[int], list[int]]:
    """(ids, class per id) for one document, with the class of the first non-space byte
    each piece covers (``sp``: a ``SentencePieceProcessor``)."""
    proto = _encode_proto(sp, text)
    by_byte = _byte_classes(text)
    data = text.encode()
    ids, classes = [], []
    for p in proto.pieces:
        ids.append(p.id)
        if by_byte is None:
            classes.append(_piece_class(p.piece))
            continue
        a, b = p.begin, max(p.end, p.begin + 1)
        span = [i for i in range(a, min(b, len(data))) if data[i : i + 1] not in (b" ", b"\t")]
        if not span:
            classes.append(CLASSES.index("whitespace"))
        else:
            classes.append(int(by_byte[span[0]]))
    return ids, classes


def _encode_proto(sp, text: str):
    """Pieces with byte offsets (the keyword changed across sentencepiece 0.2.x)."""
    try:
        return sp.encode(text, return_type="proto")
    except TypeError:
        return sp.encode(text, out_type="immutable_proto")


def class_stream(sp, docs) -> tuple[np.ndarray, np.ndarray]:
    """Token and class streams aligned with ``corpus.encode_documents``."""
    toks, cls = [], []
    for d in docs:
        ids, c = token_classes(sp, d.text)
        toks += [corpus.BOS_ID, *ids, corpus.EOS_ID]
        cls += [SPECIAL, *c, SPECIAL]
    return np.asarray(toks, np.int32), np.asarray(cls, np.int8)


# ------------------------------------------------------------------------------------ routing
def routing_counts(model, windows: np.ndarray, classes: np.ndarray, batch_size: int = 8):
    """Joint counts [L, C, E] of (token class, chosen expert) over all k choices."""
    from flax import nnx

    @nnx.jit
    def route(m, x):
        return m(x, capture=("routing",))[1]["experts"]

    cfg = model.cfg
    counts = np.zeros((cfg.num_layers, len(CLASSES), cfg.num_experts), np.int64)
    for i in range(0, len(windows), batch_size):
        x, c = windows[i : i + batch_size], classes[i : i + batch_size]
        if len(x) < batch_size:
            pad = batch_size - len(x)
            x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
            c = np.concatenate([c, np.full((pad, c.shape[1]), SPECIAL, c.dtype)])
        experts = np.asarray(route(model, jnp.asarray(x)))  # [L, B, T, k]
        keep = c >= 0
        for layer in range(cfg.num_layers):
            e = experts[layer][keep]  # [n, k]
            cc = np.repeat(c[keep], e.shape[-1])
            np.add.at(counts[layer], (cc, e.reshape(-1)), 1)
    return counts


def mutual_information(joint: np.ndarray) -> float:
    """I(X; Y) in bits from a joint count table."""
    p = joint / joint.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (px @ py)[nz])).sum())


def entropy(counts: np.ndarray) -> float:
    """The entropy in bits of the distribution ``counts`` is proportional to."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def plot_routing(counts: np.ndarray, path, title: str) -> None:
    """Draw, per layer, each token class's share of routes to each expert, to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    L, C, E = counts.shape
    fig = Figure(figsize=(3.3 * L + 1.2, 3.6))
    axes = fig.subplots(1, L, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        cond = counts[layer] / np.maximum(counts[layer].sum(1, keepdims=True), 1)
        im = ax.imshow(
            cond, vmin=0, vmax=max(0.5, float(cond.max())), cmap="viridis", aspect="auto"
        )
        ax.set_xticks(range(E))
        ax.set_xlabel("expert")
        ax.set_yticks(range(C))
        share = counts[layer].sum(1) / max(counts[layer].sum(), 1)
        ax.set_yticklabels(
            [f"{c} ({100 * f:.0f}%)" for c, f in zip(CLASSES, share, strict=True)]
            if layer == 0
            else [""] * C
        )
        mi = mutual_information(counts[layer])
        ax.set_title(f"layer {layer}: I = {mi:.3f} bits", fontsize=10)
    fig.colorbar(
        im, ax=axes[0].tolist(), label="share of the class's expert choices (uniform: 1/8)"
    )
    fig.suptitle(title, fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


# ------------------------------------------------------------------------------------ samples
def greedy_continuations(model, tokenizer, prompts=PROMPTS, max_new_tokens: int = 48):
    """Greedy (temperature 0) continuations, each prompt after [BOS]."""
    from grok_flax.running.generate import generate

    ids = [tokenizer.encode(p, bos=True) for p in prompts]
    max_new_tokens = min(max_new_tokens, model.cfg.sequence_len // 2)
    res = generate(
        model, ids, tokenizer, max_new_tokens=max_new_tokens, temperature=0.0, truncate="left"
    )
    return [
        dict(prompt=p, continuation=tokenizer.decode(t))
        for p, t in zip(prompts, res.tokens, strict=True)
    ]


def distinct_2(ids) -> float:
    """Distinct bigrams / bigrams of a token sequence: 1.0 when no pair of consecutive tokens
    repeats, near 0 when the text loops."""
    ids = [int(i) for i in ids]
    pairs = list(zip(ids, ids[1:], strict=False))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def repetition(model, tokenizer, prompts=PROMPTS, new_tokens: int = 200) -> dict:
    """How much greedy decoding repeats itself: distinct-2 of ``new_tokens`` greedy tokens
    after each prompt (stopping early only at EOS), per prompt and their mean."""
    from grok_flax.running.generate import generate

    ids = [tokenizer.encode(p, bos=True) for p in prompts]
    longest = max(len(i) for i in ids)
    if longest + new_tokens > model.cfg.sequence_len:
        raise ValueError(
            f"{longest} prompt + {new_tokens} new tokens exceed the model's "
            f"{model.cfg.sequence_len}-token context"
        )
    res = generate(model, ids, tokenizer, max_new_tokens=new_tokens, temperature=0.0)
    per = [distinct_2(t) for t in res.tokens]
    return dict(
        new_tokens=new_tokens,
        tokens=[len(t) for t in res.tokens],
        distinct_2=per,
        distinct_2_mean=float(np.mean(per)),
    )


# --------------------------------------------------------------------------------------- main
def evaluate(
    demo_dir=None,
    float_ckpt=None,
    eval_windows: int | None = None,
    route_windows: int = 64,
    figure=None,
    samples: bool = True,
    seed: int = 0,
) -> dict:
    """The bundled model (or ``demo_dir``'s) measured: held-out cross-entropy against a unigram
    model (and a float checkpoint's, given ``float_ckpt``), perplexities, bits per byte; how
    its routing relates to the token class (mutual information per layer, against the
    untrained model's and shuffled classes'; expert loads); with ``samples``, greedy
    continuations and their repetition. ``figure``: a path for the routing figure. Returns
    the figures as a dict (what ``docs/demo_model.md`` reports)."""
    import sentencepiece as spm

    from grok_flax.checkpoint import load_checkpoint
    from grok_flax.config import GrokConfig
    from grok_flax.demo import DEMO_DIR, load
    from grok_flax.demo.train import evaluate_loss, heldout_windows, init_model

    t0 = time.perf_counter()
    model, tok, cfg = load(demo_dir)
    d = Path(demo_dir) if demo_dir else DEMO_DIR
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    seq = cfg.sequence_len
    held_docs = corpus.stdlib_documents(split="heldout")
    train_docs = corpus.stdlib_documents(split="train")
    held, held_cls = class_stream(sp, held_docs)
    train_stream = corpus.encode_documents(sp, train_docs)
    windows = heldout_windows(held, seq, eval_windows)
    res: dict = dict(
        python=sys.version.split()[0],
        heldout_docs=len(held_docs),
        heldout_tokens=int(len(held)),
        eval_windows=int(len(windows)),
        eval_tokens=int(len(windows) * seq),
    )
    res["unigram_ce"] = corpus.unigram_loss(train_stream, windows[:, 1:], cfg.vocab_size)
    res["heldout_ce_int8"] = evaluate_loss(model, windows)
    if float_ckpt is not None:
        fcfg = GrokConfig.from_json(Path(float_ckpt) / "config.json")
        fmodel = load_checkpoint(float_ckpt, fcfg.replace(compute_dtype="float32"), progress=False)
        res["heldout_ce_float"] = evaluate_loss(fmodel, windows)
        del fmodel
    for k in ("unigram_ce", "heldout_ce_int8", "heldout_ce_float"):
        if k in res:
            res[k.replace("_ce", "_ppl")] = math.exp(res[k])
    res["bits_per_byte_int8"] = _bits_per_byte(res["heldout_ce_int8"], windows, sp)

    # routing vs token class
    rw = heldout_windows(held, seq, route_windows)
    rc = heldout_windows(held_cls, seq, route_windows)
    x, c = rw[:, :-1], rc[:, :-1]
    trained = routing_counts(model, x, c)
    init = routing_counts(
        init_model(cfg.replace(quantized=False, compute_dtype="float32"), seed, 0.25), x, c
    )
    rng = np.random.default_rng(seed)
    shuffled_c = np.where(c >= 0, rng.permutation(c.reshape(-1)).reshape(c.shape), SPECIAL)
    shuffled = routing_counts(model, x, np.where(c >= 0, shuffled_c, SPECIAL))
    res["routing"] = dict(
        tokens=int((c >= 0).sum()),
        classes=list(CLASSES),
        class_share=(trained[0].sum(1) / trained[0].sum()).round(4).tolist(),
        H_class_bits=entropy(trained[0].sum(1)),
        mi_bits_per_layer=[mutual_information(t) for t in trained],
        mi_bits_init_model=[mutual_information(t) for t in init],
        mi_bits_shuffled_classes=[mutual_information(t) for t in shuffled],
        expert_entropy_bits=[entropy(t.sum(0)) for t in trained],
        expert_load=[(t.sum(0) / t.sum()).round(4).tolist() for t in trained],
    )
    r = res["routing"]
    r["mi_bits_mean"] = float(np.mean(r["mi_bits_per_layer"]))
    r["mi_bits_init_mean"] = float(np.mean(r["mi_bits_init_model"]))
    r["mi_bits_shuffled_mean"] = float(np.mean(r["mi_bits_shuffled_classes"]))
    if figure is not None:
        plot_routing(
            trained,
            figure,
            f"demo model routing by token class "
            f"({r['tokens']:,} held-out tokens; mean I = {r['mi_bits_mean']:.3f} bits)",
        )
    if samples:
        res["samples"] = greedy_continuations(model, tok)
        res["repetition"] = repetition(model, tok)
    res["seconds"] = time.perf_counter() - t0
    return res


def _bits_per_byte(ce: float, windows: np.ndarray, sp) -> float:
    """Nats/token -> bits per UTF-8 byte of the predicted tokens."""
    targets = windows[:, 1:].reshape(-1)
    targets = targets[targets > corpus.UNK_ID]
    nbytes = sum(
        len(sp.decode([int(t)]).encode()) if not sp.is_byte(int(t)) else 1 for t in targets
    )
    return ce * len(targets) / math.log(2) / max(nbytes, 1)


def main(argv: list[str] | None = None) -> int:
    """``python -m grok_flax.demo.eval``: evaluate and print (or write) the report."""
    p = argparse.ArgumentParser(
        prog="python -m grok_flax.demo.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", default=None, help="the demo folder (default: the bundled one)")
    p.add_argument(
        "--float-ckpt",
        default=None,
        help="float weights written by `python -m grok_flax.demo.train --float-out`",
    )
    p.add_argument(
        "--eval-windows",
        type=int,
        default=None,
        help="held-out windows for the loss (default: all of them)",
    )
    p.add_argument("--route-windows", type=int, default=64)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--figure", default=None, help="per-class expert histogram PNG")
    p.add_argument("--no-samples", action="store_true")
    args = p.parse_args(argv)
    res = evaluate(
        args.dir,
        args.float_ckpt,
        args.eval_windows,
        args.route_windows,
        args.figure,
        samples=not args.no_samples,
    )
    text = json.dumps(res, indent=1) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
