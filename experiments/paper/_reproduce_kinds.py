"""The kinds of run ``experiments.reproduce`` executes (``tables.Run.kind``).

Each writes ``<rundir>/results.json`` last, so its existence means the run finished.
- ``train``: ``alearn.train.train_and_evaluate`` (AL configs dispatch to the AL trainer).
- ``foa``: train, then ``alearn.rules.foa.alignment_angles`` (W vs C) on every epoch's
  checkpoint (ASAP thesis Fig. 3.2) into ``angles.json``.
- ``al_compare``: AL and its BP twin, then Sec. 3.3 metafeature distances of every
  prediction-path layer and a t-SNE panel (thesis Table 3.4, Figs 3.6-3.9), as
  ``experiments/paper/al_compare.py`` does.
- ``memory``: Ch. 6 access model and XLA compiled step memory (``alearn.analysis.memory``).
- ``pipeline``: per-block AL step cost and the pipeline schedule (``alearn.al.schedule``).
"""

from __future__ import annotations

import copy
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.paper import _rundirs
from experiments.paper._run import Run


def _write(rundir: str, name: str, obj) -> None:
    from alearn.train.report import _jsonable  # the trainer's JSON conventions

    with open(os.path.join(rundir, name), "w") as f:
        json.dump(_jsonable(obj), f, indent=1)


def train(run: Run, rundir: str) -> dict:
    from alearn.train import train_and_evaluate

    return train_and_evaluate(copy.deepcopy(run.config), rundir)


def _state_template(config, ds):
    from alearn.train import create_train_state, optimizer_from_config, setup

    model, rule = setup.create_model_and_rule(config, ds.info.num_classes)
    spe = ds.num_batches("train", int(config.batch_size))
    return create_train_state(model, rule, optimizer_from_config(config, rule, spe),
                              jax.random.key(int(config.get("seed", 0))),
                              np.zeros((1, *ds.info.image_shape), np.float32))


def foa(run: Run, rundir: str) -> None:
    """Trains, then the Fig. 3.2 W-vs-C angle per layer at epoch 0 and every epoch."""
    from alearn.rules import foa as foa_rule
    from alearn.train import Checkpointer, setup

    if not os.path.exists(os.path.join(rundir, "results.json")):
        train(run, rundir)
    ds = setup.create_dataset(run.config)
    template = _state_template(run.config, ds)
    history = [{"epoch": 0, **foa_rule.alignment_angles(template.variables())}]
    ckpt = Checkpointer(rundir, int(run.config.epochs))
    for epoch in ckpt.all_epochs():
        state = ckpt.restore(epoch, template)
        history.append({"epoch": epoch, **foa_rule.alignment_angles(state.variables())})
    ckpt.close()
    _write(rundir, "angles.json", jax.device_get(history))


def al_compare(run: Run, rundir: str) -> None:
    """AL vs BP twin: accuracies, metafeature distances per layer, t-SNE (al_compare.py)."""
    import alearn.al as al
    import alearn.al.train as al_train
    from alearn.analysis import metafeatures as mf
    from alearn.analysis import tsne
    from alearn.train import setup
    from experiments.paper.al_compare import _bp_state
    from experiments.configs import al as al_cfg

    results = {}
    for method in ("al", "bp"):
        c = al_cfg.as_bp(run.config) if method == "bp" else copy.deepcopy(run.config)
        c.rule = method
        sub = os.path.join(rundir, method)
        results[method] = _read(sub) or _train_shared(Run(method, "", "", config=c), sub)
    al_net, al_states, ds = al_train.restore(run.config, os.path.join(rundir, "al"))
    bp_config = al_cfg.as_bp(run.config)
    model, rule, bp_state = _bp_state(bp_config, os.path.join(rundir, "bp"), ds)
    batch = next(ds.batches("test", run.options["num_examples"], shuffle=False, augment=False))
    x, labels = batch["image"], batch["label"]
    _, al_acts = al.prediction_path(al_net, al_states, x)
    bp_feats = mf.model_features(model.apply, bp_state.variables(), x, rule=rule, train=False)
    layers = {"AL": [(n, np.asarray(a)) for n, a in al_acts], "BP": list(bp_feats.items())}
    table = {"raw": mf.metafeature_quality(x, labels)}
    n = min(len(layers["AL"]), len(layers["BP"]))
    for k in range(n):
        for method in ("AL", "BP"):
            table[f"{method} layer{k + 1}"] = mf.metafeature_quality(layers[method][k][1], labels)
    picks = [n if s == "last" else int(s) for s in run.options["tsne_layers"]]
    rows = [(m, [("raw", x)] + [(f"layer {k}", layers[m][k - 1][1]) for k in picks])
            for m in ("BP", "AL")]
    if run.seed in (None, 0):  # one t-SNE figure per cell: the seeds differ only in layout
        tsne.plot_tsne(rows, labels, os.path.join(rundir, "tsne.png"),
                       title=f"{run.config.model} on {run.config.dataset} (test)")
    _write(rundir, "results.json", {
        "test_accuracy": {m: results[m]["test_accuracy"] for m in results},
        "num_params": {m: results[m].get("num_params") for m in results},
        "metafeatures": table, "last_layer": n, "num_examples": int(len(labels))})


def _train_shared(run: Run, rundir: str) -> dict:
    """Trains ``run`` into ``rundir``, or links it to the same run another table finished
    (``experiments.reproduce``'s run keys; ``rundir`` is ``<workdir>/<table>/<run>/<sub>``)."""
    workdir = os.path.dirname(os.path.dirname(os.path.dirname(rundir)))
    if _rundirs.link_shared(run, rundir, workdir) is None:
        train(run, rundir)
        _rundirs.record_cell(run, rundir, workdir)
    return _read(rundir)


def _read(rundir: str) -> dict | None:
    path = os.path.join(rundir, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def memory(run: Run, rundir: str) -> None:
    """Fig. 6.1: saved activations and external memory accesses (+ XLA step memory)."""
    from alearn import models, rules
    from alearn.analysis import memory as mem
    from alearn.models import num_params

    o = run.options
    rule_set = {"BP": rules.BP(), "ASAP k=2": rules.create("asap", k=2),
                "ASAP k=4": rules.create("asap", k=4)}
    out, access = {}, {}
    for name in o["models"]:
        model = models.create(name, 10)
        shape = (o["batch"], *o["input_shape"])
        variables = jax.eval_shape(lambda k, m=model, s=shape: m.init(
            {"params": k}, jnp.zeros(s)), jax.random.key(0))
        params = num_params(variables)
        out[name], access[name] = {}, {}
        for rname, rule in rule_set.items():
            try:
                act = mem.saved_activations(model, rule, shape)
            except ValueError as exc:  # e.g. k=4 on the AlexNet (its groups are k=2's)
                if "cannot apply" not in str(exc):
                    raise
                out[name][rname] = {"params": params, "not_applicable": str(exc)}
                continue
            access[name][rname] = mem.access_model(params, act)
            row = {"params": params, "saved_activations": act, "access": access[name][rname]}
            if name in o["compiled_models"]:
                row["compiled_step"] = mem.compiled_step_memory(
                    model, rule, (o["compiled_batch"], *o["input_shape"]), 10)
            out[name][rname] = row
    mem.plot_access(access, os.path.join(rundir, "access.png"))
    _write(rundir, "results.json", {"models": out, "options": o})


def pipeline(run: Run, rundir: str) -> None:
    """Per-block AL step cost on one device, the ideal pipeline schedule, modelled makespans."""
    import optax

    import alearn
    import alearn.al as al
    from alearn.al import schedule
    from alearn.train import setup
    from experiments.configs import al as al_cfg

    o = run.options
    shape = (28, 28, 1)
    net = al.create(o["model"], 10, shape, width_multiplier=o["width_multiplier"])
    states = net.init(jax.random.key(0))
    x = jnp.zeros((o["micro_batch"], *shape), jnp.float32)
    labels = jnp.zeros((o["micro_batch"],), jnp.int32)
    s, y = x, al.targets(net, labels)
    costs = []
    for bd, st in zip(net.blocks, states):
        costs.append(schedule.measure(functools.partial(al.block_step, bd), st, s, y,
                                      reps=o["reps"]))
        _, s, y, _ = al.block_step(bd, st, s, y)
    c = al_cfg.get_config(o["model"].removeprefix("al_") + ",mnist5k")
    c.rule, c.model_kwargs.width_multiplier = "bp", o["width_multiplier"]
    model, rule = setup.create_model_and_rule(c, 10)
    variables = alearn.init(model, rule, jax.random.key(0), x)
    opt = optax.adam(1e-4)
    tv = alearn.trainable(rule, variables)

    def bp_step(tv, opt_state, x, labels):  # the BP twin: forward, backward, Adam
        upd = alearn.rule_updates(model, rule, {**variables, **tv}, x, labels)
        upd, opt_state = opt.update(upd, opt_state, tv)
        return optax.apply_updates(tv, upd), opt_state

    bp = schedule.measure(bp_step, tv, opt.init(tv), x, labels, reps=o["reps"])
    n, stages = o["micro_batches"], len(costs)
    sch = schedule.Schedule.ideal(n, stages)
    _write(rundir, "results.json", {
        "blocks": stages, "micro_batches": n, "micro_batch": o["micro_batch"],
        "block_seconds": [k.seconds for k in costs], "block_flops": [k.flops for k in costs],
        "bp_seconds": bp.seconds, "bp_flops": bp.flops,
        "schedule": {"ticks": sch.ticks, "busy": list(sch.busy),
                     "utilisation": sch.utilisation, "bubble_fraction": sch.bubble_fraction},
        "modelled_time": schedule.modelled_makespan([k.seconds for k in costs], n, bp.seconds),
        "modelled_flops": schedule.modelled_makespan([k.flops for k in costs], n, bp.flops),
        "report": schedule.format_report(sch, costs, bp), "device": str(jax.devices()[0])})
