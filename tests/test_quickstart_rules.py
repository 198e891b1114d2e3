"""The README's quickstart command with ``--config.rule=<name>`` for every rule (issue 28).

The command line is parsed as ``experiments.train`` parses it (ml_collections'
``DEFINE_config_file`` on the README's own arguments, ``sys.argv`` set to them), then
trained in-process for one short epoch on a fixed 1,536-digit subset of mnist5k (12 steps):
each rule must leave chance (0.1) well behind with nothing but the rule's name. AL is not in
``alearn.rules.names()``: its configs and trainer have their own tests (test_al_train.py).
"""

import math
import os
import re
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

import alearn
from alearn.train import ConfigError, train_and_evaluate, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_quickstart() -> list[str]:
    """The flags of the README's quickstart command (the set-up section's first block)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"python -m experiments\.train (--config=\S+) --workdir=\S+", text)
    assert m, "README quickstart command not found"
    return [m.group(1)]


def parse(args: list[str], monkeypatch) -> ml_collections.ConfigDict:
    """``experiments.train``'s flag parsing of ``args`` (``sys.argv`` as a user's)."""
    monkeypatch.chdir(ROOT)
    argv = ["experiments.train", *args, "--workdir=unused"]
    monkeypatch.setattr(sys, "argv", argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    fv(argv)
    return fv.config


@pytest.mark.parametrize("rule", alearn.rules.names())
def test_readme_quickstart_trains_every_rule_by_its_name_alone(rule, monkeypatch, tmp_path):
    config = parse([*_readme_quickstart(), f"--config.rule={rule}"], monkeypatch)
    assert config.rule == rule
    validate_config(config)  # the binary's check, before anything is read
    with config.unlocked():  # a short epoch: 12 steps of the quickstart's batch 128
        config.epochs, config.progress_bar, config.tensorboard = 1, False, False
        config.dataset_options = ml_collections.ConfigDict({"train_examples": 1536})
    res = train_and_evaluate(config, str(tmp_path))
    assert math.isfinite(res["test_loss"]) and math.isfinite(res["train_loss"])
    assert res["test_accuracy"] >= 0.4, (rule, res["test_accuracy"])  # chance: 0.1


def test_rule_hparams_of_the_rule_given_on_the_command_line_are_flags(monkeypatch):
    """The issue's second command: KP's fields exist when ``--config.rule=kp`` selects it."""
    args = [*_readme_quickstart(), "--config.rule=kp", "--config.rule_hparams.decay_kernel=True",
            "--config.optimizer=sgd"]
    config = parse(args, monkeypatch)
    assert config.rule_hparams.decay_kernel is True
    validate_config(config)  # SGD, no base decay: KP decays W and B by its own λ
    assert parse([*_readme_quickstart(), "--config.rule=fa"], monkeypatch).rule_hparams.to_dict() \
        == parse(["--config=experiments/configs/default.py:fa"], monkeypatch).rule_hparams.to_dict()
    assert parse(_readme_quickstart(), monkeypatch).rule_hparams.to_dict() == {}  # bp


@pytest.mark.parametrize("extra", [
    ["--config.rule_hparams.weight_decay=5e-4"],  # KP's λ under the quickstart's Adam
    ["--config.optimizer=sgd", "--config.weight_decay=5e-4"],  # base decays W, not B
    ["--config.optimizer=sgd", "--config.weight_decay=5e-4",  # the uneven mask
     "--config.weight_decay_mask=conv_kernels", "--config.rule_hparams.weight_decay=5e-4"],
    ["--config.optimizer=adamw", "--config.weight_decay=1e-2"],  # decoupled on W only
    ["--config.optimizer=sgd", "--config.weight_decay=5e-4",
     "--config.rule_hparams.weight_decay=5e-4", "--config.rule_hparams.decay_kernel=True"],
])
def test_every_fix_a_kp_decay_error_names_is_a_command_that_works(extra, monkeypatch):
    base = [*_readme_quickstart(), "--config.rule=kp", *extra]
    with pytest.raises(ConfigError) as err:
        validate_config(parse(base, monkeypatch))
    fixes = str(err.value).split("Fix: ", 1)[1].split("; or ")
    assert fixes and "\n" not in str(err.value)
    for fix in fixes:
        validate_config(parse(base + fix.split(), monkeypatch))  # parses and is accepted
