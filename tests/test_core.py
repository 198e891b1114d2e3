"""Oracles for the core machinery: linear operators, rule_linear, Tape, rule registry."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn
from alearn._layers import Conv, ConvOp, Dense, DenseOp, Tape
from alearn.rules.base import Rule


@pytest.mark.parametrize(
    "op,x_shape",
    [
        (DenseOp(in_shape=(5, 7), kernel_shape=(7, 3)), (5, 7)),
        (DenseOp(in_shape=(2, 4, 7), kernel_shape=(7, 3)), (2, 4, 7)),
        (ConvOp(in_shape=(2, 9, 9, 3), kernel_shape=(3, 3, 3, 4)), (2, 9, 9, 3)),
        (ConvOp(in_shape=(2, 9, 9, 3), kernel_shape=(3, 3, 3, 4), strides=(2, 2),
                padding=((1, 1), (1, 1))), (2, 9, 9, 3)),
        (ConvOp(in_shape=(2, 8, 8, 3), kernel_shape=(5, 5, 3, 2), strides=(2, 2),
                padding="VALID"), (2, 8, 8, 3)),
    ],
)
def test_op_transposes_equal_vjp(op, x_shape):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, op.kernel_shape)
    y, vjp = jax.vjp(op.apply, x, w)
    assert y.shape == op.out_shape
    g = jax.random.normal(kg, y.shape)
    dx, dw = vjp(g)
    np.testing.assert_allclose(op.input_grad(g, w), dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(op.weight_grad(x, g), dw, rtol=1e-5, atol=1e-5)


class _Net(nn.Module):
    """Conv (strided, padded) -> relu -> Dense, through the rule-pluggable layers."""

    plain: bool = False

    @nn.compact
    def __call__(self, x, *, rule=alearn.rules.BP(), train=False):
        del train
        if self.plain:
            h = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), padding=1, name="Conv_0")(x))
            return nn.Dense(10, name="Dense_0")(h.reshape(h.shape[0], -1))
        tape = Tape(rule, x.shape[0], 10)
        h = nn.relu(Conv(4, (3, 3), strides=(2, 2), padding=1)(x, tape))
        return tape.finish(Dense(10)(h.reshape(h.shape[0], -1), tape))


def _batch():
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 2))
    return x, jnp.arange(6) % 10


def test_bp_equals_jax_grad_of_plain_model():
    x, y = _batch()
    rule = alearn.rules.create("bp")
    variables = alearn.init(_Net(), rule, jax.random.key(0), x)
    assert set(variables) == {"params"}
    ours = alearn.rule_updates(_Net(), rule, variables, x, y)["params"]
    ref = jax.grad(lambda p: alearn.cross_entropy(_Net(plain=True).apply({"params": p}, x), y))(
        variables["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, ref)


@dataclasses.dataclass(frozen=True)
class _FixedFeedback(Rule):
    """A test-local rule with a random feedback matrix (FA-like), to exercise the hooks."""

    name = "test_fb"
    feedback_names = ("B",)

    def init_feedback(self, name, key, op, num_classes):
        return jax.random.normal(key, op.kernel_shape)

    def residuals(self, op, x, kernel, feedback, ctx):
        return x, feedback["B"]

    def backward(self, op, res, g, carrier_g):
        x, b = res
        return op.input_grad(g, b), op.weight_grad(x, g), {"B": jnp.zeros_like(b)}


def test_feedback_collection_is_independent_and_used():
    x, y = _batch()
    rule = _FixedFeedback()
    variables = alearn.init(_Net(), rule, jax.random.key(0), x)
    fb, params = variables["feedback"], variables["params"]
    for layer in ("Conv_0", "Dense_0"):
        assert fb[layer]["B"].shape == params[layer]["kernel"].shape
        assert not np.allclose(fb[layer]["B"], params[layer]["kernel"])
    # Setting B := W must recover BP exactly; a random B must not.
    same = {**variables, "feedback": jax.tree.map(
        lambda p: {"B": p["kernel"]}, params, is_leaf=lambda t: "kernel" in t)}
    bp = alearn.rule_updates(_Net(), alearn.rules.BP(), {"params": params}, x, y)["params"]
    fa_same = alearn.rule_updates(_Net(), rule, same, x, y)["params"]
    fa_rand = alearn.rule_updates(_Net(), rule, variables, x, y)["params"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), fa_same, bp)
    # The last layer's update does not depend on feedback; the first layer's does.
    np.testing.assert_allclose(fa_rand["Dense_0"]["kernel"], bp["Dense_0"]["kernel"], rtol=1e-5)
    assert not np.allclose(fa_rand["Conv_0"]["kernel"], bp["Conv_0"]["kernel"], atol=1e-4)


def test_step_compiles_once():
    x, y = _batch()
    rule = alearn.rules.BP()
    variables = alearn.init(_Net(), rule, jax.random.key(0), x)
    step = jax.jit(lambda v, x, y: alearn.rule_updates(_Net(), rule, v, x, y))
    step(variables, x, y)
    step(variables, x + 1.0, y)
    assert step._cache_size() == 1


def test_layer_without_tape_fails_clearly():
    with pytest.raises(TypeError, match="Tape"):
        Dense(3).init(jax.random.key(0), jnp.ones((2, 4)), None)


def test_carrier_shape_mismatch_fails_clearly():
    @dataclasses.dataclass(frozen=True)
    class _Carrier(Rule):
        name = "test_carrier"
        needs_carrier = True

    tape = Tape(_Carrier(), 4, 10)
    with pytest.raises(ValueError, match="carrier"):
        tape.finish(jnp.zeros((4, 3)))


def test_rule_registry_errors_name_valid_choices():
    with pytest.raises(ValueError, match="unknown rule 'nope'; choose one of: .*bp"):
        alearn.rules.create("nope")
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of: .*mlp"):
        alearn.models.create("nope", 10)


def test_unknown_hyperparameter_fails_naming_it():
    with pytest.raises(ValueError, match="unknown hyperparameter.*'?lr'?.*bp"):
        alearn.rules.create("bp", lr=0.1)


@pytest.mark.parametrize("shape,in_axis,out_axis", [((3, 3, 16, 32), -2, -1), ((64, 10), -2, -1),
                                                     ((10, 300), 0, 1)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_avg"])
@pytest.mark.parametrize("dist", ["truncated_normal", "uniform"])
def test_flat_variance_scaling_matches_jax(shape, in_axis, out_axis, mode, dist):
    from alearn._layers import initializers

    ours = initializers.variance_scaling(2.0, mode, dist, in_axis, out_axis)(
        jax.random.key(0), shape)
    ref = jax.nn.initializers.variance_scaling(2.0, mode, dist, in_axis=in_axis,
                                               out_axis=out_axis)(jax.random.key(1), shape)
    assert ours.shape == ref.shape
    # Same distribution: std within sampling error, same bounds.
    np.testing.assert_allclose(np.std(ours), np.std(ref), rtol=0.08)
    assert np.abs(ours).max() <= np.abs(ref).max() * 1.1 + 1e-6
    assert abs(float(np.mean(ours))) < 0.1 * float(np.std(ref))
