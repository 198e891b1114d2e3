"""The rows of ``alearn.describe`` and the sharing role/group of a traced layer.

Low-level pieces shared by the Linen interceptor, the NNX call and the ``describe`` entry
point (:mod:`alearn.wrappers.describe`), kept apart so that none of them imports another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Row:
    """How one parameter (or receiver) learns."""

    path: str
    shape: tuple
    update: str  # the rule, "local error (element-wise)", "bp (exclude=)", ...
    feedback: str = ""  # "B (8, 4)", "D (10, 64)", ...
    feedback_bytes: int = 0
    sharing: str = ""  # activation-sharing role / group
    dfa_input: str = ""  # where δ_L D reaches the layer's input
    stacked: str = ""  # leading axes added by a lifted transform


@dataclasses.dataclass(frozen=True)
class Description:
    """The table :func:`describe` returns; ``str()`` formats it."""

    model: str
    rule: str
    rows: tuple

    @property
    def feedback_bytes(self) -> int:
        return sum(r.feedback_bytes for r in self.rows)

    def by_update(self) -> dict:
        out: dict = {}
        for r in self.rows:
            out[r.update] = out.get(r.update, 0) + 1
        return out

    def __str__(self) -> str:
        cols = ("path", "shape", "update", "feedback", "sharing", "dfa_input", "stacked")
        table = [cols] + [tuple(str(getattr(r, c)) for c in cols) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = [f"{self.model} under rule {self.rule!r}: "
                 f"{len(self.rows)} rows, feedback {self.feedback_bytes / 1e6:.3f} MB"]
        for row in table:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        return "\n".join(lines)


def role_and_group(tape: Any, op: Any, x: Array, feedback: dict, groups: list
                   ) -> tuple[str, str]:
    """(the rule's role for the map about to run, its activation-sharing group) in a
    describe trace; ``groups`` collects the distinct shared activations seen so far.
    Calls ``rule.context`` exactly as the rule's own pass would (the tape advances)."""
    rule = tape.rule
    role = getattr(rule, "role", None)
    role_s = f"{rule.name}: {role(tape, op)}" if role is not None else ""
    tape.feedback = feedback
    ctx = rule.context(tape, x, op)
    arrays = [a for a in jax.tree.leaves(ctx) if hasattr(a, "shape") and a.ndim]
    if not arrays:
        return role_s, ""
    shared = arrays[0]
    i = next((i for i, a in enumerate(groups) if a is shared), None)
    if i is None:
        groups.append(shared)
        i = len(groups) - 1
    return role_s, f"group {i} {tuple(shared.shape)}"


def leaves(tree: Any) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", k)) for k in p): a for p, a in flat}
