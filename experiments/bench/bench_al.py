"""Step time of AL vs its parameter-matched BP twin on the same model, with the AL split.

Times (median of ``--steps`` jitted steps after warm-up, ``block_until_ready``):
- ``al_step``: the whole-network AL step (every block's local update, ``alearn.al.train_step``);
- ``al_forward_side``: f_i and b_i of every block: forward, backward of ``L_i``, Adam update
  (targets y_i given);
- ``al_autoencoder_side``: g_i and h_i of every block: forward, backward of ``L'_i``, update;
- ``bp_step``: the BP twin (``alearn.models`` ``al_<model>``), softmax cross-entropy, Adam
  (``alearn.train.train_step``, one device).

Also XLA's flop counts of each compiled program (``cost_analysis``), which do not depend
on the machine's load. Usage:
  python -m experiments.bench.bench_al [--model=al_mlp --width_multiplier=0.25 --batch_size=32]
Prints one JSON line.
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

_MODEL = flags.DEFINE_string("model", "al_mlp", "AL model name.")
_WM = flags.DEFINE_float("width_multiplier", 0.25, "Width multiplier.")
_BS = flags.DEFINE_integer("batch_size", 32, "Batch size (thesis: 32).")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per measurement.")
_SHAPE = flags.DEFINE_list("input_shape", ["28", "28", "1"], "H,W,C of the input.")


def _time(fn, *args, steps: int) -> float:
    """Median seconds of ``fn(*args)`` (output fed back as first arg when it is state)."""
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _forward_side(net, states, x, targets):
    import alearn.al as al
    s, new = x, []
    for bd, st, t in zip(net.blocks, states, targets):
        def loss(p, bd=bd, st=st, s=s, t=t):
            s_out, _ = al.apply_fn(bd.f, p["f"], st.model_state["f"], jax.lax.stop_gradient(s),
                                   True)
            z, _ = al.apply_fn(bd.b, p["b"], st.model_state["b"], s_out, True)
            return jnp.sum((z - t) ** 2, -1).mean(), s_out
        p = {"f": st.params["f"], "b": st.params["b"]}
        g, s = jax.grad(loss, has_aux=True)(p)
        upd, opt = bd.tx_forward.update(g, st.opt_forward, p)
        new.append((optax.apply_updates(p, upd), opt))
    return new


def _ae_side(net, states, y):
    import alearn.al as al
    new = []
    for bd, st in zip(net.blocks, states):
        def loss(p, bd=bd, st=st, y=y):
            return al.autoencoder_loss(bd, {**st.params, **p}, y)
        p = {"g": st.params["g"], "h": st.params["h"]}
        g, y = jax.grad(loss, has_aux=True)(p)
        upd, opt = bd.tx_ae.update(g, st.opt_ae, p)
        new.append((optax.apply_updates(p, upd), opt))
    return new


def main(argv):
    del argv
    import alearn.al as al
    import alearn.models
    from alearn.rules import BP
    from alearn.train import create_train_state, train_step

    shape = tuple(int(v) for v in _SHAPE.value)
    net = al.create(_MODEL.value, 10, shape, width_multiplier=_WM.value)
    states = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (_BS.value, *shape))
    labels = jax.random.randint(jax.random.key(2), (_BS.value,), 0, 10)
    y0 = al.targets(net, labels)
    ys, y = [], y0
    for bd, st in zip(net.blocks, states):
        y = bd.g.apply({"params": st.params["g"]}, y)
        ys.append(y)

    al_step = jax.jit(functools.partial(al.train_step, net))
    fwd = jax.jit(functools.partial(_forward_side, net))
    ae = jax.jit(functools.partial(_ae_side, net))
    model = alearn.models.create(_MODEL.value, 10, width_multiplier=_WM.value)
    opt = optax.adam(1e-4)
    bp_state = create_train_state(model, BP(), opt, jax.random.key(0), np.zeros((1, *shape)))
    bp_step = jax.jit(lambda s, b: train_step(model, BP(), opt, s, b))
    batch = {"image": x, "label": labels}

    n = _STEPS.value
    res = {"model": _MODEL.value, "width_multiplier": _WM.value, "batch_size": _BS.value,
           "device": str(jax.devices()[0].platform),
           "al_params": al.param_counts(net, states),
           "bp_params": alearn.models.num_params(bp_state.trainable)}
    for name, fn, args in (("al_step", al_step, (states, x, labels)),
                           ("al_forward_side", fwd, (states, x, ys)),
                           ("al_autoencoder_side", ae, (states, y0)),
                           ("bp_step", bp_step, (bp_state, batch))):
        # XLA's flop count: a load-independent check of the timings
        res[f"{name}_gflop"] = fn.lower(*args).compile().cost_analysis().get("flops", 0) / 1e9
    for _ in range(3):  # interleave to even out a shared machine's load
        for name, fn, args in (("al_step", al_step, (states, x, labels)),
                               ("al_forward_side", fwd, (states, x, ys)),
                               ("al_autoencoder_side", ae, (states, y0)),
                               ("bp_step", bp_step, (bp_state, batch))):
            t = _time(fn, *args, steps=n)
            res[f"{name}_ms"] = min(res.get(f"{name}_ms", 1e9), 1e3 * t)
    res["al_over_bp"] = res["al_step_ms"] / res["bp_step_ms"]
    res["al_over_bp_flops"] = res["al_step_gflop"] / res["bp_step_gflop"]
    res["forward_side_share"] = res["al_forward_side_ms"] / (
        res["al_forward_side_ms"] + res["al_autoencoder_side_ms"])
    print(json.dumps(res))


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
