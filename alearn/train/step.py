"""Jitted, data-parallel train and eval steps over (model, rule, optimizer).

The train step takes the rule's per-parameter updates from ``alearn.loss_and_updates``
(for BP, ``jax.grad`` of the softmax cross-entropy), feeds them through the optimizer
(``optax.chain(rule.transform(), base)``) and applies them. Rules with an extra pure
per-step phase (weight mirror's mirror mode, ASAP thesis eq. 2.6) plug in through
``step_hook(state, batch, key) -> state``, called after the update with
``key = fold_in(wrap_key_data(state.key), step)``. :func:`make_train_step` installs the
rule's own hook by default, so WM cannot silently train as plain FA.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import alearn
from alearn._layers import conv_autotune
from alearn.rules.base import Rule
from alearn.train.sharding import data_mesh, replicated
from alearn.train.state import TrainState

Array = jax.Array
StepHook = Callable[[TrainState, dict, Array], TrainState]
TrainStep = Callable[[TrainState, dict], tuple[TrainState, dict]]

#: ``make_train_step``'s default: the rule's own step hook (``setup.step_hook_for``).
RULE_HOOK: Any = "rule"

#: XLA options for the train step on CPU. The step donates its state, so every parameter
#: is updated in place; XLA:CPU's default copy insertion cannot always prove that the
#: update comes after the parameter's last read (e.g. by the input cotangent W^T g) and
#: copies the parameter first. Its region analysis proves it: MLP 784-1024-1024-10 BP
#: drops 3 copies, 85.3 -> 76.8 MB accessed per step, KP 122.5 -> 114.1 MB
#: (``docs/notes/perf.md``). Same values bit for bit (``tests/test_train_step_options.py``).
CPU_STEP_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


def step_compiler_options(mesh: Mesh) -> dict:
    """``make_train_step``'s default XLA options: :data:`CPU_STEP_OPTIONS` on CPU, none else."""
    return dict(CPU_STEP_OPTIONS) if all(d.platform == "cpu" for d in mesh.devices.flat) else {}


def train_step(model: Any, rule: Rule, optimizer: optax.GradientTransformation,
               state: TrainState, batch: dict, step_hook: StepHook | None = None
               ) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``{"image", "label"}``); pure, not jitted.

    Returns the new state and ``{"loss", "accuracy"}`` of the batch (before the update).
    """
    (loss, logits, model_state), updates = alearn.loss_and_updates(
        model, rule, state.variables(), batch["image"], batch["label"], train=True)
    steps, opt_state = optimizer.update(updates, state.opt_state, state.trainable)
    new = state.replace(step=state.step + 1,
                        trainable=optax.apply_updates(state.trainable, steps),
                        fixed={**state.fixed, **model_state}, opt_state=opt_state)
    if step_hook is not None:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        new = step_hook(new, batch, key)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new, {"loss": loss, "accuracy": accuracy}


def eval_step(model: Any, rule: Rule, state: TrainState, batch: dict) -> dict:
    """Sums of loss and correct predictions over the rows with ``batch["mask"] == 1``."""
    logits = model.apply(state.variables(), batch["image"], rule=rule, train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"loss_sum": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}


def make_train_step(model: Any, rule: Rule, optimizer: optax.GradientTransformation, *,
                    mesh: Mesh | None = None, step_hook: StepHook | None | str = RULE_HOOK,
                    donate: bool = True, compiler_options: dict | None = None) -> TrainStep:
    """The jitted data-parallel train step ``(state, batch) -> (state, metrics)``.

    Inputs must be placed with :func:`alearn.train.replicate` (state) and
    :func:`alearn.train.shard_batch` (batch) on ``mesh`` (default: all local devices);
    the state comes back replicated, so the second call reuses the compiled program.
    With ``donate`` the input state's buffers are reused for the output. ``step_hook``
    defaults to the rule's own per-step phase (weight mirror's mirror mode, see
    :func:`alearn.train.setup.step_hook_for`); pass ``None`` to leave it out on purpose
    (e.g. timing WM's engaged mode alone). ``compiler_options`` are XLA options for the
    step (default :func:`step_compiler_options`; ``{}`` for XLA's own defaults).
    """
    if isinstance(step_hook, str):
        if step_hook != RULE_HOOK:
            raise ValueError(f"step_hook={step_hook!r}; pass a callable, None, or "
                             f"{RULE_HOOK!r} (the rule's own hook)")
        from alearn.train.setup import step_hook_for  # pylint: disable=import-outside-toplevel
        step_hook = step_hook_for(rule, model)
    mesh = mesh if mesh is not None else data_mesh()
    rep = replicated(mesh)

    def step(state, batch):
        with conv_autotune.partitioned(mesh.size):  # no oneDNN custom calls if partitioned
            return train_step(model, rule, optimizer, state, batch, step_hook)

    options = step_compiler_options(mesh) if compiler_options is None else compiler_options
    return jax.jit(step, out_shardings=(rep, rep), donate_argnums=(0,) if donate else (),
                   compiler_options=options or None)


def make_eval_step(model: Any, rule: Rule, *, mesh: Mesh | None = None
                   ) -> Callable[[TrainState, dict], dict]:
    """The jitted eval step ``(state, padded batch) -> {"loss_sum", "correct", "count"}``."""
    mesh = mesh if mesh is not None else data_mesh()
    def step(state, batch):
        with conv_autotune.partitioned(mesh.size):
            return eval_step(model, rule, state, batch)

    return jax.jit(step, out_shardings=replicated(mesh))
