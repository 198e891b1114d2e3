"""The conv-net benchmark (``bench_convnets``) compares like with like: its PyTorch nets
have alearn's layer shapes (checked where torch is installed: the ``bench`` extra), and its
ratios read the right way round. The binary itself is not imported: its absl flags would
clash with other benchmarks' in the same test process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alearn
from experiments.bench import _torch_peers


def test_ratios_are_peer_time_over_alearn_time():
    t = {"resnet18_bp": 2.0, "resnet18_torch_bp": 1.0, "resnet18_dfa": 1.0,
         "resnet18_torch_dfa": 1.5, "resnet18_kp": 2.2}
    r = _torch_peers.ratios(t, ["resnet18"], ["bp", "dfa", "kp"])
    assert r["resnet18_bp_vs_pytorch"] == 0.5  # alearn twice as slow
    assert r["resnet18_dfa_vs_biotorch"] == 1.5
    assert r["resnet18_kp_time_vs_bp"] == pytest.approx(1.1)
    assert "resnet18_fa_vs_biotorch" not in r


@pytest.mark.parametrize("kind", ["resnet18", "alexnet"])
def test_torch_peer_has_alearn_layer_shapes(kind):
    torch = pytest.importorskip("torch")
    width = 0.125
    net = getattr(_torch_peers, kind)(torch, width)
    model = alearn.models.create(kind, 10, width_multiplier=width)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3))))
    ours = sorted(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
    theirs = sorted(p.numel() for p in net.parameters())
    assert ours == theirs
    out = net.eval()(torch.zeros(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 10)
