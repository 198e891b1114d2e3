"""The im2col and banded convolution forms equal XLA's convolution and its VJP; the per-shape chooser."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alearn import _cpu_load
from alearn import _native
from alearn._layers import ConvOp, conv_autotune, conv_impl

CASES = [  # (in_shape, kernel_shape, strides, padding)
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME"),
    ((2, 9, 9, 3), (3, 3, 3, 4), (2, 2), "SAME"),
    ((2, 8, 8, 3), (5, 5, 3, 2), (2, 2), "VALID"),
    ((3, 7, 10, 2), (3, 2, 2, 5), (1, 2), ((2, 0), (1, 3))),
    ((2, 6, 6, 4), (1, 1, 4, 3), (2, 2), "VALID"),  # projection shortcut
    ((2, 28, 28, 1), (5, 5, 1, 6), (1, 1), ((2, 2), (2, 2))),  # LeNet conv1
]


# The oneDNN form is a candidate wherever it loads (tests/test_conv_dnnl.py checks that it
# does on Linux x86-64, where it is a dependency).
DNNL = {"dnnl"} if _native.available() else set()


def _rand(key, shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


@pytest.mark.parametrize("impl", ["im2col", "banded", *sorted(DNNL)])
@pytest.mark.parametrize("in_shape,kshape,strides,padding", CASES)
def test_forms_equal_xla_conv_and_its_vjp(in_shape, kshape, strides, padding, impl):
    x, w = _rand(0, in_shape), _rand(1, kshape)

    def ref(x, w):  # the oracle: XLA's convolution, differentiated by JAX
        return jax.lax.conv_general_dilated(x, w, strides, padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    y, vjp = jax.vjp(ref, x, w)
    g = _rand(2, y.shape)
    dx_ref, dw_ref = vjp(g)
    op = ConvOp(in_shape=in_shape, kernel_shape=kshape, strides=strides, padding=padding,
                impl=impl)
    assert op.out_shape == y.shape
    np.testing.assert_allclose(jax.jit(op.apply)(x, w), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(op.input_grad)(g, w), dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(op.weight_grad)(x, g), dw_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", ["im2col", "banded", *sorted(DNNL)])
def test_input_grad_inside_shard_map_is_exact(impl):
    """In the AL pipeline the transposes run under shard_map with varying cotangents."""
    mesh = jax.make_mesh((2,), ("stage",), axis_types=(jax.sharding.AxisType.Auto,))
    op = ConvOp(in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl=impl)
    w, g = _rand(1, (3, 3, 3, 4)), _rand(2, (4, 6, 6, 4))
    spec = jax.sharding.PartitionSpec

    @jax.jit
    def run(g):
        return jax.shard_map(lambda gs: op.input_grad(gs, w), mesh=mesh,
                             in_specs=spec("stage"), out_specs=spec("stage"))(g)

    want = ConvOp(in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl="xla")
    np.testing.assert_allclose(run(g), jnp.concatenate(
        [want.input_grad(g[:2], w), want.input_grad(g[2:], w)]), rtol=1e-5, atol=1e-5)


@pytest.fixture
def fresh_chooser(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEARN_CONV_IMPL", "auto")
    monkeypatch.delenv("ALEARN_CONV_RETUNE", raising=False)
    monkeypatch.setenv("ALEARN_CONV_CACHE", str(tmp_path / "conv.json"))
    monkeypatch.setattr(conv_autotune, "_MEMORY", {})
    monkeypatch.setattr(conv_autotune, "_PROCESS", conv_autotune._Process())
    monkeypatch.setattr(conv_impl, "DNNL_MIN_FLOPS", 0)  # the tests' shapes are tiny
    # A quiet machine: the load handling has its own tests (tests/test_conv_autotune_load.py).
    clock = itertools.count()
    monkeypatch.setattr(_cpu_load, "counters",
                        lambda: _cpu_load.Counters(float(next(clock)), 0.0, 0.0, 2))
    return tmp_path / "conv.json"


def test_autotune_keeps_the_faster_form_and_caches_it(fresh_chooser, monkeypatch):
    timed = []

    def fake_time(fn, args, reps=5):  # "faster": im2col for apply, XLA, banded for the transposes
        timed.append(fn)
        return 1.0 if fn is forms_seen[id(fn)] else 2.0

    op = ConvOp(in_shape=(2, 8, 8, 3), kernel_shape=(3, 3, 3, 4))
    forms_seen = {}
    real_forms = op._forms

    def forms(product):
        f = real_forms(product)
        fast = f[{"apply": "im2col", "input_grad": "xla", "weight_grad": "banded"}[product]]
        forms_seen.update({id(fn): fast for fn in f.values()})
        return f

    monkeypatch.setattr(conv_autotune, "_best_time", fake_time)
    monkeypatch.setattr(ConvOp, "_forms", lambda self, p: forms(p))
    x, w = _rand(0, (2, 8, 8, 3)), _rand(1, (3, 3, 3, 4))
    y = jax.jit(op.apply)(x, w)  # autotuned while tracing the jitted function
    op.input_grad(y, w)
    op.weight_grad(x, y)
    assert len(timed) == 9 + 3 * len(DNNL)
    saved = json.loads(fresh_chooser.read_text())
    choices = {k.split("|")[-6]: v["choice"] for k, v in saved.items()}
    assert choices == {"apply": "im2col", "input_grad": "xla", "weight_grad": "banded"}
    op.apply(x, w)  # cached: not timed again
    conv_autotune._MEMORY.clear()  # a new process reads the file
    op.apply(x, w)
    assert len(timed) == 9 + 3 * len(DNNL)


def test_banded_form_is_timed_only_where_its_band_matrix_is_small(fresh_chooser, monkeypatch):
    timed = []
    monkeypatch.setattr(conv_autotune, "_best_time",
                        lambda fn, args, reps=5: timed.append(fn) or 1.0)
    # 64 -> 64 channels on 34-pixel padded rows: band matrix 3*34*64*32*64 > 2**22 elements.
    big = ConvOp(in_shape=(1, 32, 32, 64), kernel_shape=(3, 3, 64, 64))
    assert not conv_impl.banded_fits(big.in_shape, big.kernel_shape, (1, 1), big.pads)
    jax.eval_shape(big.apply, jnp.zeros(big.in_shape), jnp.zeros(big.kernel_shape))
    assert len(timed) == 2 + len(DNNL)  # xla, im2col (and dnnl) only
    lenet = ConvOp(in_shape=(2, 12, 12, 6), kernel_shape=(5, 5, 6, 16), padding="VALID")
    assert conv_impl.banded_fits(lenet.in_shape, lenet.kernel_shape, (1, 1), lenet.pads)


def test_autotune_really_times_and_stays_exact(fresh_chooser):
    op = ConvOp(in_shape=(2, 8, 8, 3), kernel_shape=(3, 3, 3, 4), strides=(2, 2))
    x, w = _rand(0, (2, 8, 8, 3)), _rand(1, (3, 3, 3, 4))
    y = jax.jit(op.apply)(x, w)
    np.testing.assert_allclose(y, ConvOp((2, 8, 8, 3), (3, 3, 3, 4), strides=(2, 2),
                                         impl="xla").apply(x, w), rtol=1e-5, atol=1e-5)
    (entry,) = json.loads(fresh_chooser.read_text()).values()
    assert entry["choice"] in conv_impl.FORMS and entry["loaded"] is False
    assert set(entry["times_ms"]) == {"xla", "im2col", "banded"} | DNNL


def test_auto_is_xla_off_cpu_and_env_overrides(fresh_chooser, monkeypatch):
    monkeypatch.setattr(conv_autotune, "_backend", lambda: "gpu")
    assert conv_autotune.resolve("auto", "apply", {}, (), jnp.float32, "k") == "xla"
    monkeypatch.setenv("ALEARN_CONV_IMPL", "im2col")
    assert conv_autotune.resolve("auto", "apply", {}, (), jnp.float32, "k") == "im2col"
    assert conv_autotune.resolve("xla", "apply", {}, (), jnp.float32, "k") == "xla"
    assert not fresh_chooser.exists()


def test_bad_impl_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="unknown conv impl 'fast'.*auto, xla, im2col"):
        ConvOp((1, 4, 4, 1), (3, 3, 1, 1), impl="fast").apply(jnp.ones((1, 4, 4, 1)),
                                                              jnp.ones((3, 3, 1, 1)))
    monkeypatch.setenv("ALEARN_CONV_IMPL", "cudnn")
    with pytest.raises(ValueError, match="ALEARN_CONV_IMPL='cudnn'"):
        conv_autotune.resolve("auto", "apply", {}, (), jnp.float32, "k")


@pytest.mark.parametrize("in_shape,kshape,strides,padding", [
    ((20, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME"),  # chunks of 8: 8 + 8 + 4 examples
    ((20, 8, 8, 3), (5, 5, 3, 2), (2, 2), "VALID"),
    ((20, 6, 6, 4), (1, 1, 4, 3), (2, 2), "VALID"),
])
def test_chunked_weight_grads_equal_the_vjp(in_shape, kshape, strides, padding):
    x, w = _rand(0, in_shape), _rand(1, kshape)
    y, vjp = jax.vjp(lambda w: jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")), w)
    g = _rand(2, y.shape)
    (dw_ref,) = vjp(g)
    op = ConvOp(in_shape=in_shape, kernel_shape=kshape, strides=strides, padding=padding)
    forms = op._forms("weight_grad")
    chunked = sorted(k for k in forms if k.startswith("xla_b"))
    assert chunked == ["xla_b16", "xla_b8"]  # chunks smaller than the batch of 20 only
    for name in chunked:
        np.testing.assert_allclose(jax.jit(forms[name])(x, g), dw_ref, rtol=1e-5, atol=1e-4)
    # a chunk that drops or repeats examples would differ by whole examples' contributions
    half = conv_impl.weight_grad_xla_chunked(x[:8], g[:8], 8, forms["xla"])
    assert np.abs(np.asarray(half - dw_ref)).max() > 1e-2


def test_only_the_weight_grad_times_the_chunked_forms(fresh_chooser, monkeypatch):
    monkeypatch.setattr(conv_autotune, "_best_time", lambda fn, args, reps=5: 1.0)
    op = ConvOp(in_shape=(40, 8, 8, 3), kernel_shape=(3, 3, 3, 4))
    x, w = _rand(0, op.in_shape), _rand(1, op.kernel_shape)
    y = op.apply(x, w)
    op.input_grad(y, w)
    op.weight_grad(x, y)
    saved = json.loads(fresh_chooser.read_text())
    timed = {k.split("|")[-6]: set(v["times_ms"]) for k, v in saved.items()}
    assert timed["apply"] == timed["input_grad"] == {"xla", "im2col", "banded"} | DNNL
    assert timed["weight_grad"] == {"xla", "im2col", "banded", "xla_b8", "xla_b16",
                                    "xla_b32"} | DNNL


def test_im2col_is_timed_only_for_small_windows(fresh_chooser, monkeypatch):
    """No product times im2col on a 5x5 window (in a step its 25 slices split into passes)."""
    monkeypatch.setattr(conv_autotune, "_best_time", lambda fn, args, reps=5: 1.0)
    for kshape in ((3, 3, 3, 4), (5, 5, 3, 4)):
        op = ConvOp(in_shape=(2, 8, 8, 3), kernel_shape=kshape)
        x, w = _rand(0, op.in_shape), _rand(1, kshape)
        y = op.apply(x, w)
        op.input_grad(y, w)
        op.weight_grad(x, y)
    saved = json.loads(fresh_chooser.read_text())
    timed = {(k.split("|")[-6], k.split("|")[-4]): set(v["times_ms"]) for k, v in saved.items()}
    for product in ("apply", "input_grad", "weight_grad"):
        assert "im2col" in timed[(product, "w(3, 3, 3, 4)")], product
        assert "im2col" not in timed[(product, "w(5, 5, 3, 4)")], product
    assert conv_impl.im2col_fits((3, 3, 8, 8)) and not conv_impl.im2col_fits((5, 5, 8, 8))


def test_chunked_weight_grad_inside_shard_map_is_exact():
    """The AL pipeline's blocks run their weight cotangents under shard_map (local batch)."""
    mesh = jax.make_mesh((2,), ("stage",), axis_types=(jax.sharding.AxisType.Auto,))
    op = ConvOp(in_shape=(20, 6, 6, 3), kernel_shape=(3, 3, 3, 4))
    x, g = _rand(0, (40, 6, 6, 3)), _rand(2, (40, 6, 6, 4))
    spec = jax.sharding.PartitionSpec
    chunked = op._forms("weight_grad")["xla_b8"]

    @jax.jit
    def run(x, g):
        return jax.shard_map(lambda xs, gs: chunked(xs, gs)[None], mesh=mesh,
                             in_specs=(spec("stage"), spec("stage")), out_specs=spec("stage"))(x, g)

    want = ConvOp(in_shape=(20, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl="xla")
    got = run(x, g)
    for i, sl in enumerate((slice(0, 20), slice(20, 40))):
        np.testing.assert_allclose(got[i], want.weight_grad(x[sl], g[sl]), rtol=1e-5, atol=1e-4)


def test_dnnl_is_timed_only_for_convolutions_worth_a_custom_call(fresh_chooser, monkeypatch):
    """Below DNNL_MIN_FLOPS the custom call's fixed costs in a step outweigh its gain (LeNet-5:
    3-7 % slower steps), so "auto" does not time it there; forced, it still runs."""
    monkeypatch.setattr(conv_impl, "DNNL_MIN_FLOPS", 1e8)
    seen = {}
    monkeypatch.setattr(conv_autotune, "autotune",
                        lambda product, candidates, shapes, dtype, key: seen.setdefault(
                            shapes[0], set(candidates)) and "xla")
    lenet = ConvOp(in_shape=(128, 12, 12, 6), kernel_shape=(5, 5, 6, 16), padding="VALID")
    resnet = ConvOp(in_shape=(128, 16, 16, 32), kernel_shape=(3, 3, 32, 32))
    assert conv_impl.conv_flops(lenet.in_shape, lenet.kernel_shape, (1, 1), lenet.pads) < 1e8
    assert conv_impl.conv_flops(resnet.in_shape, resnet.kernel_shape, (1, 1), resnet.pads) > 1e8
    for op in (lenet, resnet):
        jax.eval_shape(op.apply, jnp.zeros(op.in_shape), jnp.zeros(op.kernel_shape))
    assert "dnnl" not in seen[lenet.in_shape]
    assert ("dnnl" in seen[resnet.in_shape]) == bool(DNNL)
    if DNNL:
        forced = ConvOp(in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl="dnnl")
        x, w = _rand(0, forced.in_shape), _rand(1, forced.kernel_shape)
        np.testing.assert_allclose(forced.apply(x, w), ConvOp(
            in_shape=(2, 6, 6, 3), kernel_shape=(3, 3, 3, 4), impl="xla").apply(x, w),
            rtol=1e-5, atol=1e-5)
