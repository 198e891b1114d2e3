"""Learning rules: pure per-layer functions behind the rule-pluggable layers.

``create(name, **hparams)`` builds a rule by name; unknown names or hyperparameters fail
with the valid choices.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from alearn.local.hsic import HSIC
from alearn.local.mostafa import LocalFixed
from alearn.local.predsim import PredSim
from alearn.rules.base import Rule
from alearn.rules.activation_sharing import AS
from alearn.rules.asap import ASAP
from alearn.rules.asfp import ASFP
from alearn.rules.asfp_lc import ASFPLC
from alearn.rules.bp import BP
from alearn.rules.dfa import DFA
from alearn.rules.fa import FA
from alearn.rules.foa import FoA
from alearn.rules.kp import KP
from alearn.rules.sign import SignSymmetry
from alearn.rules.wm import WM, mirror_step

# name -> rule class. Read-only: a new rule is added here in the source, not at run time.
RULES = MappingProxyType({
    "bp": BP,
    "fa": FA,
    "dfa": DFA,
    "sign": SignSymmetry,
    "kp": KP,
    "wm": WM,
    "foa": FoA,
    "as": AS,
    "asap": ASAP,
    "asfp": ASFP,
    "asfp_lc": ASFPLC,
    "local_fixed": LocalFixed,
    "predsim": PredSim,
    "hsic": HSIC,
})


def names() -> list[str]:
    """The valid rule names."""
    return sorted(RULES)


def create(name: str, **hparams) -> Rule:
    """Builds the rule ``name`` with hyperparameters ``hparams`` (paper defaults otherwise).

    Raises:
      ValueError: unknown rule name, unknown hyperparameter, or an invalid value.
    """
    if isinstance(name, Rule):
        if hparams:
            return dataclasses.replace(name, **hparams)
        return name
    key = str(name).lower()
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of: {', '.join(names())}")
    cls = RULES[key]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for rule {key!r}; valid: {valid}"
        )
    return cls(**hparams)


__all__ = [
    "AS", "ASAP", "ASFP", "ASFPLC", "BP", "DFA", "FA", "FoA", "HSIC", "KP", "LocalFixed", "PredSim", "RULES", "Rule", "SignSymmetry",
    "WM", "create", "mirror_step", "names",
]
