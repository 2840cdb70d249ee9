"""Reading compiled HLO text: what a program writes into a buffer, which collectives it runs.

Used by the benchmarks (the bytes a Grok-1 decode step writes into its KV memory) and the
tests of the decode step (it writes only the new tokens' slots; its collectives are tensor
parallelism's). Not part of the package: it reads XLA's text format, which is no API.
"""

from __future__ import annotations

import re

# a value's shape is one token, or a tuple "(f32[1,6144]{...}, f32[1,6144]{...})" with spaces
# (XLA combines collectives into one tuple-shaped op: the k experts' all-reduce in decode)
_HLO_DEF = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) ([\w-]+)\((.*)$")
_HLO_HEADER = re.compile(r"^%(\S+) \((.*)\) -> .* \{$")


def _hlo_shape(text: str):
    m = re.match(r"(\w+)\[([\d,]*)\]", text)
    if not m:
        return None
    return m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)


def parse_hlo(text: str):
    """Instructions of compiled HLO text as (name, (dtype, shape), opcode, operand names,
    line), and the shape of every value by name (instructions and computation parameters)."""
    shapes, instrs = {}, []
    for line in text.splitlines():
        header = _HLO_HEADER.match(line)
        if header:
            for param in header.group(2).split(", "):
                name, _, shape = param.partition(": ")
                if _hlo_shape(shape):
                    shapes[name.strip()] = _hlo_shape(shape)
            continue
        m = _HLO_DEF.match(line)
        if m:
            name, shape, op, rest = m.groups()
            shapes[name] = _hlo_shape(shape)
            operands = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])
            instrs.append((name, _hlo_shape(shape), op, operands, line))
    return instrs, shapes


_PASSTHROUGH = {
    "parameter",
    "get-tuple-element",
    "tuple",
    "while",
    "bitcast",
    "fusion",
    "conditional",
    "call",
    "copy-done",
    "opt-barrier",
}


def hlo_writes_into(text: str, shape: tuple[int, ...]):
    """In compiled HLO, the writes into buffers of ``shape`` (per device): a list of
    (opcode, update shape) for each scatter / dynamic-update-slice, and a list of
    (opcode, name) of any other instruction that makes such a buffer (a copy would rewrite
    all of it)."""
    instrs, shapes = parse_hlo(text)
    writes, others = [], []
    for name, value, op, operands, _ in instrs:
        if value is None or value[1] != tuple(shape):
            continue
        if op == "scatter":
            writes.append((op, shapes[operands[2]][1]))
        elif op == "dynamic-update-slice":
            writes.append((op, shapes[operands[1]][1]))
        elif op not in _PASSTHROUGH:
            others.append((op, name))
    return writes, others


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def hlo_collectives(text: str) -> list[tuple[str, str]]:
    """(opcode, the JAX op_name it came from) of every collective in compiled HLO."""
    out = []
    for _, _, op, _, line in parse_hlo(text)[0]:
        if op.removesuffix("-start") in COLLECTIVES:
            where = re.search(r'op_name="([^"]+)"', line)
            out.append((op.removesuffix("-start"), where.group(1) if where else "?"))
    return out
