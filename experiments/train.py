"""Trains one (model, rule, dataset) configuration and writes results to a workdir.

Usage:
  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/run \
      [--config.rule=bp --config.model=mlp --config.dataset=mnist5k --config.epochs=3 ...]

Re-running with the same workdir continues from its newest checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from alearn.train import train_and_evaluate, validate_config

    # Orbax logs every checkpoint step at INFO; keep the run's own log readable.
    logging.get_absl_handler().addFilter(lambda r: "/orbax/" not in r.pathname)
    config = _CONFIG.value
    validate_config(config)  # bad names fail here, before any data or compilation
    logging.info("config:\n%s", config)
    results = train_and_evaluate(config, _WORKDIR.value)
    summary = {k: results.get(k) for k in ("rule", "model", "dataset", "epochs", "test_accuracy",
                                           "train_samples_per_second", "num_params")}
    print(json.dumps(summary))
    print(f"test accuracy: {results['test_accuracy']:.4f}  "
          f"(results in {_WORKDIR.value}/results.json)")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
