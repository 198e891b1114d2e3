"""Training memory: XLA's compiled step memory, and the external-memory-access model (Ch. 6).

Two views of ASAP's memory saving (ASAP thesis Ch. 6, Fig. 6.1, Sec. 5.2.2 "Effect of block
size"):

- :func:`compiled_step_memory` — measured: ``jax.jit(step).lower(...).compile()
  .memory_analysis()`` of one full training step (rule updates + SGD-momentum update) for
  a model and rule. ``temp`` is XLA's scratch (activations kept for the backward pass and
  intermediates), ``argument`` the inputs (params, feedback, optimizer state, batch).
- :func:`saved_activations` / :func:`access_model` — modelled: Mostafa et al.'s external
  memory access count. Forward (read, write) = (Param, Act), backward (read, write) =
  (Param + Act, Param) (eqs. 6.1-6.2), where Act is the number of activation scalars the
  rule stores for its weight updates: every layer input for BP, only the distinct shared
  activations for ASAP (k = 2: h1, h3, h5, ...; k = 4: h1, h5, ...). Act is read off the
  rule itself: the activation arrays in each layer's ``residuals``, counted once per
  distinct array. (As in the thesis, what φ' and batch norm keep is not counted.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import alearn
from alearn._layers.ops import LinearOp
from alearn.rules.base import Rule

Array = jax.Array


def compiled_step_memory(model: nn.Module, rule: Rule, input_shape: Sequence[int],
                         num_classes: int, *, learning_rate: float = 0.1,
                         momentum: float = 0.9, optimizer: bool = True) -> dict[str, int]:
    """Compiled memory (bytes) of one training step of ``model`` under ``rule``.

    The step is ``alearn.loss_and_updates`` (train mode, batch statistics updated) followed
    by ``optax.chain(rule.transform(), sgd(momentum))`` and ``apply_updates``; nothing is
    executed, only compiled for the default backend. With ``optimizer=False`` the step
    stops at the updates (``rule_updates``): its temp is then the activation memory of
    the forward/backward pass without the optimizer's parameter-sized temporaries.

    Returns:
      ``{"temp", "argument", "output", "alias", "total"}`` where total = temp + argument +
      output − alias (XLA's ``memory_analysis`` fields, bytes).
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((input_shape[0],), jnp.int32)
    variables = jax.eval_shape(lambda k: alearn.init(model, rule, k, jnp.zeros(x.shape)),
                               jax.random.key(0))
    opt = optax.chain(rule.transform(), optax.sgd(learning_rate, momentum=momentum))
    opt_state = jax.eval_shape(opt.init, alearn.trainable(rule, variables))

    def step(variables, opt_state, x, y):
        (loss, _, state), upd = alearn.loss_and_updates(model, rule, variables, x, y)
        if not optimizer:
            return upd, opt_state, loss
        tv = alearn.trainable(rule, variables)
        upd, opt_state = opt.update(upd, opt_state, tv)
        return {**variables, **state, **optax.apply_updates(tv, upd)}, opt_state, loss

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(variables, opt_state, x, y).compile()
    ma = compiled.memory_analysis()
    out = {"temp": int(ma.temp_size_in_bytes), "argument": int(ma.argument_size_in_bytes),
           "output": int(ma.output_size_in_bytes), "alias": int(ma.alias_size_in_bytes)}
    out["total"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
    return out


@dataclasses.dataclass(frozen=True)
class _Recorder(Rule):
    """Wraps a rule; records the activation arrays each layer's residuals keep."""

    inner: Rule = None
    log: Any = None  # a list, appended to during tracing (excluded from hashing)

    def __hash__(self):
        return hash(self.inner)

    @property
    def feedback_names(self):  # type: ignore[override]
        return self.inner.feedback_names

    @property
    def needs_carrier(self):  # type: ignore[override]
        return self.inner.needs_carrier

    def init_feedback(self, name, key, op, num_classes):
        return self.inner.init_feedback(name, key, op, num_classes)

    def layer_feedback_names(self, tape, op):
        return self.inner.layer_feedback_names(tape, op)

    @property
    def receives(self):  # type: ignore[override]
        return self.inner.receives

    @property
    def receiver_feedback_names(self):  # type: ignore[override]
        return self.inner.receiver_feedback_names

    def init_receiver_feedback(self, name, key, shape, num_classes, dtype):
        return self.inner.init_receiver_feedback(name, key, shape, num_classes, dtype)

    def receiver_residuals(self, h, feedback):
        return self.inner.receiver_residuals(h, feedback)

    def receiver_backward(self, res, g, carrier_g):
        return self.inner.receiver_backward(res, g, carrier_g)

    def on_block(self, tape, x):
        self.inner.on_block(tape, x)

    def context(self, tape: Any, x: Array, op: LinearOp) -> Any:
        ctx = self.inner.context(tape, x, op)
        feedback = dict(tape.feedback)
        kernel = jnp.zeros(op.kernel_shape, op.dtype)
        res = self.inner.residuals(op, x, kernel, feedback, ctx)
        skip = {id(v) for v in feedback.values()} | {id(kernel)}
        acts = [a for a in jax.tree.leaves(res) if hasattr(a, "shape") and id(a) not in skip]
        self.log.append((tape.layer_index, acts))
        return ctx

    def on_finish(self, tape, logits):
        return self.inner.on_finish(tape, logits)

    def on_close(self, tape):
        self.inner.on_close(tape)


def saved_activations(model: nn.Module, rule: Rule, input_shape: Sequence[int]) -> int:
    """Number of activation scalars ``rule`` keeps for its weight updates (Act of eq. 6.1).

    Counts every array (other than kernels and feedback weights) in the layers' residuals,
    each distinct array once, from an abstract trace (nothing is computed).
    """
    log: list = []
    rec = _Recorder(inner=rule, log=log)
    x = jnp.zeros(tuple(input_shape), jnp.float32)

    def run(k):
        variables = alearn.init(model, rule, k, x)
        return model.apply(variables, x, rule=rec, train=False)

    jax.eval_shape(run, jax.random.key(0))
    seen, total = set(), 0
    for _, acts in log:
        for a in acts:
            if id(a) not in seen:
                seen.add(id(a))
                total += math.prod(a.shape)
    return total


def access_model(params: int, act: int) -> dict[str, int]:
    """External memory accesses of one training step (eqs. 6.1-6.2).

    Forward reads the parameters and writes the stored activations; backward reads both
    and writes the parameter updates.
    """
    fwd_r, fwd_w, bwd_r, bwd_w = params, act, params + act, params
    return {"forward_read": fwd_r, "forward_write": fwd_w, "backward_read": bwd_r,
            "backward_write": bwd_w, "total": fwd_r + fwd_w + bwd_r + bwd_w}


def plot_access(rows: dict[str, dict[str, dict[str, int]]], path: str,
                title: str = "External memory access per training step (Ch. 6 model)") -> None:
    """Bar plot in the style of Fig. 6.1: ``rows[model][rule] = access_model(...)``.

    Stacks forward/backward reads and writes per (model, rule) bar and writes ``path``
    (PNG). matplotlib is imported here only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ("forward_read", "forward_write", "backward_read", "backward_write")
    labels, bottoms, xs = [], [], []
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * sum(len(r) for r in rows.values()), 4))
    x = 0.0
    colors = plt.get_cmap("tab10").colors
    for model, per_rule in rows.items():
        for rule, acc in per_rule.items():
            bottom = 0.0
            for i, part in enumerate(parts):
                ax.bar(x, acc[part] / 1e6, bottom=bottom, color=colors[i],
                       label=part.replace("_", " ") if not labels else None)
                bottom += acc[part] / 1e6
            labels.append(f"{model}\n{rule}")
            xs.append(x)
            bottoms.append(bottom)
            x += 1.0
        x += 0.6
    ax.set_xticks(xs, labels, fontsize=10)
    ax.set_ylabel("accesses (millions of scalars)")
    ax.set_title(title, fontsize=12)
    ax.legend(fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
