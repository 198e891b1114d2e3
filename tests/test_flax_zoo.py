"""The Flax model zoo (tests/_flax_zoo.py) runs under plain Flax: init/apply, output
shapes, parameter trees (scan-stacked, partitioned). Nothing here imports alearn; the
wrapper tests use these models, and tests/test_dfa_oracles.py checks the DFA oracles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests import _flax_zoo as zoo


# --- the zoo under plain Flax -------------------------------------------------------------

LINEN = {  # name: (call kwargs, expected output shape, module paths that must exist)
    "resnet": (dict(train=True), (4, 5), [("conv_init",), ("ResNetBlock_0", "Conv_1"),
                                          ("ResNetBlock_1", "conv_proj"), ("Dense_0",)]),
    "transformer_lm": ({}, (4, 8, 32), [("embed",), ("posembed_output",),
                                        ("block_1", "MultiHeadDotProductAttention_0", "query"),
                                        ("block_0", "LMMlpBlock_0", "Dense_1")]),
    "vit": (dict(train=False), (4, 5), [("embedding",), ("head",),
                                        ("Transformer", "encoderblock", "MlpBlock_0")]),
    "lstm_classifier": ({}, (4, 3), [("embedder",), ("encoder", "cell", "ii"),
                                     ("classifier",)]),
    "mlp_mixer": (dict(train=False), (4, 5), [("stem",), ("MixerBlock_1", "token_mixing"),
                                              ("head",)]),
}


@pytest.mark.parametrize("name", list(LINEN))
def test_linen_zoo_runs(name):
    model, inputs, targets = zoo.make(name)
    kw, shape, paths = LINEN[name]

    @jax.jit
    def run(key, *inputs):
        v = model.init(key, *inputs, **kw)
        mutable = ["batch_stats"] if "batch_stats" in v else False
        out = model.apply(v, *inputs, **kw, mutable=mutable)
        return v, (out[0] if mutable else out)

    v, out = run(jax.random.key(0), *inputs)
    if name == "vit":  # big_vision returns (logits, aux)
        out, aux = out
        assert aux["pre_logits"].shape == (4, 16)
        kernel = v["params"]["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"]
        assert kernel.shape == (2, 16, 32)  # nn.scan stacks the depth-2 params
        tok, (x,), _ = zoo.make_vit(pool_type="tok")
        shapes = jax.eval_shape(lambda k: tok.init(k, x), jax.random.key(0))
        assert shapes["params"]["cls"].shape == (1, 1, 16)
    assert out.shape == shape and targets.shape == shape[:-1]
    assert bool(jnp.all(jnp.isfinite(out)))
    for path in paths:
        node = v["params"]
        for key in path:
            node = node[key]
    if name == "resnet":
        assert set(v) == {"params", "batch_stats"}
        assert "conv_proj" not in v["params"]["ResNetBlock_0"]


def test_lstm_classifier_reads_the_last_valid_step():
    model, (tokens, lengths), _ = zoo.make_lstm_classifier()
    v = jax.jit(model.init)(jax.random.key(0), tokens, lengths)
    apply = jax.jit(model.apply)
    out = apply(v, tokens, lengths)
    changed = tokens.at[:, -1].set(7)  # beyond the length of every row but the first
    diff = jnp.abs(apply(v, changed, lengths) - out).max(axis=1)
    assert float(diff[0]) > 0 and float(diff[1:].max()) == 0.0


def test_nnx_scan_mlp_stacks_and_scans_its_blocks():
    model, (x,), y = zoo.make_nnx_scan_mlp()
    kernel = model.blocks.linear.kernel[...]
    assert kernel.shape == (3, 16, 16) and y.shape == (5,)
    assert not np.allclose(kernel[0], kernel[1])  # split_rngs: a different key per layer
    out = nnx.jit(lambda m, x: m(x))(model, x)
    h = jax.nn.relu(model.input(x))
    for i in range(3):
        h = jax.nn.relu(h @ kernel[i] + model.blocks.linear.bias[...][i])
    np.testing.assert_allclose(out, model.output(h), rtol=1e-5, atol=1e-6)


def test_minigpt_runs_and_carries_partitioning_under_a_mesh():
    model, (x,), y = zoo.make_minigpt()
    assert model.output_layer.kernel.get_metadata()["out_sharding"] == (None, "model")
    fwd = nnx.jit(lambda m, x, training: m(x, training=training), static_argnums=2)
    out = fwd(model, x, False)
    assert out.shape == (4, 8, 32) and y.shape == (4, 8)
    assert not np.allclose(out, fwd(model, x, True))  # dropout 0.1 when training
    meshed, (x2,), _, mesh = zoo.make_minigpt_under_mesh()
    kernel = meshed.transformer_blocks[0].linear1.kernel[...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert kernel.sharding.mesh.shape == {"batch": 1, "model": 1}
    with jax.set_mesh(mesh):
        assert fwd(meshed, x2, False).shape == (4, 8, 32)
