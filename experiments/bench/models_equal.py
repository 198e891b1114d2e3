r"""Updates of every (model, rule) pair before and after a change to the models (issue 25).

Saves, for each pair the reproduction tables use (both scales) and each registered model
under each rule's defaults, the variables it was initialised with, one batch, and the
rule's updates (``alearn.value_and_updates`` of the cross-entropy, then the rule's own
transform, e.g. the sharing rules' freeze and decay); or compares a saved set with what the
current code computes from *the same variables and batch*::

    python -m experiments.bench.models_equal --save=/tmp/models_before     # on the old code
    python -m experiments.bench.models_equal --compare=/tmp/models_before  # on the new code

Widths are scaled down (``--width``) so the whole set runs in minutes on a CPU; the code
paths are those of the full-width models. Feedback written by an older layout (the
native models' DFA receivers) is brought to the current one by
:func:`alearn.models.convert_variables` when it exists. The comparison prints one line per
pair and the largest relative difference ``max|a - b| / max|b|`` over every leaf.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("save", None, "directory to write the reference set to")
flags.DEFINE_string("compare", None, "directory of a saved reference set to compare with")
flags.DEFINE_float("tol", 1e-6, "largest relative difference accepted")
flags.DEFINE_string("only", "", "comma-separated substrings: run the pairs whose key has one")

SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "svhn_cropped": (32, 32, 3),
          "tiny_imagenet": (64, 64, 3)}
SMALL = {"resnet": 0.0625, "alexnet": 0.125, "vgg": 0.0625, "mlp": 0.25, "cnn": 0.25}
RULES = ("bp", "fa", "dfa", "kp", "sign", "wm", "as", "asap", "asfp", "asfp_lc", "foa",
         "local_fixed", "predsim", "hsic")


def _small(model: str) -> float | None:
    for prefix, w in SMALL.items():
        if model.startswith(prefix):
            return w
    return None


def _table_pairs() -> dict[str, dict]:
    from experiments.paper import _tables_cpu, tables  # pylint: disable=import-outside-toplevel
    out = {}
    with _tables_cpu.pending_allowed():
        for table in tables.TABLE_IDS:
            for scale in tables.SCALES:
                for run in tables.runs(table, scale):
                    c = run.config
                    if run.kind not in ("train", "foa") or c.rule == "al":
                        continue
                    hp = c.get("rule_hparams", None)
                    hp = hp.to_dict() if hasattr(hp, "to_dict") else dict(hp or {})
                    mk = c.get("model_kwargs", None)
                    mk = mk.to_dict() if hasattr(mk, "to_dict") else dict(mk or {})
                    entry = dict(model=c.model, rule=c.rule, rule_hparams=hp,
                                 model_kwargs=mk, dataset=c.dataset)
                    key = json.dumps(entry, sort_keys=True)
                    out[key] = entry
    return out


def _default_pairs() -> dict[str, dict]:
    import alearn  # pylint: disable=import-outside-toplevel
    out = {}
    for model in alearn.models.names():
        if model.startswith("al_"):
            continue
        for rule in RULES:
            entry = dict(model=model, rule=rule, rule_hparams={}, model_kwargs={},
                         dataset="cifar10" if model != "mlp" else "fashion_mnist")
            out[json.dumps(entry, sort_keys=True)] = entry
    return out


def pairs() -> dict[str, dict]:
    """Every (model, rule) pair checked, keyed by its JSON."""
    out = {**_default_pairs(), **_table_pairs()}
    keep = [s for s in FLAGS.only.split(",") if s]
    return {k: v for k, v in sorted(out.items()) if not keep or any(s in k for s in keep)}


def _build(entry: dict):
    import alearn  # pylint: disable=import-outside-toplevel
    mk = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["model_kwargs"].items()}
    w = _small(entry["model"])
    if w is not None and "width_multiplier" not in mk:
        mk["width_multiplier"] = w
    elif w is not None:
        mk["width_multiplier"] = min(mk["width_multiplier"], w)
    nc = 100 if entry["dataset"] == "cifar100" else (200 if entry["dataset"] == "tiny_imagenet"
                                                    else 10)
    model = alearn.models.create(entry["model"], nc, **mk)
    rule = alearn.rules.create(entry["rule"], **entry["rule_hparams"])
    return model, rule, nc


def _updates(model, rule, variables, x, y):
    import alearn  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel

    def loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    (value, _, state), ups = jax.jit(
        lambda v: alearn.value_and_updates(loss, model, rule, v, x, y))(variables)
    tx = rule.transform()
    tv = alearn.trainable(rule, variables)
    ups, _ = tx.update(ups, tx.init(tv), tv)
    return {"loss": value, "updates": ups, "state": state}


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def _save_one(entry: dict, path: str) -> str:
    import alearn  # pylint: disable=import-outside-toplevel
    model, rule, nc = _build(entry)
    shape = SHAPES.get(entry["dataset"], (28, 28, 1))
    kx, ky, ki = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (4, *shape))
    y = jax.random.randint(ky, (4,), 0, nc)
    variables = alearn.init(model, rule, ki, x)
    out = _updates(model, rule, variables, x, y)
    with open(path, "wb") as f:
        pickle.dump({"entry": entry, "x": np.asarray(x), "y": np.asarray(y),
                     "variables": jax.tree.map(np.asarray, variables),
                     "result": jax.tree.map(np.asarray, out)}, f)
    return f"loss {float(out['loss']):.4f}"


def _rel(a: dict, b: dict) -> tuple[float, list[str]]:
    if set(a) != set(b):
        return float("inf"), sorted(set(a) ^ set(b))[:6]
    worst, where = 0.0, []
    for k in a:
        if a[k].shape != b[k].shape:
            return float("inf"), [f"{k}: {a[k].shape} vs {b[k].shape}"]
        scale = float(np.max(np.abs(b[k]))) or 1.0
        d = float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) / scale if a[k].size else 0.0
        if d > worst:
            worst, where = d, [k]
    return worst, where


def _compare_one(path: str) -> tuple[float, str]:
    import alearn  # pylint: disable=import-outside-toplevel
    with open(path, "rb") as f:
        ref = pickle.load(f)
    model, rule, _ = _build(ref["entry"])
    variables = jax.tree.map(jnp.asarray, ref["variables"])
    convert = getattr(alearn.models, "convert_variables", None)
    if convert is not None:
        variables = convert(model, rule, variables, jnp.asarray(ref["x"]))
    out = _updates(model, rule, variables, jnp.asarray(ref["x"]), jnp.asarray(ref["y"]))
    worst, where = _rel(_flat(out["updates"]), _flat(ref["result"]["updates"]))
    dl = abs(float(out["loss"]) - float(ref["result"]["loss"]))
    ds, _ = _rel(_flat(out["state"]), _flat(ref["result"]["state"]))
    worst = max(worst, ds, dl)
    return worst, ",".join(where)


def main(argv):
    del argv
    if bool(FLAGS.save) == bool(FLAGS.compare):
        sys.exit("give exactly one of --save=DIR or --compare=DIR")
    root = FLAGS.save or FLAGS.compare
    os.makedirs(root, exist_ok=True)
    if FLAGS.save:
        todo = pairs()
        names = {k: f"{i:03d}_{v['model']}_{v['rule']}.pkl"
                 for i, (k, v) in enumerate(todo.items())}
        with open(os.path.join(root, "index.json"), "w") as f:
            json.dump(names, f, indent=1)
    else:  # every saved pair (the tables may have changed since), or those --only keeps
        keep = [s for s in FLAGS.only.split(",") if s]
        with open(os.path.join(root, "index.json")) as f:
            names = {k: v for k, v in json.load(f).items()
                     if not keep or any(s in k for s in keep)}
    bad = 0
    for i, (key, fname) in enumerate(names.items()):
        path = os.path.join(root, fname)
        entry = json.loads(key)
        label = f"[{i + 1}/{len(names)}] {entry['model']} {entry['rule']} {entry['rule_hparams']}"
        try:
            if FLAGS.save:
                msg = _save_one(entry, path)
            else:
                if not os.path.exists(path):
                    print(f"{label}: no reference (it failed before)", flush=True)
                    continue
                worst, where = _compare_one(path)
                ok = worst <= FLAGS.tol
                bad += not ok
                msg = f"{'ok ' if ok else 'DIFF'} max rel {worst:.2e} {where if not ok else ''}"
        except Exception as exc:  # pylint: disable=broad-except
            msg = f"error {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            bad += bool(FLAGS.compare)
        print(f"{label}: {msg}", flush=True)
    if FLAGS.compare:
        print(f"{len(names) - bad} of {len(names)} pairs equal within {FLAGS.tol:g}")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    app.run(main)
