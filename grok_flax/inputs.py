"""The forward pass's inputs, checked before they are used: never silently clipped or wrapped.

``Grok.__call__`` makes one call, ``validate``, which raises ``ValueError`` naming what is
wrong: token ids outside ``[0, vocab)``, more tokens than the context ``sequence_len``, a KV
memory with another batch size, or one that the new tokens would overflow (a write past its
end would otherwise be dropped), and an unknown ``capture`` name.

When the ids or the memory's ``step`` are traced (under ``jit``) the host cannot see their
values: the check then runs on the device, reduced to a few scalars, and a violation fails
the call with a ``JaxRuntimeError`` carrying the same message. ``Generator`` turns that
device check off: it validates its prompts on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grok_flax.config import GrokConfig

CAPTURES = (
    "routing",
    "attention",
    "attention_logit_max",
)  # what ``Grok.__call__(..., capture=...)`` can return


def validate(cfg: GrokConfig, tokens, memory, lengths, capture, *, on_device: bool):
    """-> (tokens as an int array [B, T], the capture names asked for), or ``ValueError``.

    ``memory``: a ``KVMemory`` or None; ``lengths``: the new tokens per row (None: T).
    ``on_device``: run the device-side check when values are traced (else skip it)."""
    capture = capture_names(capture)
    tokens = as_tokens(tokens)
    B, T = tokens.shape
    if T > cfg.sequence_len:
        raise ValueError(f"{T} tokens exceed the model's context sequence_len={cfg.sequence_len}")
    if memory is not None:
        if memory.batch_size != B:
            raise ValueError(f"memory holds {memory.batch_size} rows, tokens {B}")
        if T > memory.max_len:
            raise ValueError(f"{T} tokens do not fit a KV memory of {memory.max_len}")
    _check_values(cfg, tokens, memory, T if lengths is None else lengths, on_device)
    return tokens, capture


def capture_names(capture) -> tuple[str, ...]:
    """``True`` -> every name of ``CAPTURES``; ``False``/``()`` -> none; a name or names."""
    if capture is True:
        return CAPTURES
    if not capture:
        return ()
    capture = (capture,) if isinstance(capture, str) else tuple(capture)
    unknown = set(capture) - set(CAPTURES)
    if unknown:
        raise ValueError(f"unknown capture(s) {sorted(unknown)}; choose from {CAPTURES}")
    return capture


def as_tokens(tokens) -> jax.Array:
    """Token ids as an integer array [B, T] (lists, numpy and JAX arrays accepted)."""
    if not isinstance(tokens, jax.Array):
        tokens = np.asarray(tokens)
        if tokens.dtype == object or tokens.size == 0 and tokens.dtype.kind == "f":
            tokens = tokens.astype(np.int32)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"tokens must be an integer array [batch, time], got {tokens.dtype}{list(tokens.shape)}"
        )
    return jnp.asarray(tokens)


def _on_host(x) -> np.ndarray | None:
    """x's values on this host, or None when traced / held by other processes."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return None
    return np.asarray(x)


def _bad_ids_message(vocab: int, found: list[tuple[int, int, int]], count: int) -> str:
    """``found``: (id, row, position) of the first bad ids; ``count``: how many in all."""
    shown = ", ".join(f"{value} at [{b}, {t}]" for value, b, t in found)
    more = f" (and {count - len(found)} more)" if count > len(found) else ""
    return f"token ids outside [0, {vocab}): {shown}{more}"


def _overflow_message(row: int, step: int, end: int, max_len: int) -> str:
    return (
        f"KV memory overflow: row {row} is at step {step} and {end - step} new tokens "
        f"would end at {end} > max_len {max_len}; start a new KVMemory (nothing is "
        f"overwritten)"
    )


def _host_problem(tokens, step, n_new, vocab: int, max_len) -> str | None:
    """What is wrong with these inputs (host arrays), or None."""
    bad = (tokens < 0) | (tokens >= vocab)
    if bad.any():
        found = [(int(tokens[b, t]), int(b), int(t)) for b, t in np.argwhere(bad)[:5]]
        return _bad_ids_message(vocab, found, int(bad.sum()))
    if step is not None:
        end = step + np.asarray(n_new)
        if (end > max_len).any():
            b = int(np.argmax(end))
            return _overflow_message(b, int(step[b]), int(end[b]), max_len)
    return None


def _raise_device_summary(tok_info, mem_info, vocab: int, max_len) -> None:
    """The device check's few scalars -> the same ValueError as the host check."""
    count, b, t, value = (int(v) for v in tok_info)
    if count:
        raise ValueError(_bad_ids_message(vocab, [(value, b, t)], count))
    row, step, end = (int(v) for v in mem_info)
    if max_len is not None and end > max_len:
        raise ValueError(_overflow_message(row, step, end, max_len))


def _check_values(cfg: GrokConfig, tokens, memory, n_new, on_device: bool) -> None:
    """ValueError for concrete bad values; a device-side check when they are traced."""
    step = None if memory is None else memory.step[...]
    max_len = None if memory is None else memory.max_len
    host = [_on_host(tokens), None if step is None else _on_host(step), _on_host(n_new)]
    if all(h is not None for h in host) or (host[0] is not None and step is None):
        problem = _host_problem(host[0], host[1], host[2], cfg.vocab_size, max_len)
        if problem:
            raise ValueError(problem)
        return
    if not on_device:
        return
    # reduce on the device to a few scalars (replicated: no gather of the inputs to one
    # device), and call back to the host only when something is wrong
    bad_tok = (tokens < 0) | (tokens >= cfg.vocab_size)
    first = jnp.argmax(bad_tok.reshape(-1))
    tok_info = (
        jnp.sum(bad_tok),
        first // tokens.shape[1],
        first % tokens.shape[1],
        tokens.reshape(-1)[first],
    )
    bad = tok_info[0] > 0
    if step is None:
        mem_info = (jnp.zeros((), jnp.int32),) * 3
    else:
        end = step + jnp.asarray(n_new, jnp.int32)
        row = jnp.argmax(end)
        mem_info = (row, step[row], end[row])
        bad = bad | (end[row] > max_len)

    def report():
        jax.debug.callback(
            lambda t, m: _raise_device_summary(t, m, cfg.vocab_size, max_len), tok_info, mem_info
        )

    jax.lax.cond(bad, report, lambda: None)


__all__ = ["CAPTURES", "as_tokens", "capture_names", "validate"]
