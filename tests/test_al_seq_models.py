"""AL sequence models (al_lstm, al_transformer): padding masks, the max-length error,
BP-twin parameter counts, image rows as time steps, bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn.al as al
import alearn.models
from alearn.models import num_params
from alearn.rules import BP

from _al_seq_fixtures import CLASSES, KW, T, _net, _states, _tokens


@pytest.mark.parametrize("name", ["al_lstm", "al_transformer"])
def test_padding_is_masked_in_attention_state_and_pooling(name):
    """Appending padding changes no prediction and no pooled block output; the LSTM's last
    output is its last real step's state."""
    net, states = _net(name), _states(name)
    x, _ = _tokens(seed=2)
    padded = jnp.concatenate([x, jnp.zeros((x.shape[0], 2), jnp.int32)], 1)
    big = _net(name, shape=(T + 2,))  # same parameter shapes (positions: max_len 7)
    np.testing.assert_allclose(np.asarray(al.predict(big, states, padded)),
                               np.asarray(al.predict(net, states, x)), rtol=1e-5, atol=1e-6)
    if name == "al_lstm":
        bd, st = net.blocks[0], states[0]
        out, _ = al.apply_fn(bd.f, st.params["f"], {}, x, False)
        last = np.asarray((x != 0).sum(1)) - 1
        np.testing.assert_allclose(np.asarray(out[:, -1, :-1]),
                                   np.asarray(out[np.arange(len(last)), last, :-1]), rtol=1e-6)


def test_longer_than_max_len_fails_naming_both_lengths():
    with pytest.raises(ValueError, match=r"length 9 exceeds the model's maximum length "
                                         r"max_len=7"):
        _net("al_transformer", shape=(9,))
    bp = alearn.models.create("al_transformer", CLASSES, **KW["al_transformer"])
    with pytest.raises(ValueError, match=r"length 30 exceeds .*max_len=7"):
        bp.init(jax.random.key(0), jnp.zeros((1, 30), jnp.int32), rule=BP())


@pytest.mark.parametrize("name", ["al_lstm", "al_transformer"])
@pytest.mark.parametrize("shape", [(T,), (7, 6, 1)])
def test_bp_twin_parameter_count_matches(name, shape):
    """Token ids and image rows: the twin has exactly AL's effective parameters."""
    kw = {**KW[name], **({"max_len": 7} if name == "al_transformer" else {})}
    net = al.create(name, CLASSES, shape, spec_overrides=kw)
    counts = al.param_counts(net, jax.eval_shape(lambda: net.init(jax.random.key(0))))
    bp = alearn.models.create(name, CLASSES, **kw)
    v = jax.eval_shape(lambda: bp.init(jax.random.key(0), jnp.zeros((1, *shape)), rule=BP()))
    assert counts["effective"] == num_params(v)
    assert counts["affiliated"] > 0


def test_image_rows_are_the_time_axis():
    """(B, H, W, C) is H steps of W*C features: the embedding of row t is rows[t] @ W + b."""
    net = _net("al_lstm", shape=(4, 3, 2))
    st = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 4, 3, 2))
    p = st[0].params["f"]["SeqEmbed_0"]["rows"]
    emb = net.blocks[0].f.apply({"params": st[0].params["f"]}, x, mutable=["intermediates"])[1]
    got = emb["intermediates"]["layer1"][0]
    want = x.reshape(2, 4, 6) @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_bp_twin_rejects_other_rules_and_bad_options():
    from alearn.rules import create as create_rule
    bp = alearn.models.create("al_lstm", CLASSES, **KW["al_lstm"])
    with pytest.raises(ValueError, match="rule 'fa' cannot train the LSTM"):
        bp.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32), rule=create_rule("fa"))
    with pytest.raises(ValueError, match="unknown pool 'max'; choose one of: mean, last"):
        _net("al_lstm", pool="max")
    with pytest.raises(ValueError, match="al_transformer pools by the masked mean"):
        _net("al_transformer", pool="last")
