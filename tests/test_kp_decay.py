"""KP's weight decay against the optimizer (issue 28, item 5): W − B must shrink by exactly
(1 − ηλ) per step wherever the trainer or ``create_rule_optimizer`` accepts a setting, and
every other setting is refused naming a fix that works.

KP gives W and B the same update (eq. 2.7), so with a gradient signal g shared by a kernel
and its B, ``D = W − B`` only feels the decays: ``D_t = (1 − ηλ)^t D_0`` for plain SGD and
for AdamW's decoupled decay (Adam's rescaling of g is the same for W and B).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alearn.rules import create
from alearn.rules.kp import decay_fixes, decay_problem
from alearn.train.kp_sgd import KPSGDState, kp_sgd
from alearn.train.optim import (check_rule_weight_decay, create_optimizer,
                                create_rule_optimizer, optimizer_from_config)

LR, LAM, STEPS = 0.1, 0.05, 6


def _tree(seed=0, head="kernel"):
    """A dense pair, a conv pair (what ``conv_kernels`` tells apart) and a head whose weight
    is ``head`` (``embedding``: a tied head, which the ``kernels`` mask does not decay)."""
    r = np.random.default_rng(seed)
    n = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    params = {"Dense_0": {"kernel": n(6, 4), "bias": n(4)},
              "Conv_0": {"kernel": n(3, 3, 2, 4), "bias": n(4)},
              "Head": {head: n(4, 5)}}
    feedback = {"Dense_0": {"B": n(6, 4)}, "Conv_0": {"B": n(3, 3, 2, 4)}, "Head": {"B": n(4, 5)}}
    return {"params": params, "feedback": feedback}


def _grads(tree, steps, seed=1):
    """KP's gradients: any signal for the params, B's equal to its kernel's."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        g = jax.tree.map(lambda a: jnp.asarray(r.normal(size=a.shape), jnp.float32),
                         tree["params"])
        out.append({"params": g, "feedback": {k: {"B": g[k][next(iter(
            n for n in ("kernel", "embedding") if n in g[k]))]} for k in tree["feedback"]}})
    return out


def _gaps(tree):
    p, b = tree["params"], tree["feedback"]
    return {k: np.asarray(p[k].get("kernel", p[k].get("embedding")) - b[k]["B"], np.float64)
            for k in b}


def _train(tx, tree, steps=STEPS):
    state = tx.init(tree)
    for g in _grads(tree, steps):
        u, state = tx.update(g, state, tree)
        tree = optax.apply_updates(tree, u)
    return tree, state


def _assert_shrinks(tree0, tree, factor):
    for k, d0 in _gaps(tree0).items():
        np.testing.assert_allclose(_gaps(tree)[k], factor * d0, rtol=2e-5, atol=2e-6,
                                   err_msg=k)


def _config(optimizer, weight_decay, mask, momentum=0.0):
    return {"optimizer": optimizer, "learning_rate": LR, "momentum": momentum,
            "weight_decay": weight_decay, "weight_decay_mask": mask, "epochs": 1}


# (optimizer, base λ, mask, rule hparams): every pairing the trainer accepts, λ > 0.
ACCEPTED = [
    ("sgd", LAM, "params", {"weight_decay": LAM}),  # the papers' SGD: base W, KP B
    ("sgd", LAM, "kernels", {"weight_decay": LAM}),
    ("sgd", LAM, "all", {"weight_decay": 0.0}),  # the authors' torch SGD: W and B alike
    ("sgd", 0.0, "params", {"weight_decay": LAM, "decay_kernel": True}),  # KP decays both
    ("adamw", LAM, "all", {"weight_decay": 0.0}),  # decoupled on W and B alike
]


@pytest.mark.parametrize("optimizer, wd, mask, hparams", ACCEPTED)
@pytest.mark.parametrize("kp_fused", [True, False])
def test_accepted_settings_shrink_w_minus_b_by_one_minus_eta_lambda_per_step(
        optimizer, wd, mask, hparams, kp_fused):
    rule, tree = create("kp", **hparams), _tree()
    tx = optimizer_from_config(_config(optimizer, wd, mask), rule, 1, kp_fused=kp_fused)
    out, state = _train(tx, tree)
    assert isinstance(state, KPSGDState) == (kp_fused and optimizer == "sgd")
    _assert_shrinks(tree, out, (1 - LR * LAM) ** STEPS)


def test_accepted_with_momentum_follows_the_linear_recurrence():
    """SGD momentum μ: m_D' = λD + μ m_D, D' = D − η m_D' (``kp_sgd``'s scalars), exactly."""
    mu = 0.9
    rule, tree = create("kp", weight_decay=LAM), _tree()
    a, c = 1.0, 0.0
    for _ in range(STEPS):
        c = LAM * a + mu * c
        a -= LR * c
    for fused in (True, False):
        out, _ = _train(optimizer_from_config(_config("sgd", LAM, "params", mu), rule, 1,
                                              kp_fused=fused), tree)
        _assert_shrinks(tree, out, a)


def test_raw_create_rule_optimizer_accepts_even_pairings_of_any_optax_chain():
    tree = _tree()
    for rule, base in (
            (create("kp", weight_decay=LAM, decay_kernel=True), optax.sgd(LR)),
            (create("kp", weight_decay=LAM), create_optimizer("sgd", LR, weight_decay=LAM)),
            (create("kp", weight_decay=0.0), optax.adamw(LR, weight_decay=LAM)),  # every leaf
            (create("kp", weight_decay=0.0), create_optimizer(
                "adamw", LR, weight_decay=LAM, weight_decay_mask="all"))):
        out, _ = _train(create_rule_optimizer(rule, base), tree)
        _assert_shrinks(tree, out, (1 - LR * LAM) ** STEPS)


# (optimizer, base λ, mask, rule hparams, words of the problem, a flag of the first fix)
REJECTED = [
    ("sgd", LAM, "conv_kernels", {"weight_decay": LAM},
     "W of dense layers (weight_decay_mask='conv_kernels'", "--config.weight_decay_mask=kernels"),
    ("sgd", LAM, "conv_kernels", {"weight_decay": 0.0},
     "W of conv layers", "--config.weight_decay_mask=kernels"),
    ("adamw", LAM, "params", {"weight_decay": LAM},
     "optimizer 'adamw' rescales per weight", "--config.weight_decay_mask=all"),
    ("adamw", LAM, "params", {"weight_decay": 0.0},
     "W decays with λ=0.05 but B with λ=0 (decoupled, AdamW)", "--config.weight_decay_mask=all"),
    ("adam", 0.0, "params", {"weight_decay": LAM, "decay_kernel": True},
     "optimizer 'adam' rescales per weight", "--config.optimizer=adamw"),
    ("adam", LAM, "all", {"weight_decay": 0.0},
     "weight_decay=0.05 as L2", "--config.optimizer=adamw"),
    ("sgd", LAM, "params", {"weight_decay": LAM, "decay_kernel": True},
     "decay W twice", "--config.rule_hparams.decay_kernel=False"),
    ("sgd", LAM, "all", {"weight_decay": LAM}, "decay B twice",
     "--config.weight_decay_mask=params"),
    ("sgd", LAM, "params", {"weight_decay": 0.0},
     "W decays with λ=0.05 but B with λ=0", "--config.rule_hparams.weight_decay=0.05"),
]


def _apply(fix: str, optimizer, wd, mask, hparams):
    """The setting after the ``--config.k=v`` flags of ``fix``."""
    setting = {"optimizer": optimizer, "weight_decay": wd, "weight_decay_mask": mask,
               "rule_hparams": dict(hparams)}
    for key, value in re.findall(r"--config\.(\S+?)=(\S+)", fix):
        value = {"True": True, "False": False}.get(value, value)
        if key.startswith("rule_hparams."):
            setting["rule_hparams"][key.split(".", 1)[1]] = (
                value if isinstance(value, bool) else float(value))
        else:
            setting[key] = float(value) if key == "weight_decay" else value
    return setting


@pytest.mark.parametrize("optimizer, wd, mask, hparams, problem, first_fix", REJECTED)
def test_uneven_settings_are_refused_and_every_named_fix_shrinks_exactly(
        optimizer, wd, mask, hparams, problem, first_fix):
    with pytest.raises(ValueError) as err:
        check_rule_weight_decay(create("kp", **hparams), wd, mask, optimizer)
    msg = str(err.value)
    assert problem in msg and "Fix: " + first_fix in msg, msg
    fixes = msg.split("Fix: ", 1)[1].split("; or ")
    assert 1 <= len(fixes) <= 2
    for fix in fixes:  # each fix is accepted and then does what KP needs
        s = _apply(fix, optimizer, wd, mask, hparams)
        rule = create("kp", **s["rule_hparams"])
        check_rule_weight_decay(rule, s["weight_decay"], s["weight_decay_mask"], s["optimizer"])
        lam = max(s["weight_decay"], s["rule_hparams"].get("weight_decay", 5e-4))
        tree = _tree()
        out, _ = _train(optimizer_from_config(_config(s["optimizer"], s["weight_decay"],
                                                      s["weight_decay_mask"]), rule, 1), tree)
        _assert_shrinks(tree, out, (1 - LR * lam) ** STEPS)


@pytest.mark.parametrize("rule, base, needle", [
    # the raw-API case: KP decays W and the base optimizer decays it again
    (create("kp", weight_decay=LAM, decay_kernel=True),
     create_optimizer("sgd", LR, weight_decay=LAM), "shrinks W by a factor 1 − 0.01 but B by "
                                                    "1 − 0.005"),
    (create("kp", weight_decay=LAM), create_optimizer(
        "sgd", LR, weight_decay=LAM, weight_decay_mask="conv_kernels"), "at Dense_0/kernel"),
    (create("kp", weight_decay=LAM), optax.sgd(LR, momentum=0.9), "1 − 0 but B by 1 − 0.005"),
    (create("kp", weight_decay=LAM), optax.adamw(LR, weight_decay=LAM), "rescales the decay of B"),
    (create("kp", weight_decay=LAM, decay_kernel=True), optax.adam(LR), "rescales the decay of W"),
])
def test_raw_create_rule_optimizer_refuses_uneven_decay_at_init(rule, base, needle):
    tx = create_rule_optimizer(rule, base)
    with pytest.raises(ValueError) as err:
        tx.init(_tree())
    assert needle in str(err.value) and "create('kp', decay_kernel=" in str(err.value)


def test_raw_check_is_skipped_under_tracing_and_keeps_the_chain_state():
    rule, base = create("kp", weight_decay=LAM), create_optimizer("sgd", LR, weight_decay=LAM)
    tree = _tree()
    got = create_rule_optimizer(rule, base).init(tree)
    want = optax.chain(rule.transform(), base).init(tree)
    assert jax.tree.structure(got) == jax.tree.structure(want)  # checkpoints unchanged
    bad = create_rule_optimizer(create("kp", weight_decay=LAM, decay_kernel=True), base)
    jax.eval_shape(bad.init, tree)  # abstract init (checkpoint restore) is not probed


def test_a_tied_head_under_the_kernels_mask_is_refused_by_both_sgd_forms():
    """``kernels`` decays leaves named kernel; a tied head's W is its ``embedding``."""
    rule, tree = create("kp", weight_decay=LAM), _tree(head="embedding")
    with pytest.raises(ValueError, match="at Head/embedding"):
        create_rule_optimizer(rule, create_optimizer(
            "sgd", LR, weight_decay=LAM, weight_decay_mask="kernels")).init(tree)
    with pytest.raises(ValueError, match="does not decay Head/embedding"):
        kp_sgd(rule, LR, weight_decay=LAM, weight_decay_mask="kernels").init(tree)
    out, _ = _train(kp_sgd(rule, LR, weight_decay=LAM, weight_decay_mask="params"), tree)
    _assert_shrinks(tree, out, (1 - LR * LAM) ** STEPS)


def test_every_setting_is_either_exact_or_refused_with_working_fixes():
    """The decay model over the grid (optimizer x base λ x mask x rule λ x decay_kernel)."""
    import itertools
    for opt, wd, mask, lam, dk in itertools.product(
            ("sgd", "adam", "adamw"), (0.0, LAM), ("params", "kernels", "conv_kernels", "all"),
            (0.0, LAM), (False, True)):
        s = {"optimizer": opt, "weight_decay": wd, "weight_decay_mask": mask,
             "rule_hparams.weight_decay": lam, "rule_hparams.decay_kernel": dk}
        if decay_problem(s) is None:
            continue
        fixes = decay_fixes(s)
        assert fixes, s
        for fix in fixes:
            assert decay_problem({**s, **fix}) is None, (s, fix)
