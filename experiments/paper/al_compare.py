"""AL vs its parameter-matched BP twin: accuracies, Sec. 3.3 metafeature distances, t-SNE.

Trains ``config`` (an ``experiments/configs/al.py`` config) once with ``rule=al`` and once
with ``rule=bp`` (same model name, data, epochs, optimizer), into ``<workdir>/al`` and
``<workdir>/bp`` (re-running resumes/reuses them), then on ``--num_examples`` test examples
computes intra/inter-class distances of every prediction-path layer of both (layer k of AL
= layer k of the BP twin) and writes ``<workdir>/compare.json`` and a t-SNE PNG (raw data,
layers ``--tsne_layers``; thesis Fig. 3.6).

Usage:
  python -m experiments.paper.al_compare --config=experiments/configs/al.py:mlp,mnist5k,cpu \
      --workdir=/tmp/al_compare [--tsne_png=docs/figures/al_mlp_tsne.png]
"""

from __future__ import annotations

import copy
import json
import os

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

def _for(base, rule: str):
    """``base`` for ``rule``: the BP side takes ``base.bp``'s lr and L2 when present."""
    from experiments.configs import al as al_cfg

    if rule == "bp" and "bp" in base:
        return al_cfg.as_bp(base)
    config = copy.deepcopy(base)
    config.rule = rule
    return config


_CONFIG = config_flags.DEFINE_config_file("config", None, "AL config (experiments/configs/al.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_N = flags.DEFINE_integer("num_examples", 1000, "Test examples for distances and t-SNE.")
_LAYERS = flags.DEFINE_list("tsne_layers", ["2", "4", "last"], "Layers (1-based) to embed.")
_PNG = flags.DEFINE_string("tsne_png", "", "t-SNE PNG path (default <workdir>/tsne.png).")
flags.mark_flags_as_required(["config", "workdir"])


def _bp_state(config, workdir, ds):
    """The final TrainState of the BP twin run in ``workdir``."""
    from alearn.train import Checkpointer, create_train_state, optimizer_from_config, setup

    model, rule = setup.create_model_and_rule(config, ds.info.num_classes)
    spe = ds.num_batches("train", int(config.batch_size))
    template = create_train_state(model, rule, optimizer_from_config(config, rule, spe),
                                  jax.random.key(int(config.get("seed", 0))),
                                  np.zeros((1, *ds.info.image_shape), np.float32))
    ckpt = Checkpointer(workdir)
    state = ckpt.restore(ckpt.latest_epoch(), template)
    ckpt.close()
    return model, rule, state


def main(argv):
    del argv
    import alearn.al as al
    import alearn.al.train as al_train
    from alearn.analysis import metafeatures as mf
    from alearn.analysis import tsne
    from alearn.train import train_and_evaluate

    base = _CONFIG.value
    results = {}
    for rule in ("al", "bp"):  # BP: its own lr / L2 (configs/al.py ``bp``) when the config has them
        config = _for(base, rule)
        results[rule] = train_and_evaluate(config, os.path.join(_WORKDIR.value, rule))
    al_net, al_states, ds = al_train.restore(base, os.path.join(_WORKDIR.value, "al"))
    bp_config = _for(base, "bp")
    model, rule, bp_state = _bp_state(bp_config, os.path.join(_WORKDIR.value, "bp"), ds)

    batch = next(ds.batches("test", _N.value, shuffle=False, augment=False))
    x, labels = batch["image"], batch["label"]
    _, al_acts = al.prediction_path(al_net, al_states, x)
    bp_feats = mf.model_features(model.apply, bp_state.variables(), x, rule=rule, train=False)
    layers = {"AL": [(n, np.asarray(a)) for n, a in al_acts], "BP": list(bp_feats.items())}
    if len(layers["AL"]) != len(layers["BP"]):
        raise ValueError(f"AL path has {len(layers['AL'])} layers, BP twin "
                         f"{len(layers['BP'])}: {[n for n, _ in layers['AL']]} vs "
                         f"{[n for n, _ in layers['BP']]}")
    table = {"raw": mf.metafeature_quality(x, labels)}
    for k in range(len(layers["AL"])):
        for method in ("AL", "BP"):
            name, feats = layers[method][k]
            table[f"{method} layer{k + 1} ({name})"] = mf.metafeature_quality(feats, labels)
    out = {"test_accuracy": {r: results[r]["test_accuracy"] for r in results},
           "num_params": {r: results[r]["num_params"] for r in results},
           "affiliated_params_al": results["al"].get("affiliated_params"),
           "train_samples_per_second": {r: results[r]["train_samples_per_second"]
                                        for r in results},
           "metafeatures": table, "num_examples": int(len(labels))}
    with open(os.path.join(_WORKDIR.value, "compare.json"), "w") as f:
        json.dump(out, f, indent=2)
    n = len(layers["AL"])
    picks = [n if s == "last" else int(s) for s in _LAYERS.value]
    rows = [(m, [("raw", x)] + [(f"layer {k}", layers[m][k - 1][1]) for k in picks])
            for m in ("BP", "AL")]
    png = _PNG.value or os.path.join(_WORKDIR.value, "tsne.png")
    tsne.plot_tsne(rows, labels, png, title=f"{base.model} on {base.dataset} (test)")
    logging.info("wrote %s", png)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    from experiments import _cli
    _cli.run(main)
