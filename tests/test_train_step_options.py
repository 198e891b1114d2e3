"""The train step's XLA:CPU options: no defensive parameter copies, same values bit for bit."""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import alearn
from alearn import train
from alearn.train import step as step_mod


def _setup(widths=(64, 64), batch=16):
    model = alearn.models.create("mlp", 10, widths=widths)
    rule = alearn.rules.create("bp")
    opt = train.create_rule_optimizer(rule, optax.sgd(0.05, momentum=0.9))
    mesh = train.data_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
    y = (np.arange(batch) % 10).astype(np.int32)
    state = train.create_train_state(model, rule, opt, jax.random.key(0), x)
    return model, rule, opt, mesh, state, train.shard_batch({"image": x, "label": y}, mesh)


def _copies(step, state, batch) -> int:
    return len(re.findall(r" copy\(", step.lower(state, batch).compile().as_text()))


def test_region_analysis_drops_the_parameter_copies_and_changes_no_value():
    model, rule, opt, mesh, state0, batch = _setup()
    default = train.make_train_step(model, rule, opt, mesh=mesh)
    plain = train.make_train_step(model, rule, opt, mesh=mesh, compiler_options={})
    def fresh():  # a new copy each time: the steps donate (and delete) their input state
        return train.replicate(jax.tree.map(jnp.copy, state0), mesh)

    # XLA's own copy insertion copies the donated hidden kernels read by W^T g.
    assert _copies(plain, fresh(), batch) >= 2
    assert _copies(default, fresh(), batch) == 0
    s_default, s_plain = fresh(), fresh()
    for _ in range(3):
        s_default, m_default = default(s_default, batch)
        s_plain, m_plain = plain(s_plain, batch)
    jax.tree.map(np.testing.assert_array_equal, s_default.trainable, s_plain.trainable)
    jax.tree.map(np.testing.assert_array_equal, s_default.opt_state, s_plain.opt_state)
    np.testing.assert_array_equal(m_default["loss"], m_plain["loss"])


def test_options_only_on_cpu():
    cpu = train.data_mesh(jax.devices()[:1])
    assert step_mod.step_compiler_options(cpu) == step_mod.CPU_STEP_OPTIONS
    gpu_like = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="gpu")]))
    assert step_mod.step_compiler_options(gpu_like) == {}
