"""Per-op times of a compiled XLA program from a profiler trace (used by profile_step)."""

from __future__ import annotations

import collections
import re

_OP_LINE = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(")
_OP_NAME = re.compile(r"op_name=\"([^\"]+)\"")


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO op name -> (output shape, source): the JAX ``op_name`` metadata where the op
    carries it, else the HLO opcode (e.g. ``copy`` for a copy XLA inserted)."""
    ops = {}
    for line in hlo_text.splitlines():
        m = _OP_LINE.match(line)
        if m:
            meta = _OP_NAME.search(line)
            ops[m.group(1)] = (m.group(2), meta.group(1) if meta else m.group(3))
    return ops


def per_op_times(events, ops: dict, steps: int) -> list[dict]:
    """Sums ``(name, duration_ns)`` trace events over threads for the names in ``ops``.

    Returns rows sorted by time: name, us per step, share of all op time, shape, source.
    """
    total = collections.Counter()
    for name, duration_ns in events:
        if name in ops:
            total[name] += duration_ns
    all_ns = sum(total.values()) or 1
    return [{"op": name, "us_per_step": ns / steps / 1e3, "share": ns / all_ns,
             "shape": ops[name][0], "source": ops[name][1]}
            for name, ns in total.most_common()]
