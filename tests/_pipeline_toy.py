"""Toy blocks for the pipeline tests: small dense layers with local losses and Adam state.

Each block maps (s, y) -> (tanh(s W + c), sigmoid(y Q)) and trains on a local loss
‖(s_out B) − y_out‖² + ‖y_out V − y‖², like an AL block; widths differ per block so the
pipeline's padded layout is exercised. With ``axis_name`` the gradients are averaged over
the data axis (data parallelism inside a stage).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alearn.al.pipeline import grad_mean

TX = optax.adam(1e-2)


def init_blocks(key, widths, y_width):
    """States of len(widths) - 1 blocks mapping widths[i] -> widths[i+1]."""
    states, y_in = [], y_width
    for i, k in enumerate(jax.random.split(key, len(widths) - 1)):
        k1, k2, k3, k4 = jax.random.split(k, 4)
        d_in, d_out, y_out = widths[i], widths[i + 1], y_width + i + 1
        p = {"W": jax.random.normal(k1, (d_in, d_out)) / np.sqrt(d_in),
             "c": jnp.zeros((d_out,)),
             "B": jax.random.normal(k2, (d_out, y_out)) / np.sqrt(d_out),
             "Q": jax.random.normal(k3, (y_in, y_out)) / np.sqrt(y_in),
             "V": jax.random.normal(k4, (y_out, y_in)) / np.sqrt(y_out)}
        states.append((p, TX.init(p)))
        y_in = y_out
    return states


def step(state, s, y, axis_name=None):
    """One local update: (state, s_out, y_out, metrics)."""
    params, opt = state

    def loss(p):
        s_out = jnp.tanh(s @ p["W"] + p["c"])
        y_out = jax.nn.sigmoid(y @ p["Q"])
        assoc = jnp.mean((s_out @ p["B"] - jax.lax.stop_gradient(y_out)) ** 2)
        ae = jnp.mean((y_out @ p["V"] - y) ** 2)
        return assoc + ae, (s_out, y_out, {"assoc": assoc, "ae": ae})

    g, (s_out, y_out, m) = jax.grad(loss, has_aux=True)(params)
    if axis_name is not None:
        g = grad_mean(g, axis_name)
    upd, opt = TX.update(g, opt, params)
    return (optax.apply_updates(params, upd), opt), s_out, y_out, m


def data(key, n, batch, d_in, y_width):
    """n micro-batches of inputs [n, batch, d_in] and targets [n, batch, y_width]."""
    kx, ky = jax.random.split(key)
    return (np.asarray(jax.random.normal(kx, (n, batch, d_in))),
            np.asarray(jax.random.uniform(ky, (n, batch, y_width))))


def sequential(states, xs, ys):
    """Reference: per micro-batch, every block's step in order (each jitted alone)."""
    jitted = jax.jit(step)
    states = list(states)
    for x, y in zip(xs, ys):
        s, t = x, y
        for b in range(len(states)):
            states[b], s, t, _ = jitted(states[b], s, t)
    return states


WIDTHS, Y_WIDTH, BATCH = (6, 8, 5, 7, 4), 3, 4
CALLS = ((0, 3), (3, 7), (7, 14))  # 3 (< 4 stages), 4 (= 4), 7 (> 4) micro-batches per call


def problem(seed: int = 0):
    """The shared test problem: 4 toy blocks of different widths and 14 micro-batches."""
    states = init_blocks(jax.random.key(seed), WIDTHS, Y_WIDTH)
    return states, data(jax.random.key(seed + 1), CALLS[-1][1], BATCH, WIDTHS[0], Y_WIDTH)
