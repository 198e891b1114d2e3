"""KP's one-pass SGD (alearn/train/kp_sgd.py) against the separate form and a NumPy KP."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

import alearn
from alearn import train
from alearn.rules import create
from alearn.train.kp_sgd import KPSGDState, kp_sgd
from alearn.train.optim import create_optimizer, create_rule_optimizer, create_schedule

SHAPES = {"Dense_0": (6, 5), "Conv_0": (3, 3, 2, 4)}  # a dense and a conv kernel


def _tree(seed=0):
    """A trainable tree {"params", "feedback"} with independent W_0 and B_0."""
    rng = np.random.default_rng(seed)
    params = {k: {"kernel": rng.normal(size=s).astype(np.float32),
                  "bias": rng.normal(size=s[-1:]).astype(np.float32)} for k, s in SHAPES.items()}
    feedback = {k: {"B": rng.normal(size=s).astype(np.float32)} for k, s in SHAPES.items()}
    return {"params": params, "feedback": feedback}


def _grads(steps, seed=1):
    """Per step, what KP emits: a kernel gradient g, the same g for B, a bias gradient."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        g = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
        out.append({"params": {k: {"kernel": g[k], "bias": rng.normal(size=s[-1:]).astype(
            np.float32)} for k, s in SHAPES.items()},
            "feedback": {k: {"B": g[k]} for k in SHAPES}})
    return out


def _run(tx, tree, grads):
    @jax.jit
    def step(tv, state, g):
        u, state = tx.update(g, state, tv)
        return optax.apply_updates(tv, u), state

    tv, state = jax.tree.map(jnp.asarray, tree), tx.init(tree)
    for g in grads:
        tv, state = step(tv, state, g)
    return tv, state


def _assert_close(a, b, rtol=2e-5, atol=2e-5):
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(np.asarray(fa[k]), np.asarray(fb[k]), rtol=rtol, atol=atol,
                                   err_msg="/".join(k))


STEPS = 150
# (rule hparams, optimizer kwargs): every decay placement the trainer accepts, momentum 0,
# heavy ball and Nesterov, constant, cosine and step schedules.
CASES = [
    ({"weight_decay": 0.02, "decay_kernel": False},
     dict(momentum=0.9, weight_decay=0.02, weight_decay_mask="params", schedule="cosine")),
    ({"weight_decay": 0.02, "decay_kernel": False},
     dict(momentum=0.9, nesterov=True, weight_decay=0.02, weight_decay_mask="kernels",
          schedule="step")),
    ({"weight_decay": 0.0, "decay_kernel": False},
     dict(momentum=0.5, weight_decay=0.03, weight_decay_mask="all", schedule="constant")),
    ({"weight_decay": 0.05, "decay_kernel": True},
     dict(momentum=0.0, weight_decay=0.0, schedule="step")),
    ({"weight_decay": 0.0, "decay_kernel": False},
     dict(momentum=0.9, weight_decay=0.0, schedule="constant")),
]


def _schedule(name):
    return create_schedule(name, 0.05, steps_per_epoch=10, epochs=STEPS // 10,
                           decay_epochs=(5, 10), decay_factor=(0.5, 0.2))


def _separate(rule, kw):
    kw = dict(kw)
    sched = kw.pop("schedule")
    return create_rule_optimizer(rule, create_optimizer(
        "sgd", 0.05, schedule=sched, steps_per_epoch=10, epochs=STEPS // 10,
        decay_epochs=(5, 10), decay_factor=(0.5, 0.2), **kw))


def _fused(rule, kw):
    kw = dict(kw)
    return kp_sgd(rule, _schedule(kw.pop("schedule")), **kw)


@pytest.mark.parametrize("hparams, kw", CASES)
def test_fused_equals_separate_form_over_many_steps(hparams, kw):
    rule = create("kp", **hparams)
    tree, grads = _tree(), _grads(STEPS)
    want, _ = _run(_separate(rule, kw), tree, grads)
    got, state = _run(_fused(rule, kw), tree, grads)
    assert isinstance(state, KPSGDState)
    paths = [jax.tree_util.keystr(p)
             for p, _ in jax.tree_util.tree_leaves_with_path(state.base)]
    assert paths and not any("feedback" in p for p in paths)  # no momentum buffer for B
    _assert_close(got, want)
    # the comparison has teeth: where anything decays, W − B has shrunk visibly
    lam = kw["weight_decay"] + (hparams["weight_decay"] if hparams["decay_kernel"] else 0.0)
    for k in SHAPES:
        d0 = np.linalg.norm(tree["params"][k]["kernel"] - tree["feedback"][k]["B"])
        d = np.linalg.norm(np.asarray(got["params"][k]["kernel"] - got["feedback"][k]["B"]))
        assert (d < 0.9 * d0) if lam else np.isclose(d, d0, rtol=1e-4), (k, d, d0)


def _numpy_kp(tree, grads, lr, lam_w, lam_b, mu, nesterov):
    """KP by hand in float64: W and B each with their own momentum and decay (eq. 2.7)."""
    t = jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
    m = {k: {"W": 0.0, "B": 0.0, "b": 0.0} for k in SHAPES}
    for step, g in enumerate(grads):
        eta = lr(step)
        for k in SHAPES:
            p, fb, gk = t["params"][k], t["feedback"][k], g["params"][k]
            for name, x, grad in (("W", p["kernel"], gk["kernel"] + lam_w * p["kernel"]),
                                  ("B", fb["B"], g["feedback"][k]["B"] + lam_b * fb["B"]),
                                  ("b", p["bias"], gk["bias"] + lam_w * p["bias"])):
                m[k][name] = grad + mu * m[k][name]
                x -= eta * ((grad + mu * m[k][name]) if nesterov else m[k][name])
    return t


@pytest.mark.parametrize("mu, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_fused_matches_numpy_kolen_pollack(mu, nesterov):
    rule = create("kp", weight_decay=0.01, decay_kernel=False)
    tree, grads = _tree(3), _grads(STEPS, 4)
    sched = _schedule("cosine")
    got, _ = _run(kp_sgd(rule, sched, momentum=mu, nesterov=nesterov, weight_decay=0.01), tree,
                  grads)
    want = _numpy_kp(tree, grads, lambda s: float(sched(s)), 0.01, 0.01, mu, nesterov)
    _assert_close(got, want, rtol=5e-5, atol=5e-5)


def test_fused_difference_decays_as_one_minus_eta_lambda_to_the_t():
    """Kolen–Pollack theorem (Sec. 4.2.1): plain SGD, W − B = (1 − ηλ)^t (W_0 − B_0)."""
    rule = create("kp", weight_decay=0.1, decay_kernel=True)
    tree, grads = _tree(5), _grads(20, 6)
    got, _ = _run(kp_sgd(rule, 0.5), tree, grads)
    for k in SHAPES:
        np.testing.assert_allclose(
            np.asarray(got["params"][k]["kernel"] - got["feedback"][k]["B"]),
            (1 - 0.05) ** 20 * (tree["params"][k]["kernel"] - tree["feedback"][k]["B"]),
            rtol=1e-4, atol=1e-5)


def _trainer_run(rule, config, steps=4, kp_fused=None):
    model = alearn.models.create("mlp", 10, widths=(16,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    opt = train.optimizer_from_config(config, rule, steps_per_epoch=2, kp_fused=kp_fused)
    mesh = train.data_mesh()
    state = train.replicate(train.create_train_state(model, rule, opt, jax.random.key(0), x),
                            mesh)
    step = train.make_train_step(model, rule, opt, mesh=mesh)
    for t in range(steps):
        state, _ = step(state, train.shard_batch({"image": x + t, "label": y}, mesh))
    return state


def test_trainer_uses_fused_form_for_sgd_and_equals_separate_form():
    config = {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True,
              "weight_decay": 0.05, "schedule": "cosine", "epochs": 2}
    fused = _trainer_run(create("kp", weight_decay=0.05), config)
    separate = _trainer_run(create("kp", weight_decay=0.05), config, kp_fused=False)
    assert isinstance(fused.opt_state, KPSGDState)
    assert not isinstance(separate.opt_state, KPSGDState)
    _assert_close(fused.trainable, separate.trainable, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config, hparams", [
    ({"optimizer": "adam", "learning_rate": 1e-3}, {"weight_decay": 0.0}),  # not linear
    ({"optimizer": "sgd", "weight_decay_mask": "conv_kernels"}, {"weight_decay": 0.0}),
])
def test_trainer_keeps_separate_form_where_fusion_is_not_exact(config, hparams):
    rule = create("kp", **hparams)
    opt = train.optimizer_from_config(config, rule, steps_per_epoch=1)
    state = opt.init(alearn.trainable(rule, {"params": _tree()["params"],
                                             "feedback": _tree()["feedback"]}))
    assert not isinstance(state, KPSGDState)


@pytest.mark.parametrize("rule, kw, needle", [
    (create("fa"), {}, "rule 'fa' is not 'kp'"),
    (create("kp"), {"weight_decay": 0.0}, "W decays by 0 per step but B by 0.0005"),
    (create("kp", weight_decay=0.0), {"weight_decay": 1e-3, "weight_decay_mask": "conv_kernels"},
     "weight_decay_mask='conv_kernels' decays kernels unevenly"),
])
def test_kp_sgd_rejects_what_it_cannot_fuse(rule, kw, needle):
    with pytest.raises(ValueError, match="kp_sgd cannot fuse") as err:
        kp_sgd(rule, 0.1, **kw)
    assert needle in str(err.value)


def test_kp_sgd_init_names_feedback_without_kernel():
    tree = _tree()
    tree["feedback"]["Dense_9"] = {"B": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match="feedback leaf Dense_9/B has no kernel of shape"):
        kp_sgd(create("kp", weight_decay=0.0), 0.1).init(tree)


def test_env_switch_selects_the_form(monkeypatch):
    config, rule = {"optimizer": "sgd", "weight_decay": 5e-4}, create("kp")
    trainable = alearn.trainable(rule, _tree())
    monkeypatch.setenv("ALEARN_KP_FUSED", "0")
    assert not isinstance(train.optimizer_from_config(config, rule, 1).init(trainable),
                          KPSGDState)
    assert isinstance(train.optimizer_from_config(config, rule, 1, kp_fused=True).init(
        trainable), KPSGDState)
    monkeypatch.setenv("ALEARN_KP_FUSED", "yes")
    with pytest.raises(ValueError, match="ALEARN_KP_FUSED='yes'; choose 1"):
        train.optimizer_from_config(config, rule, 1)
