"""Trains one (model, rule, dataset) configuration and writes results to a workdir.

Usage:
  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/run \
      [--config.rule=bp --config.model=mlp --config.dataset=mnist5k --config.epochs=3 ...]

Re-running with the same workdir continues from its newest complete checkpoint (also after
a kill at any instant); a workdir holding the finished run reports it
(``--config.overwrite=True`` trains again). Mistakes in flags or config exit with status 2
and a one-line message (``--verbose`` shows the traceback); SIGTERM / SIGINT stop at a clean
point (exit 128 + signal), and the same command resumes. ``--config.distributed=auto``
(default) joins a multi-process run when the environment describes one (SLURM, TPU pod,
``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID``).
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from experiments import _cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise _cli.app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    from alearn.train import distributed
    distributed.initialize(config.get("distributed", "auto"))  # before any JAX backend use
    import jax
    from alearn.train import train_and_evaluate, validate_config

    validate_config(config)  # every mistake fails here, before any data or compilation
    if jax.process_index() == 0:  # the whole config is in <workdir>/config.json
        print(f"run: rule={config.rule} model={config.model} dataset={config.dataset} "
              f"epochs={config.epochs}; full config in {_WORKDIR.value}/config.json", flush=True)
    results = train_and_evaluate(config, _WORKDIR.value)
    summary = {k: results.get(k) for k in ("rule", "model", "dataset", "epochs", "test_accuracy",
                                           "test_loss", "train_samples_per_second", "num_params")}
    if jax.process_count() > 1:  # every process reports; process 0 alone wrote the files
        summary.update(process=jax.process_index(), processes=jax.process_count())
    print(json.dumps(summary))
    if jax.process_index() != 0:
        return 0
    if results.get("already_finished"):
        print(f"{_WORKDIR.value} already holds this finished run; pass "
              "--config.overwrite=True to train it again, or use another --workdir")
    print(f"test accuracy: {results['test_accuracy']:.4f}  "
          f"(results in {_WORKDIR.value}/results.json)")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    _cli.run(main)
