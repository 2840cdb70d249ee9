"""Generating text: prefill the prompt into KV memory, then one compiled decode step per token.

    prompts ─► right-pad to a length bucket ─► prefill in chunks (writes K/V, keeps each row's
    last logits) ─► sample ─► decode step (1 token/row, reads the KV memory) ─► sample ─► …

- **One compiled decode step** for every token and every prompt: the KV memory has a fixed
  size (``max_len``, default the model's ``sequence_len``), sampling settings are arrays, and
  prompts are padded to power-of-two buckets, so nothing recompiles per token or per length.
- **Batches are exact**: each row has its own positions and KV ``step``, its own seed, and stops
  at EOS or ``max_new_tokens`` on its own, so a row gets exactly what it would get alone
  (the reference's runner breaks at batch > 1).
- **No silent truncation**: a prompt that doesn't fit the context with ``max_new_tokens`` is an
  error, unless ``truncate="left"`` is asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from grok_flax.kv_memory import KVMemory
from grok_flax.running.sampling import candidates_for
from grok_flax.running.steps import decode_step, first_sample, prefill_step
from grok_flax.scale.distributed import gather
from grok_flax.scale.sharding import create_sharded, put_global

# what JAX reports while it traces, lowers and compiles a program (jax.monitoring events)
_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_compile_seconds = [0.0]  # trace + lower + compile seconds in this process so far


def _count_compile(event: str, seconds: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile)


@dataclass
class GenerationResult:
    """What ``Generator.generate`` (and the end of ``stream``) returns: the prompts as fed, the
    new tokens and why each row stopped, the decoded texts, and the timings; ``speed()`` is
    the one-line report (steady decode tok/s, compilation apart)."""

    prompt_tokens: list[list[int]]  # what was fed (after any requested truncation)
    tokens: list[list[int]]  # new tokens per row, without the final EOS
    finish_reasons: list[str]  # "eos" or "length" per row
    texts: list[str] | None = None  # decoded continuations, when a tokenizer is known
    prefill_seconds: float = 0.0  # wall time of the prefill, compilation included
    decode_seconds: float = 0.0  # wall time of the decode steps, compilation included
    decode_steps: int = 0
    first_step_seconds: float = 0.0  # the first decode step (compiles on a generator's 1st call)
    prefill_compile_seconds: float = 0.0  # tracing + compiling inside the prefill
    decode_compile_seconds: float = 0.0  # tracing + compiling inside the decode loop
    timings: dict = field(default_factory=dict)

    @property
    def compile_seconds(self) -> float:
        """Seconds JAX spent tracing, lowering and compiling during this call (0 once the
        generator's steps are compiled for these shapes)."""
        return self.prefill_compile_seconds + self.decode_compile_seconds

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens per second of prefill, compilation excluded."""
        n = sum(len(p) for p in self.prompt_tokens)
        run = self.prefill_seconds - self.prefill_compile_seconds
        return n / run if run > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Steady decode speed: tokens (all rows) per second over the steps after the first
        (which may include compilation); NaN with fewer than two steps."""
        n = (self.decode_steps - 1) * len(self.tokens)
        rest = self.decode_seconds - self.first_step_seconds
        return n / rest if n > 0 and rest > 0 else float("nan")

    def speed(self) -> str:
        """The one-line speed report of the demo, the command line and the notebooks."""

        def rate(x):
            return "n/a" if x != x else f"{x:.0f} tok/s"

        return (
            f"prefill {rate(self.prefill_tokens_per_s)}, decode "
            f"{rate(self.decode_tokens_per_s)} (steady), compilation "
            f"{self.compile_seconds:.1f} s"
        )


def _bucket(n: int, lo: int, hi: int) -> int:
    b = lo
    while b < n:
        b *= 2
    return min(b, hi)


class Generator:
    """Prefill + KV-cached decode for a ``Grok`` model (any mesh it is sharded on)."""

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        max_len: int | None = None,
        prefill_chunk: int = 512,
        min_bucket: int = 16,
        mesh=None,
        eos_token: int | None = None,
    ):
        cfg = model.cfg
        self.eos_token = cfg.eos_token if eos_token is None else int(eos_token)
        self.model, self.tokenizer, self.cfg, self.mesh = model, tokenizer, cfg, mesh
        self.max_len = cfg.sequence_len if max_len is None else int(max_len)
        if not 1 <= self.max_len <= cfg.sequence_len:
            raise ValueError(
                f"max_len must be in [1, sequence_len={cfg.sequence_len}], got {max_len}"
            )
        if prefill_chunk < 1 or min_bucket < 1:
            raise ValueError("prefill_chunk and min_bucket must be >= 1")
        self.prefill_chunk, self.min_bucket = prefill_chunk, min_bucket
        self.graph, self.params = nnx.split(model)
        self.last: GenerationResult | None = None  # the result of the latest call

    def _put(self, x):
        """Host inputs -> arrays (replicated global arrays on a mesh, so the same code runs
        under jax.distributed with one process per host)."""
        if self.mesh is None:
            return jnp.asarray(x)
        return put_global(x, NamedSharding(self.mesh, PartitionSpec()))

    # --- input checks ---
    def _prompt_ids(self, prompts) -> list[list[int]]:
        if isinstance(prompts, (np.ndarray, jax.Array)):  # token ids [T] or [B, T]
            prompts = np.asarray(prompts)
            prompts = [prompts.tolist()] if prompts.ndim == 1 else prompts.tolist()
        if isinstance(prompts, str) or (len(prompts) and isinstance(prompts[0], (int, np.integer))):
            prompts = [prompts]
        if not len(prompts):
            raise ValueError("no prompts given")
        out = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                if self.tokenizer is None:
                    raise ValueError("text prompts need a tokenizer; pass token ids instead")
                p = self.tokenizer.encode(p)
            ids = [int(t) for t in p]
            if not ids:
                raise ValueError(f"prompt {i} is empty")
            bad = [t for t in ids if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt {i} has token ids outside [0, {self.cfg.vocab_size}): {bad[:5]}"
                )
            out.append(ids)
        return out

    def _check(self, prompts, max_new_tokens, temperature, top_p, top_k, truncate):
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
        if truncate not in (None, "left"):
            raise ValueError(f"truncate must be None or 'left', got {truncate!r}")
        if max_new_tokens >= self.max_len:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                f"a context of {self.max_len}"
            )
        room = self.max_len - max_new_tokens
        ids = self._prompt_ids(prompts)
        for i, p in enumerate(ids):
            if len(p) > room:
                if truncate != "left":
                    raise ValueError(
                        f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} "
                        f"the context of {self.max_len} leaves room for {room}. Shorten it, "
                        f"lower max_new_tokens, or pass truncate='left' to drop its start."
                    )
                ids[i] = p[len(p) - room :]
        return ids

    # --- the loop ---
    def stream(
        self,
        prompts,
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | Sequence[int] = 0,
        truncate: str | None = None,
    ) -> Iterator[list[int | None]]:
        """Yield, per step, each row's new token (None once the row has finished).

        The final ``GenerationResult`` is the generator's return value (and ``self.last``).
        """
        ids = self._check(prompts, max_new_tokens, temperature, top_p, top_k, truncate)
        B, cfg = len(ids), self.cfg
        seeds = [seed + i for i in range(B)] if isinstance(seed, (int, np.integer)) else seed
        if len(seeds) != B:
            raise ValueError(f"{len(seeds)} seeds for {B} prompts")
        put = self._put
        keys = jax.vmap(jax.random.key)(put(np.asarray(seeds, np.uint32)))
        settings = (
            put(np.full((B,), temperature, np.float32)),
            put(np.full((B,), top_p, np.float32)),
            put(np.full((B,), top_k, np.int32)),
        )
        lengths = np.array([len(p) for p in ids])
        T = _bucket(int(lengths.max()), self.min_bucket, self.max_len)
        P = min(self.prefill_chunk, T)
        n_chunks = -(-T // P)
        if n_chunks * P > self.max_len:  # chunks must not run past the memory's end
            P, n_chunks = T, 1
        padded = np.full((B, n_chunks * P), cfg.pad_token, np.int32)
        for i, p in enumerate(ids):
            padded[i, : len(p)] = p

        if self.mesh is None:
            memory = KVMemory(cfg, B, self.max_len)
        else:  # built sharded: never whole on one device; works across processes
            memory = create_sharded(lambda: KVMemory(cfg, B, self.max_len), self.mesh)
        mem_graph, mem_state = nnx.split(memory)

        t0, c0 = time.perf_counter(), _compile_seconds[0]
        last = put(np.zeros((B, cfg.vocab_size), cfg.dtype))
        end_chunk, end_idx = (lengths - 1) // P, (lengths - 1) % P
        for c in range(n_chunks):
            chunk_len = np.clip(lengths - c * P, 0, P).astype(np.int32)
            mem_state, last = prefill_step(
                self.graph,
                self.params,
                mem_graph,
                mem_state,
                put(padded[:, c * P : (c + 1) * P]),
                put(chunk_len),
                last,
                put(end_chunk == c),
                put(end_idx.astype(np.int32)),
            )
        candidates = candidates_for(top_k, cfg.vocab_size) if temperature > 0 else None
        token = gather(first_sample(last, keys, *settings, candidates=candidates))
        t1, c1 = time.perf_counter(), _compile_seconds[0]

        new: list[list[int]] = [[] for _ in range(B)]
        reasons: list[str | None] = [None] * B
        steps, first_step = 0, 0.0
        for i in range(max_new_tokens):
            out: list[int | None] = []
            for b in range(B):
                t = int(token[b])
                if reasons[b] is not None:
                    out.append(None)
                elif t == self.eos_token:
                    reasons[b] = "eos"
                    out.append(None)
                else:
                    new[b].append(t)
                    out.append(t)
                    if len(new[b]) == max_new_tokens:
                        reasons[b] = "length"
            yield out
            if all(r is not None for r in reasons) or i == max_new_tokens - 1:
                break
            mem_state, tok = decode_step(
                self.graph,
                self.params,
                mem_graph,
                mem_state,
                put(np.asarray(token, np.int32)),
                keys,
                i + 1,
                *settings,
                candidates=candidates,
            )
            token = gather(tok)
            steps += 1
            if steps == 1:
                first_step = time.perf_counter() - t1
        t2, c2 = time.perf_counter(), _compile_seconds[0]
        texts = None
        if self.tokenizer is not None:
            texts = [self.tokenizer.decode(t) for t in new]
        self.last = GenerationResult(
            ids,
            new,
            [r or "length" for r in reasons],
            texts,
            prefill_seconds=t1 - t0,
            decode_seconds=t2 - t1,
            decode_steps=steps,
            first_step_seconds=first_step,
            prefill_compile_seconds=c1 - c0,
            decode_compile_seconds=c2 - c1,
            timings=dict(bucket=T, chunk=P, chunks=n_chunks),
        )
        return self.last

    def generate(self, prompts, **kwargs) -> GenerationResult:
        """Run ``stream`` to the end and return its ``GenerationResult``."""
        it = self.stream(prompts, **kwargs)
        while True:
            try:
                next(it)
            except StopIteration as stop:
                return stop.value


def generate(model, prompts, tokenizer=None, **kwargs) -> GenerationResult:
    """One-shot: ``generate(model, "text" or [ids], tokenizer, max_new_tokens=..., ...)``."""
    gen_kw = {
        k: kwargs.pop(k)
        for k in ("max_len", "prefill_chunk", "min_bucket", "mesh", "eos_token")
        if k in kwargs
    }
    return Generator(model, tokenizer, **gen_kw).generate(prompts, **kwargs)


def stream_text(generator: Generator, prompt, **kwargs) -> Iterator[str]:
    """Yield the continuation of one text prompt as printable text pieces."""
    tok = generator.tokenizer
    if tok is None:
        raise ValueError("stream_text needs a tokenizer")
    ids: list[int] = []
    shown = ""
    for step in generator.stream([prompt], **kwargs):
        if step[0] is None:
            continue
        ids.append(step[0])
        text = tok.decode(ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its bytes
            continue
        yield text[len(shown) :]
        shown = text
    final = tok.decode(ids)
    if len(final) > len(shown):
        yield final[len(shown) :]
