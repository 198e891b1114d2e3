"""The ASAP/AS table configs follow the authors' SGD (issue 28, item 6), and a block size k
that cannot apply to a model is refused.

The authors' code (``code/train.py``: ``optim.SGD(net.parameters(), momentum=0.9,
weight_decay=5e-4)`` for every method, ``--wt`` included) decays every parameter that gets a
gradient — kernels, biases, BatchNorm scale/shift, ASAP's learned B — but not the detached
stem nor the fixed ``Linear_FA`` feedback, and every ResNet of ``code/resnet.py`` ends in
``BatchNorm1d`` on the logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _as_models import TinyResNet
from flax import traverse_util

import alearn
from alearn.rules._freeze import freeze_and_decay
from experiments.paper import tables
from experiments.configs import asap, wt

SHARING = ("as", "asap", "asfp", "asfp_lc")
LAM = 5e-4


def _table_pairs():
    return [(d, m) for d, ms in wt.PAIRS.items() if d != "mnist5k" for m in ms]


@pytest.mark.parametrize("rule", asap.RULES)
def test_asap_table_configs_decay_like_the_authors_sgd(rule):
    for dataset, model in _table_pairs():
        c = asap.get_config(f"{rule},{model},{dataset}")
        where = f"{rule},{model},{dataset}"
        if rule in SHARING:  # the rule decays (the frozen stem stays put), every parameter
            assert c.weight_decay == 0.0, where
            assert c.rule_hparams.decay == LAM, where
            assert c.rule_hparams.decay_scope == "all", where
        else:  # the base optimizer, on every forward parameter
            assert c.weight_decay == LAM, where
            assert c.weight_decay_mask == "params", where
        if model.startswith("resnet"):
            assert c.model_kwargs.output_bn is True, where
        else:  # the AlexNet has BatchNorm on its logits by default
            assert "output_bn" not in c.model_kwargs, where
            assert alearn.models.create(model, 10).output_bn is True


def test_asap_table_options_restore_the_other_readings():
    c = asap.get_config("asap,resnet18,cifar10,decay=kernels,output_bn=0")
    assert (c.rule_hparams.decay_scope, c.rule_hparams.decay) == ("kernels", LAM)
    assert c.model_kwargs.output_bn is False
    c = asap.get_config("as,resnet34,cifar10,decay=kernels")
    assert (c.rule_hparams.decay_scope, c.rule_hparams.decay) == ("kernels", 0.0)
    c = asap.get_config("as,resnet34,cifar10,wd=5e-3")  # Table 5.4's λ reaches AS too
    assert (c.rule_hparams.decay_scope, c.rule_hparams.decay, c.weight_decay) == ("all", 5e-3,
                                                                                 0.0)
    c = asap.get_config("bp,resnet34,cifar10,decay=kernels")  # other rules unchanged
    assert (c.weight_decay, c.weight_decay_mask) == (LAM, "params")
    for bad, needle in (("decay=some", "authors, kernels"), ("output_bn=2", "1 or 0")):
        with pytest.raises(ValueError, match=needle):
            asap.get_config(f"asap,resnet18,cifar10,{bad}")
    with pytest.raises(ValueError, match="output_bn applies to the ResNets"):
        asap.get_config("asap,alexnet,cifar10,output_bn=1")


@pytest.mark.parametrize("rule", wt.RULES)
def test_wt_table_configs_use_logit_batchnorm_and_decay_every_parameter(rule):
    for dataset, model in _table_pairs():
        c = wt.get_config(f"{rule},{model},{dataset}")
        assert (c.weight_decay, c.weight_decay_mask) == (LAM, "params")
        assert c.model_kwargs.get("output_bn", None) is (True if model.startswith("resnet")
                                                         else None)


def test_reproduce_tables_carry_the_settings():
    runs = {r.name: r.config for r in tables.runs("wt5.2", "paper")}
    c = runs["resnet18_cifar10_asap_s0"]
    assert (c.rule_hparams.decay_scope, c.model_kwargs.output_bn) == ("all", True)
    assert runs["resnet18_cifar10_bp_s0"].model_kwargs.output_bn is True
    c = {r.name: r.config for r in tables.runs("wt_k4", "paper")}[
        "resnet34_cifar10_asapk4_s0"]
    assert (c.rule_hparams.k, c.rule_hparams.decay_scope) == (4, "all")


# --------------------------------------------------------------------- the decay scope
def _tree():
    """A params/feedback tree: a frozen stem, a conv with BN and learned B, a dense FA."""
    params = {"stem": {"kernel": jnp.full((2,), 1.0), "bias": jnp.full((2,), 2.0)},
              "stem_bn": {"scale": jnp.full((2,), 3.0), "bias": jnp.full((2,), 4.0)},
              "conv": {"kernel": jnp.full((2,), 5.0), "bias": jnp.full((2,), 6.0)},
              "bn": {"scale": jnp.full((2,), 7.0), "bias": jnp.full((2,), 8.0)},
              "fc": {"kernel": jnp.full((2,), 9.0), "bias": jnp.full((2,), 10.0)}}
    feedback = {"stem": {"frozen": jnp.zeros((1,))}, "conv": {"B": jnp.full((2,), 11.0)},
                "fc": {"B_fixed": jnp.full((2,), 12.0)}}
    return {"params": params, "feedback": feedback}


@pytest.mark.parametrize("scope", ["kernels", "all"])
def test_decay_scope(scope):
    tv = _tree()
    tx = freeze_and_decay(0.5, scope)
    grads = jax.tree.map(jnp.ones_like, tv)
    out, _ = tx.update(grads, tx.init(tv), tv)
    flat = traverse_util.flatten_dict(out, sep="/")
    val = traverse_util.flatten_dict(tv, sep="/")
    decayed = {"params/conv/kernel", "params/fc/kernel", "feedback/conv/B"}
    if scope == "all":
        decayed |= {"params/stem_bn/scale", "params/stem_bn/bias", "params/conv/bias",
                    "params/bn/scale", "params/bn/bias", "params/fc/bias"}
    for path, v in flat.items():
        if path.startswith(("params/stem/", "feedback/stem/")):
            want = 0.0  # the frozen first layer: no update, no decay
        elif path in decayed:
            want = 1.0 + 0.5 * float(val[path][0])
        else:
            want = 1.0  # B_fixed, and biases/BN under "kernels"
        np.testing.assert_allclose(np.asarray(v), want, err_msg=f"{scope}: {path}")


@pytest.mark.parametrize("name", ["as", "asap"])
def test_rule_transform_decays_every_trained_parameter_of_a_batchnorm_resnet(name):
    """End to end on alearn's ResNet (BN everywhere, logit BN): with ``decay_scope="all"``
    the transform adds λ·value to every update but the frozen stem conv's."""
    model = alearn.models.create("resnet18", 10, width_multiplier=0.0625, output_bn=True)
    rule = alearn.rules.create(name, decay=0.1, decay_scope="all")
    v = alearn.init(model, rule, jax.random.key(0), jnp.zeros((2, 8, 8, 3)))
    assert "bn_out" in v["params"]
    tv = alearn.trainable(rule, v)
    tx = rule.transform()
    out, _ = tx.update(jax.tree.map(jnp.zeros_like, tv), tx.init(tv), tv)
    flat, val = traverse_util.flatten_dict(out), traverse_util.flatten_dict(tv)
    frozen = {p[0] for p in traverse_util.flatten_dict(v["feedback"]) if p[-1] == "frozen"}
    assert frozen == {"stem_conv"}
    for path, upd in flat.items():
        want = 0.0 if path[1] in frozen or path[-1] in ("frozen", "B_fixed") else 0.1
        np.testing.assert_allclose(upd, want * val[path], rtol=1e-6, err_msg=str(path))
    assert any(p[-1] == "scale" for p in flat)
    assert any(p[-1] == "B" for p in flat) is (name == "asap")  # AS has no B


# ---------------------------------------------------------------- k that cannot apply
def _trace(model, rule, shape):
    return jax.eval_shape(lambda: alearn.init(model, rule, jax.random.key(0), jnp.zeros(shape)))


@pytest.mark.parametrize("name", ["asap", "as", "asfp_lc"])
@pytest.mark.parametrize("k", [3, 4])
def test_k_above_the_alexnet_groups_is_refused(name, k):
    """The AlexNet's only sharing group is conv1 + conv2 (conv0 frozen, FC layers by FA):
    k = 3 or 4 would train exactly as k = 2."""
    model = alearn.models.create("alexnet", 10, width_multiplier=0.0625)
    with pytest.raises(ValueError, match=rf"rule '{name}': k={k} cannot apply to AlexNet .*"
                                         r"exactly as k=2; valid: k from 1 to 2"):
        _trace(model, alearn.rules.create(name, k=k), (2, 28, 28, 1))


def test_k_that_applies_passes_and_k_on_residual_nets_is_bounded_by_the_blocks():
    alex = alearn.models.create("alexnet", 10, width_multiplier=0.0625)
    for k in (1, 2):
        _trace(alex, alearn.rules.create("asap", k=k), (2, 28, 28, 1))
    net = TinyResNet()  # 3 blocks: a new shared activation every k/2 blocks, k/2 <= 3
    for k in (2, 4, 6):
        _trace(net, alearn.rules.create("asap", k=k), (2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"k=8 cannot apply to TinyResNet .*exactly as k=6; "
                                         r"valid: even k from 2 to 6"):
        _trace(net, alearn.rules.create("asap", k=8), (2, 8, 8, 3))


def test_k_on_a_model_without_sharing_layers_is_refused_unless_default():
    mlp = alearn.models.create("mlp", 3, widths=(8, 8, 8, 8))  # dense="fa": nothing shares
    _trace(mlp, alearn.rules.create("asap"), (2, 5))  # the default k=2 is accepted
    with pytest.raises(ValueError, match=r"k=4 cannot apply to MLP .*k has no effect; valid: "
                                         r"none: no layer forms its update"):
        _trace(mlp, alearn.rules.create("asap", k=4), (2, 5))
    # dense layers sharing: layers 1-4 form one group of 4 (layer 0 frozen)
    _trace(mlp, alearn.rules.create("asap", k=4, dense="shared"), (2, 5))
    with pytest.raises(ValueError, match="k=5 cannot apply to MLP .*valid: k from 1 to 4"):
        _trace(mlp, alearn.rules.create("asap", k=5, dense="shared"), (2, 5))


def test_training_from_a_config_with_an_inapplicable_k_fails_at_init():
    """The trainer's own set-up (what experiments.train runs) refuses it before a step."""
    from alearn.train import setup
    c = asap.get_config("asap,alexnet,mnist,k=4,width=0.0625")
    model, rule = setup.create_model_and_rule(c, 10)
    with pytest.raises(ValueError, match="k=4 cannot apply to AlexNet"):
        _trace(model, rule, (2, 28, 28, 1))


def test_memory_table_marks_k_that_cannot_apply(tmp_path):
    """Fig. 6.1's runner (reproduce kind ``memory``) and its report: ASAP k=4 on the AlexNet
    (which groups as k=2) is 'not applicable', and the claim is checked on the rest."""
    import json

    from experiments.paper import _report_sections, _reproduce_kinds
    run = tables.Run("access", "model", "rule", kind="memory",
                     options={"models": ["alexnet"], "batch": 2, "input_shape": [28, 28, 1],
                              "compiled_models": [], "compiled_batch": 2})
    rundir = tmp_path / "wt6.1" / "access"
    rundir.mkdir(parents=True)
    _reproduce_kinds.memory(run, str(rundir))
    res = json.loads((rundir / "results.json").read_text())["models"]["alexnet"]
    assert "k=4 cannot apply to AlexNet" in res["ASAP k=4"]["not_applicable"]
    assert res["ASAP k=2"]["saved_activations"] < res["BP"]["saved_activations"]
    text = "\n".join(_report_sections.memory("wt6.1", str(tmp_path), [run]))
    assert "| alexnet | ASAP k=4 | 6,283,732 | not applicable |" in text
    assert "BP > ASAP k=2 — agrees" in text and "ASAP k=4 cannot apply to it" in text


def test_wrapped_models_refuse_an_inapplicable_k_too():
    """alearn.wrap / wrap_nnx end a trace without tape.finish for rules not driven by the
    output; the check runs there too (Tape.close), naming the user's model."""
    import flax.linen as nn
    from flax import nnx

    class Net(nn.Module):  # conv0 (frozen) | conv1 conv2 | dense (FA)
        @nn.compact
        def __call__(self, x):
            for f in (4, 8, 8):
                x = nn.relu(nn.Conv(f, (3, 3))(x))
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    with pytest.raises(ValueError, match="k=4 cannot apply to Net .*valid: k from 1 to 2"):
        _trace(alearn.wrap(Net()), alearn.rules.create("asap", k=4), (2, 8, 8, 1))
    _trace(alearn.wrap(Net()), alearn.rules.create("asap", k=2), (2, 8, 8, 1))

    class NNet(nnx.Module):
        def __init__(self, rngs):
            self.c0 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
            self.c1 = nnx.Conv(4, 8, (3, 3), rngs=rngs)
            self.c2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
            self.d = nnx.Linear(8 * 64, 3, rngs=rngs)

        def __call__(self, x):
            for c in (self.c0, self.c1, self.c2):
                x = nnx.relu(c(x))
            return self.d(x.reshape(x.shape[0], -1))

    x = jnp.zeros((2, 8, 8, 1))
    wrapped = alearn.wrap_nnx(NNet(nnx.Rngs(0)), alearn.rules.create("asap", k=3), x,
                              jax.random.key(1))
    with pytest.raises(ValueError, match="k=3 cannot apply to NNet"):
        wrapped(x)
