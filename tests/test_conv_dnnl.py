"""oneDNN's convolutions as XLA custom calls (alearn._native, the conv form "dnnl").

The forms' exactness against XLA's convolution and its VJP is in tests/test_conv_impl.py
(parametrised with "dnnl"); here: that the library builds where it is a dependency, the
shapes the papers' nets use, vmap, a whole training step, and the refusals.
"""

import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alearn import _native
from alearn._layers import ConvOp, conv_autotune, conv_impl

ON_DEPENDENCY_PLATFORM = sys.platform.startswith("linux") and platform.machine() == "x86_64"


def _rand(key, shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _ref(x, w, strides, pads):
    return jax.lax.conv_general_dilated(x, w, strides, pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_builds_where_it_is_a_dependency():
    """On Linux x86-64 oneDNN is installed with alearn: the form must load, not skip."""
    if not ON_DEPENDENCY_PLATFORM:
        pytest.skip("oneDNN is a dependency on Linux x86-64 only")
    assert _native.available(), _native.why_unavailable()
    assert _native.dnnl_version().startswith("3.")


needs_dnnl = pytest.mark.skipif(not (ON_DEPENDENCY_PLATFORM or _native.available()),
                                reason="oneDNN is a dependency on Linux x86-64 only")


@needs_dnnl
@pytest.mark.parametrize("in_shape,kshape,strides,pads", [
    ((4, 32, 32, 3), (3, 3, 3, 16), (1, 1), ((1, 1), (1, 1))),  # ResNet stem, CIFAR
    ((4, 16, 16, 32), (3, 3, 32, 64), (2, 2), ((0, 1), (0, 1))),  # SAME, stride 2
    ((4, 16, 16, 32), (1, 1, 32, 64), (2, 2), ((0, 0), (0, 0))),  # projection shortcut
    ((3, 15, 15, 24), (5, 5, 24, 48), (1, 1), ((2, 2), (2, 2))),  # AlexNet-style 5x5
    ((2, 11, 13, 5), (3, 2, 5, 7), (2, 1), ((2, 0), (1, 3))),  # uneven everything
])
def test_paper_shapes_equal_xla_and_its_vjp(in_shape, kshape, strides, pads):
    x, w = _rand(0, in_shape), _rand(1, kshape)
    y, vjp = jax.vjp(lambda x, w: _ref(x, w, strides, pads), x, w)
    g = _rand(2, y.shape)
    dx, dw = vjp(g)
    op = ConvOp(in_shape=in_shape, kernel_shape=kshape, strides=strides, padding=pads,
                impl="dnnl")
    scale = lambda a: float(jnp.max(jnp.abs(a)))  # noqa: E731
    np.testing.assert_allclose(jax.jit(op.apply)(x, w), y, atol=2e-6 * scale(y))
    np.testing.assert_allclose(jax.jit(op.input_grad)(g, w), dx, atol=2e-6 * scale(dx))
    np.testing.assert_allclose(jax.jit(op.weight_grad)(x, g), dw, atol=5e-6 * scale(dw))


@needs_dnnl
def test_vmap_over_examples_runs_each_call():
    """Per-example products (vmap of a one-example convolution) loop over the custom call."""
    op = ConvOp(in_shape=(1, 8, 8, 3), kernel_shape=(3, 3, 3, 4), impl="dnnl")
    x, w = _rand(0, (5, 1, 8, 8, 3)), _rand(1, (3, 3, 3, 4))
    got = jax.jit(jax.vmap(op.apply, in_axes=(0, None)))(x, w)
    want = jnp.stack([_ref(xi, w, (1, 1), ((1, 1), (1, 1))) for xi in x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_dnnl
def test_a_resnet_training_step_equals_xlas(monkeypatch):
    """Two BP steps and two DFA steps of a ResNet-18 (x1/8): every parameter equal to the
    same steps with XLA's convolutions."""
    import optax

    import alearn
    from alearn import train

    x = _rand(0, (8, 16, 16, 3))
    batch = {"image": x, "label": jnp.arange(8) % 10}

    def params_after(impl, rule_name):
        monkeypatch.setenv("ALEARN_CONV_IMPL", impl)
        model = alearn.models.create("resnet18", 10, width_multiplier=0.125)
        rule, opt = alearn.rules.create(rule_name), optax.sgd(0.05, momentum=0.9)
        mesh = train.data_mesh(jax.devices()[:1])
        state = train.create_train_state(model, rule, opt, jax.random.key(0), x)
        step = train.make_train_step(model, rule, opt, mesh=mesh)
        for _ in range(2):
            state, _ = step(state, batch)
        return jax.tree.leaves((state.trainable, state.fixed))

    for rule_name in ("bp", "dfa"):
        got, want = params_after("dnnl", rule_name), params_after("xla", rule_name)
        assert len(got) == len(want) > 20
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_forced_dnnl_names_why_it_cannot_run(monkeypatch):
    monkeypatch.setattr(_native, "_STATE", {"ok": False, "why": "oneDNN is not installed: "
                                            "pip install onednn-cpu-gomp", "version": 0})
    op = ConvOp(in_shape=(1, 4, 4, 1), kernel_shape=(3, 3, 1, 1), impl="dnnl")
    with pytest.raises(ValueError, match="impl 'dnnl'.*cannot run here: oneDNN is not "
                                         "installed: pip install onednn"):
        op.apply(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))
    # "auto" does not offer it: XLA's forms only, no error.
    monkeypatch.setenv("ALEARN_CONV_IMPL", "auto")
    monkeypatch.setattr(conv_impl, "DNNL_MIN_FLOPS", 0)
    seen = []
    monkeypatch.setattr(conv_autotune, "autotune",
                        lambda product, candidates, *a: seen.append(set(candidates)) or "xla")
    ConvOp(in_shape=(1, 4, 4, 1), kernel_shape=(3, 3, 1, 1)).apply(
        jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))
    assert seen and "dnnl" not in seen[0] and "xla" in seen[0]


@needs_dnnl
def test_not_offered_in_a_partitioned_step(monkeypatch):
    """Under a multi-device data-parallel jit XLA would replicate the custom call."""
    monkeypatch.setenv("ALEARN_CONV_IMPL", "auto")
    monkeypatch.setattr(conv_impl, "DNNL_MIN_FLOPS", 0)
    seen = []
    monkeypatch.setattr(conv_autotune, "autotune",
                        lambda product, candidates, *a: seen.append(set(candidates)) or "xla")
    op = ConvOp(in_shape=(2, 4, 4, 1), kernel_shape=(3, 3, 1, 1))
    args = (jnp.ones((2, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))
    op.apply(*args)
    with conv_autotune.partitioned(8):
        op.apply(*args)
        with pytest.raises(ValueError, match="partitioned over 8 devices"):
            ConvOp(in_shape=(2, 4, 4, 1), kernel_shape=(3, 3, 1, 1), impl="dnnl").apply(*args)
    assert "dnnl" in seen[0] and "dnnl" not in seen[1]
    assert conv_autotune.partition_devices() == 1


def test_build_failure_and_switch_off_are_reported(monkeypatch, tmp_path):
    """No compiler: unavailable, with the compiler's message; ALEARN_NATIVE=0: off."""
    monkeypatch.setattr(_native, "_STATE", {})
    monkeypatch.setenv("ALEARN_NATIVE", "0")
    assert not _native.available() and "ALEARN_NATIVE=0" in _native.why_unavailable()
    if _native._dnnl_prefix() is None:
        return
    monkeypatch.setattr(_native, "_STATE", {})
    monkeypatch.setenv("ALEARN_NATIVE", "1")
    monkeypatch.setenv("ALEARN_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    assert not _native.available()
    assert "could not be built" in _native.why_unavailable()
    assert not any(p.name == "dnnl_conv.so" for p in tmp_path.rglob("*"))


@needs_dnnl
def test_builds_once_into_its_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEARN_NATIVE_CACHE", str(tmp_path))
    prefix = _native._dnnl_prefix()
    so = _native._build(prefix)
    assert os.path.dirname(os.path.dirname(so)) == str(tmp_path)
    mtime = os.path.getmtime(so)
    assert _native._build(prefix) == so and os.path.getmtime(so) == mtime


@needs_dnnl
def test_the_trainer_marks_its_partitioned_steps(monkeypatch):
    """make_train_step / make_eval_step over 8 devices trace under partitioned(8): no dnnl;
    over one device they offer it."""
    import optax

    import alearn
    from alearn import train

    monkeypatch.setenv("ALEARN_CONV_IMPL", "auto")
    monkeypatch.setattr(conv_impl, "DNNL_MIN_FLOPS", 0)
    seen = []
    monkeypatch.setattr(conv_autotune, "autotune",
                        lambda product, candidates, *a: seen.append(set(candidates)) or "xla")
    model = alearn.models.create("cnn", 10)
    rule, opt = alearn.rules.create("bp"), optax.sgd(0.1)
    x = jnp.zeros((8, 28, 28, 1))
    batch = {"image": x, "label": jnp.zeros((8,), jnp.int32)}
    state = train.create_train_state(model, rule, opt, jax.random.key(0), x)
    for devices, offered in ((jax.devices(), False), (jax.devices()[:1], True)):
        assert (len(devices) > 1) != offered  # conftest: 8 forced CPU devices
        mesh = train.data_mesh(devices)
        seen.clear()
        train.make_train_step(model, rule, opt, mesh=mesh).lower(state, batch)
        train.make_eval_step(model, rule, mesh=mesh).lower(state, batch)
        assert seen and all(("dnnl" in s) == offered for s in seen), (len(devices), seen)


def test_native_library_is_not_asked_for_when_it_cannot_be_used(monkeypatch):
    """XLA's forms forced, or "auto" off CPU: the library is not built or loaded."""
    def refuse():
        raise AssertionError("native library asked for")

    monkeypatch.setattr(_native, "available", refuse)
    args = (jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)))
    ConvOp(in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl="xla").apply(*args)
    monkeypatch.setenv("ALEARN_CONV_IMPL", "auto")
    monkeypatch.setattr(conv_autotune, "_backend", lambda: "gpu")
    ConvOp(in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4)).apply(*args)
