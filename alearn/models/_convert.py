"""Variables written by older alearn models, brought to the current feedback layout.

Until issue 25 the paper models were built from rule-aware layers and placed DFA's receivers
themselves: ``stem_receiver/D`` after the stem, ``stage{s}_block{b}/receiver1/D`` after a
block's first activation and ``receiver2/D`` on its output; plain chains (MLP, CNN,
AlexNet, VGG) gave every layer a D sized to its input, the first layer's included (its
signal was discarded). Now the models are plain Flax trained through ``alearn.wrap`` with
a declared spec, and the same receiving points hold the same matrices under other names:

=====================================  =====================================
before                                 now
=====================================  =====================================
``stem_receiver/D``                    ``stage0_block0/D`` (receiver at the first block's input)
``<block>/receiver1/D``                ``<block>/conv2/D`` (conv2's own input)
``<block>/receiver2/D``                the next block's ``D``; the last block's ``D_out``
the first layer's ``D``                (none: the wrapper sends nothing to the data)
=====================================  =====================================

Parameters, batch statistics and every other rule's feedback keep their paths. The ResNet
classifier's ``D`` is new (its signal is replaced by the last block's receiver, so its
value never matters); it is taken from the fresh initialisation.
"""

from __future__ import annotations

import re
from typing import Any

import jax

_BLOCK = re.compile(r"^stage(\d+)_block(\d+)$")


def _flat(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for k, v in tree.items():
        if hasattr(v, "items"):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflat(flat: dict[tuple, Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def is_old_layout(feedback: Any) -> bool:
    """Whether ``feedback`` holds receivers placed by the old hand-written ResNets."""
    if not feedback or not hasattr(feedback, "items"):
        return False
    return any(p[-2] in ("stem_receiver", "receiver1", "receiver2")
               for p in _flat(feedback) if len(p) >= 2)


def _renamed(old: dict[tuple, Any], blocks: list[str]) -> dict[tuple, Any]:
    nxt = {b: (blocks[i + 1] if i + 1 < len(blocks) else None) for i, b in enumerate(blocks)}
    out = {}
    for path, v in old.items():
        if path[-2:] == ("stem_receiver", "D") and blocks:
            out[(blocks[0], "D")] = v
        elif len(path) >= 3 and path[-2] == "receiver1":
            out[path[:-2] + ("conv2", path[-1])] = v
        elif len(path) >= 3 and path[-2] == "receiver2":
            block = path[-3]
            target = nxt.get(block)
            out[(target, path[-1]) if target else path[:-2] + (path[-1] + "_out",)] = v
        else:
            out[path] = v
    return out


def convert_feedback(old: Any, fresh: Any) -> tuple[dict, list[str]]:
    """``old`` feedback in the layout of ``fresh`` (a current initialisation of the same
    model and rule): (converted tree, notes on what was dropped or newly drawn).

    Raises:
      ValueError: a matrix of ``old`` has another shape than its place in ``fresh``.
    """
    fresh_flat = _flat(fresh or {})
    blocks = sorted({p[0] for p in fresh_flat if _BLOCK.match(str(p[0]))},
                    key=lambda b: tuple(int(g) for g in _BLOCK.match(b).groups()))
    renamed = _renamed(_flat(old or {}), blocks)
    out, notes = {}, []
    for path, v in fresh_flat.items():
        if path in renamed:
            if tuple(renamed[path].shape) != tuple(v.shape):
                raise ValueError(f"feedback {'/'.join(map(str, path))}: the checkpoint has "
                                 f"shape {renamed[path].shape}, the model {v.shape}")
            out[path] = renamed[path]
        else:
            out[path] = v
            notes.append(f"{'/'.join(map(str, path))} newly drawn")
    notes += [f"{'/'.join(map(str, p))} dropped" for p in renamed if p not in fresh_flat]
    return _unflat(out), notes


def convert_variables(model: Any, rule: Any, variables: dict, sample_x: Any,
                      key: Any = None) -> dict:
    """``variables`` (any alearn version's, for ``model`` and ``rule``) in the current
    layout: feedback renamed as the module docstring says; everything else unchanged.
    ``sample_x``: an input batch (shapes only matter)."""
    if "feedback" not in variables:
        return variables
    from alearn._api import init  # pylint: disable=import-outside-toplevel
    fresh = init(model, rule, key if key is not None else jax.random.key(0), sample_x)
    if jax.tree.structure(fresh.get("feedback")) == jax.tree.structure(variables["feedback"]):
        return variables
    feedback, _ = convert_feedback(variables["feedback"], fresh["feedback"])
    return {**variables, "feedback": feedback}
