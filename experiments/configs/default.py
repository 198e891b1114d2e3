"""Quickstart: MLP 784-1024-1024-10 trained with backprop on the bundled mnist5k digits.

Command:
  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/quickstart

Runtime here: 24-37 s wall on the 2-core dev machine while it was shared (load average 8-16;
12 s of CPU time), 10 epochs of 31 steps. Expected: test accuracy 0.952 on the 1,000 held-out
mnist5k digits (0.915 after epoch 1; Adam 1e-3, batch 128, no augmentation).

Another rule: ``--config.rule=<name>`` (any of ``alearn.rules.names()``, or ``al``) trains
it with settings that train: ``rule_hparams`` is filled with that rule's paper defaults, so
``--config.rule_hparams.<field>=<value>`` works for the rule selected on the command line
(``--config=experiments/configs/default.py:<name>`` is the same). KP under the quickstart's
Adam trains without weight decay: Adam rescales any decay added to the gradient per weight,
so W − B would not shrink by (1 − ηλ) (docs/notes/rules_wt.md, "KP and weight decay"); for
KP's decay use ``--config.optimizer=adamw --config.weight_decay=5e-4
--config.weight_decay_mask=all`` or SGD with ``--config.weight_decay=λ
--config.rule_hparams.weight_decay=λ``.
"""

import dataclasses
import os
import sys

import ml_collections


def rule_defaults(rule: str) -> ml_collections.ConfigDict:
    """The hyperparameter fields of ``rule`` with their defaults (empty for unknown names,
    which ``alearn.train.validate_config`` then rejects with the valid list)."""
    import alearn.rules  # pylint: disable=import-outside-toplevel

    cls = alearn.rules.RULES.get(str(rule).lower())
    if cls is None:
        return ml_collections.ConfigDict()
    return ml_collections.ConfigDict({
        f.name: f.default for f in dataclasses.fields(cls)
        if f.init and f.default is not dataclasses.MISSING})


def rule_from_command_line(argv: list[str] | None = None) -> str | None:
    """The last ``--config.rule=<name>`` of ``argv`` (default ``sys.argv``) when its
    ``--config=`` is this file without an argument, else None.

    ml_collections builds the config before it applies ``--config.*`` overrides and cannot
    add fields then; reading the rule here first lets ``--config.rule=kp
    --config.rule_hparams.decay_kernel=True`` find KP's fields.
    """
    argv = list(sys.argv if argv is None else argv)
    files = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    files += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    if not files or ":" in files[-1] or not os.path.isfile(files[-1]) \
            or not os.path.samefile(files[-1], __file__):
        return None
    rule = None
    for i, a in enumerate(argv):
        if a.startswith("--config.rule="):
            rule = a.split("=", 1)[1]
        elif a == "--config.rule" and i + 1 < len(argv):
            rule = argv[i + 1]
    return rule


def get_config(rule: str | None = None) -> ml_collections.ConfigDict:
    """The default (quickstart) configuration; every field can be overridden by flag.

    ``rule`` None: ``--config.rule`` of the command line when this file is the ``--config``
    (:func:`rule_from_command_line`), else ``"bp"``.
    """
    rule = rule if rule is not None else (rule_from_command_line() or "bp")
    c = ml_collections.ConfigDict()
    # What to train.
    c.rule = rule
    c.rule_hparams = rule_defaults(rule)
    if str(rule).lower() == "kp":  # Adam (below) rescales any decay: KP trains without it
        c.rule_hparams.weight_decay = 0.0  # configs with SGD set λ on W and B (wt.py)
    c.model = "mlp"
    c.model_kwargs = ml_collections.ConfigDict({"widths": (1024, 1024)})
    c.dataset = "mnist5k"
    c.dataset_options = ml_collections.ConfigDict()
    c.data_dir = ""  # "" = alearn.data's default location
    c.seed = 0
    # How to train.
    c.epochs = 10
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.optimizer = "adam"  # adam | adamw | sgd
    c.learning_rate = 1e-3
    c.momentum = 0.9  # sgd only
    c.nesterov = False
    c.weight_decay = 0.0
    # params (incl. biases, BN) | kernels | conv_kernels | all (+ trained B)
    c.weight_decay_mask = "params"
    c.schedule = "constant"  # constant | cosine | step
    c.decay_epochs = (80, 120, 160, 180)  # step schedule only
    c.decay_factor = 0.1
    # Outputs.
    c.checkpoint_keep = 3
    c.tensorboard = True
    c.alignment = False  # log per-layer alignment angles each epoch + alignment.png
    c.alignment_every = 0  # with alignment: also every N steps to alignment.jsonl (0 = off)
    c.progress_bar = True
    c.overwrite = False  # True: delete this workdir's previous run and train again
    # Multi-process: "auto" joins a cluster the environment describes (SLURM, TPU pod,
    # JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID); "off" never does.
    c.distributed = "auto"
    return c
