"""``alearn.describe`` on ``alearn.wrap_nnx`` models, and DFA's model-input rule in NNX.

By construction: the rows are checked against the model's own ``nnx.Param`` tree (every
``kernel`` leaf is a routed map, every other leaf element-wise) and its ``Feedback``
variables (shapes, bytes), not against a stored table. Models: tests/_flax_zoo.py's
NNXScanMLP (nnx.vmap-built blocks under nnx.scan) and MiniGPT (nnx.MultiHeadAttention).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import alearn
from tests import _flax_zoo as zoo

KEY = jax.random.key(1)
DFA = alearn.rules.create("dfa")
LOCAL = "local error (element-wise)"
RECV = ("transformer_blocks/*/mha", "transformer_blocks/*/linear2")


def _flat(state) -> dict:
    return {"/".join(str(k) for k in p): v[...] for p, v in nnx.to_flat_state(state)}


def _nbytes(a) -> int:
    return math.prod(a.shape) * jnp.dtype(a.dtype).itemsize


def _routed(desc, rule_name):
    return {r.path: r for r in desc.rows
            if r.update == rule_name or r.update.startswith(rule_name + ":")}


def _check_by_construction(model, desc, rule_name):
    """Every Param is a row; kernels are routed, the rest element-wise; each routed row's
    feedback is exactly the Feedback variables of its layer; the receivers' rows and the
    layers' rows hold all the model's Feedback bytes."""
    params = _flat(nnx.state(model.model, nnx.Param))
    rows = {r.path: r for r in desc.rows if "receiver)" not in r.path}
    assert set(rows) == set(params)
    kernels = {p for p in params if p.endswith("/kernel")}
    routed = _routed(desc, rule_name)
    assert set(routed) == kernels
    assert all(rows[p].update == LOCAL for p in set(params) - kernels)
    for p, a in params.items():
        assert rows[p].shape == a.shape
    feedback = _flat(nnx.state(model.model, alearn.Feedback))
    for p, r in routed.items():
        layer = p[:-len("/kernel")]
        mine = {k[len(layer) + 1:]: a for k, a in feedback.items()
                if k.startswith(layer + "/") and "/" not in k[len(layer) + 1:]
                and not k.endswith("_out")}
        assert r.feedback == ", ".join(f"{n} {a.shape}" for n, a in sorted(mine.items()))
        assert r.feedback_bytes == sum(_nbytes(a) for a in mine.values())
    assert desc.feedback_bytes == sum(_nbytes(a) for a in feedback.values())
    return routed


@pytest.mark.parametrize("rule_name", ["fa", "dfa"])
def test_describe_nnx_scan_mlp(rule_name):
    model, (x,), _ = zoo.make_nnx_scan_mlp()
    rule = alearn.rules.create(rule_name)
    model = alearn.wrap_nnx(model, rule, x, KEY)
    desc = alearn.describe(model, x)  # the rule is the bound one
    assert desc.rule == rule_name and "NNXScanMLP" in desc.model
    routed = _check_by_construction(model, desc, rule_name)
    assert routed["blocks/linear/kernel"].stacked == "1 leading axis (lifted)"
    assert routed["input/kernel"].stacked == routed["output/kernel"].stacked == ""
    if rule_name == "fa":
        assert routed["blocks/linear/kernel"].feedback == "B (3, 16, 16)"
        assert all(r.dfa_input == "" for r in desc.rows)
    else:  # the input layer reads the model input: its signal would be discarded, no D
        assert {p: r.dfa_input for p, r in routed.items()} == {
            "input/kernel": "model input", "blocks/linear/kernel": "own",
            "output/kernel": "own"}
        assert not hasattr(model.model.input, "D")
        assert routed["blocks/linear/kernel"].feedback == "D (3, 4, 16)"
        (loss, _), g = nnx.jit(lambda m: alearn.nnx_value_and_updates(
            alearn.cross_entropy, m, x, zoo.make_nnx_scan_mlp()[2]))(model)
        assert jnp.isfinite(loss)
        assert float(jnp.abs(g["model"]["input"]["kernel"][...]).sum()) > 0
    assert "blocks/linear/kernel" in str(desc)


def test_describe_nnx_scan_mlp_with_a_stacked_input_receiver():
    model, (x,), _ = zoo.make_nnx_scan_mlp()
    model = alearn.wrap_nnx(model, DFA, x, KEY, blocks=("blocks",))
    desc = alearn.describe(model, None, x)
    routed = _check_by_construction(model, desc, "dfa")
    assert routed["blocks/linear/kernel"].dfa_input == "receiver blocks"
    assert routed["blocks/linear/kernel"].feedback == ""
    (recv,) = [r for r in desc.rows if "receiver)" in r.path]
    assert recv.path == "blocks (input receiver)"
    assert recv.feedback == f"D {model.model.blocks.D.shape}" == "D (3, 4, 16)"
    assert recv.stacked == "1 leading axis (lifted)"


def test_describe_nnx_attention_under_dfa():
    model, (t,), _ = zoo.make_minigpt()
    model = alearn.wrap_nnx(model, DFA, t, KEY, receivers=RECV)
    desc = alearn.describe(model, DFA, t)
    routed = _check_by_construction(model, desc, "dfa")
    assert len(routed) == 2 * 6 + 1  # q, k, v, out, linear1, linear2 per block; the head
    for b in range(2):
        blk = f"transformer_blocks/{b}"
        assert routed[f"{blk}/mha/query/kernel"].dfa_input == "own"
        for kv in ("key", "value"):  # q/k/v read one array: only the first owns D
            r = routed[f"{blk}/mha/{kv}/kernel"]
            assert r.dfa_input == f"shared with {blk}/mha/query" and r.feedback == ""
        assert routed[f"{blk}/mha/query/kernel"].feedback == "D (32, 16)"
    for p in ("embedding_layer/token_emb/embedding", "embedding_layer/pos_emb/embedding"):
        assert {r.path: r.update for r in desc.rows}[p] == LOCAL  # lookups
    recv = {r.path: r for r in desc.rows if "receiver)" in r.path}
    assert set(recv) == {f"transformer_blocks/{b}/{m} (output receiver)"
                         for b in range(2) for m in ("mha", "linear2")}
    assert all(r.feedback == "D (32, 16)" and r.feedback_bytes == 32 * 16 * 4
               for r in recv.values())


def test_describe_nnx_attention_under_asap_shows_roles_and_groups():
    model, (t,), _ = zoo.make_minigpt()
    rule = alearn.rules.create("asap")
    model = alearn.wrap_nnx(model, rule, t, KEY)
    desc = alearn.describe(model, t)
    routed = _check_by_construction(model, desc, "asap")
    roles = {p: r.update for p, r in routed.items()}
    assert list(roles.values()).count("asap: frozen") == 1
    assert roles["transformer_blocks/0/mha/query/kernel"] == "asap: frozen"
    sharing = [r for r in routed.values() if r.update == "asap: sharing"]
    assert sharing and all(r.sharing.startswith("group ") for r in sharing)
    # q/k/v of a block read one activation; k and v share its group
    k, v = (routed[f"transformer_blocks/1/mha/{n}/kernel"].sharing for n in ("key", "value"))
    assert k == v


def test_describe_nnx_rule_is_the_bound_one_and_linen_needs_one():
    model, (x,), _ = zoo.make_nnx_scan_mlp()
    rule = alearn.rules.create("fa")
    model = alearn.wrap_nnx(model, rule, x, KEY)
    want = alearn.describe(model, x)
    assert alearn.describe(model, None, x) == want
    assert alearn.describe(model, alearn.rules.create("fa"), x) == want
    with pytest.raises(ValueError, match=r"wrapped with rule .*'fa'.*rule=None"):
        alearn.describe(model, DFA, x)
    with pytest.raises(TypeError, match="variables= and train= are for Linen"):
        alearn.describe(model, x, variables={})
    with pytest.raises(ValueError, match="give sample model inputs"):
        alearn.describe(model)
    with pytest.raises(TypeError, match="a Linen model needs the rule"):
        alearn.describe(alearn.wrap(zoo.make_resnet()[0]), None, x)


class _TwoReaders(nnx.Module):
    """``a`` and ``b`` both read the model input (or ``scale * x``), ``out`` reads their
    sum."""

    def __init__(self, rngs, scale=None):
        self.a, self.b = nnx.Linear(5, 6, rngs=rngs), nnx.Linear(5, 6, rngs=rngs)
        self.out = nnx.Linear(6, 3, rngs=rngs)
        self.scale = scale

    def __call__(self, x):
        h = x if self.scale is None else x * self.scale
        return self.out(nnx.relu(self.a(h) + self.b(h)))


def test_dfa_layers_reading_the_model_input_own_no_d():
    x = jax.random.normal(jax.random.key(0), (4, 5))
    y = jnp.array([0, 1, 2, 1])
    model = alearn.wrap_nnx(_TwoReaders(nnx.Rngs(0)), DFA, x, KEY)
    m = model.model
    assert not hasattr(m.a, "D") and not hasattr(m.b, "D") and m.out.D.shape == (3, 6)
    src = {r.path: r.dfa_input for r in alearn.describe(model, x).rows if r.dfa_input}
    assert src == {"a/kernel": "model input", "b/kernel": "model input", "out/kernel": "own"}
    # eager, jitted and NumPy inputs: the same layers read the input (no feedback mismatch)
    (l1, _), g1 = alearn.nnx_value_and_updates(alearn.cross_entropy, model, x, y)
    (l2, _), g2 = nnx.jit(lambda mm, xx: alearn.nnx_value_and_updates(
        alearn.cross_entropy, mm, xx, y))(model, x)
    (l3, _), _ = alearn.nnx_value_and_updates(alearn.cross_entropy, model,
                                              jax.device_get(x), y)
    assert abs(float(l1) - float(l2)) < 1e-6 and abs(float(l1) - float(l3)) < 1e-6
    # their updates: δ_a = relu'(a + b) ⊙ (e D_out), as a hand-written DFA
    e = jax.grad(lambda o: alearn.cross_entropy(o, y))(model(x))
    pre = x @ m.a.kernel[...] + m.a.bias[...] + x @ m.b.kernel[...] + m.b.bias[...]
    delta = (pre > 0) * (e @ m.out.D[...])
    for g in (g1, g2):
        assert jnp.allclose(g["model"]["a"]["kernel"][...], x.T @ delta, atol=1e-6)
        assert jnp.allclose(g["model"]["b"]["kernel"][...], x.T @ delta, atol=1e-6)
    # an array computed from the input is not the input: its first reader owns D
    scaled = alearn.wrap_nnx(_TwoReaders(nnx.Rngs(0), scale=2.0), DFA, x, KEY)
    assert scaled.model.a.D.shape == (3, 5) and not hasattr(scaled.model.b, "D")
    src = {r.path: r.dfa_input for r in alearn.describe(scaled, x).rows if r.dfa_input}
    assert src == {"a/kernel": "own", "b/kernel": "shared with a", "out/kernel": "own"}
