"""FA with a one-hot MSE loss in the README's own-loop pattern (issue 28, item 4).

Prints one line per condition: test accuracy after each epoch, the angle between each hidden
layer's update and BP's gradient (mean over the first 20 and the last 20 steps), the angle
between the classifier's B and W at the end, and the output RMS at the end. Every condition
starts from the same key; the table is in docs/notes/rules_wt.md ("FA with an MSE loss").

    python -m experiments.studies.fa_mse [--epochs=5] [--only=fa_he,fa_cls0.1] [--seed=0]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import alearn
import alearn.data
from alearn.analysis import angle

WIDTHS, BATCH, CLASSES = (256, 256), 128, 10

# name -> (rule, rule hparams, loss, optimizer, lr, classifier init scale, target scale)
CONDITIONS = {
    "bp_he": ("bp", {}, "mse", "adam", 1e-3, 1.0, 1.0),
    "bp_cls0.1": ("bp", {}, "mse", "adam", 1e-3, 0.1, 1.0),
    "fa_he": ("fa", {}, "mse", "adam", 1e-3, 1.0, 1.0),
    "fa_ce": ("fa", {}, "ce", "adam", 1e-3, 1.0, 1.0),
    "fa_sum_over_classes": ("fa", {}, "mse_sum", "adam", 1e-3, 1.0, 1.0),
    "fa_fbscale0.1": ("fa", {"feedback_scale": 0.1}, "mse", "adam", 1e-3, 1.0, 1.0),
    "fa_fbscale10": ("fa", {"feedback_scale": 10.0}, "mse", "adam", 1e-3, 1.0, 1.0),
    "fa_adam1e-4": ("fa", {}, "mse", "adam", 1e-4, 1.0, 1.0),
    "fa_targets10": ("fa", {}, "mse", "adam", 1e-3, 1.0, 10.0),
    "fa_cls0.5": ("fa", {}, "mse", "adam", 1e-3, 0.5, 1.0),
    "fa_cls0.3": ("fa", {}, "mse", "adam", 1e-3, 0.3, 1.0),
    "fa_cls0.1": ("fa", {}, "mse", "adam", 1e-3, 0.1, 1.0),
    "fa_cls0": ("fa", {}, "mse", "adam", 1e-3, 0.0, 1.0),
    "fa_sgd1e-2": ("fa", {}, "mse", "sgd", 1e-2, 1.0, 1.0),
    "fa_sgd1e-1": ("fa", {}, "mse", "sgd", 1e-1, 1.0, 1.0),
    "fa_sgd1e-1_cls0.1": ("fa", {}, "mse", "sgd", 1e-1, 0.1, 1.0),
    "bp_sgd1e-1": ("bp", {}, "mse", "sgd", 1e-1, 1.0, 1.0),
    "fa_sgd3e-1": ("fa", {}, "mse", "sgd", 3e-1, 1.0, 1.0),
    "dfa_he": ("dfa", {}, "mse", "adam", 1e-3, 1.0, 1.0),
    "dfa_cls0.1": ("dfa", {}, "mse", "adam", 1e-3, 0.1, 1.0),
    "kp_he": ("kp", {"decay_kernel": True}, "mse", "adam", 1e-3, 1.0, 1.0),
    "sign_he": ("sign", {}, "mse", "adam", 1e-3, 1.0, 1.0),
}

LOSSES = {
    "mse": lambda out, y: jnp.mean((out - y) ** 2),               # the user's loss
    "mse_sum": lambda out, y: jnp.mean(jnp.sum((out - y) ** 2, -1)),  # K times larger
    "ce": lambda out, y: optax.softmax_cross_entropy(out, y).mean(),
}


def run(name: str, epochs: int, seed: int = 0) -> dict:
    rule_name, hp, loss_name, opt, lr, cls_scale, y_scale = CONDITIONS[name]
    loss = LOSSES[loss_name]
    model = alearn.models.create("mlp", num_classes=CLASSES, widths=WIDTHS)
    rule, bp = alearn.rules.create(rule_name, **hp), alearn.rules.create("bp")
    ds = alearn.data.create("mnist5k")
    test = next(ds.batches("test", 1000))
    variables = alearn.init(model, rule, jax.random.key(seed), test["image"])
    top = f"Dense_{len(WIDTHS)}"
    p = variables["params"]
    variables["params"] = {**p, top: {**p[top], "kernel": p[top]["kernel"] * cls_scale}}
    params = alearn.trainable(rule, variables)
    tx = optax.chain(rule.transform(), optax.adam(lr) if opt == "adam" else optax.sgd(lr))
    opt_state = tx.init(params)
    hidden = [f"Dense_{i}" for i in range(len(WIDTHS))]

    @jax.jit
    def step(params, opt_state, x, y):
        v = {**variables, **params}
        (_, out, _), upd = alearn.value_and_updates(loss, model, rule, v, x, y)
        _, grad = alearn.value_and_updates(loss, model, bp, v, x, y)
        diag = {k: angle(upd["params"][k]["kernel"], grad["params"][k]["kernel"])
                for k in hidden}
        diag["o_rms"] = jnp.sqrt(jnp.mean(out ** 2))
        if "B" in variables.get("feedback", {}).get(top, {}):
            b = params.get("feedback", variables["feedback"])[top]["B"]
            diag["b_vs_w_top"] = angle(b, params["params"][top]["kernel"])
        steps, opt_state = tx.update(upd, opt_state, params)
        return optax.apply_updates(params, steps), opt_state, diag

    t0, diags, accs = time.time(), [], []
    for epoch in range(epochs):
        for b in ds.batches("train", BATCH, epoch=epoch):
            y = y_scale * jax.nn.one_hot(b["label"], CLASSES)
            params, opt_state, d = step(params, opt_state, b["image"], y)
            diags.append(jax.device_get(d))
        logits = model.apply({**variables, **params}, test["image"], rule=rule)
        accs.append(round(float((logits.argmax(-1) == test["label"]).mean()), 3))
    mean = lambda ds_, k: round(sum(float(d[k]) for d in ds_) / len(ds_), 1)  # noqa: E731
    out = {"name": name, "acc": accs, "s": round(time.time() - t0, 1),
           "o_rms_end": round(float(diags[-1]["o_rms"]), 2)}
    for k in hidden:
        out[f"{k}_first20"] = mean(diags[1:21], k)  # step 0: the untrained net
        out[f"{k}_last20"] = mean(diags[-20:], k)
    if "b_vs_w_top" in diags[-1]:
        out["b_vs_w_top_end"] = round(float(diags[-1]["b_vs_w_top"]), 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated condition names")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(CONDITIONS)
    for n in names:
        print(run(n, args.epochs, args.seed), flush=True)


if __name__ == "__main__":
    main()
