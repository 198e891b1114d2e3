"""An AL network: a validated chain of blocks, its whole-network step and prediction.

Thesis eq. 2.8: ``ŷ_0 = h_1 ∘ … ∘ h_N ∘ b_N ∘ f_N ∘ … ∘ f_1 (x)``. Effective parameters
(Sec. 2.6): all f_i, b_N and all h_i; affiliated: all g_i and b_j (j < N).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alearn.al.block import BlockDef, BlockState, apply_fn, block_step, init_block

Array = jax.Array


def _shape(x) -> tuple:
    return tuple(int(d) for d in x.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class ALNetwork:
    """N blocks on inputs of ``input_shape`` (without batch) and ``num_classes`` labels.

    Construction checks that the blocks chain: f_i accepts s_{i-1}; b_i(s_i) has y_i's
    shape; h_i(y_i) has y_{i-1}'s shape. A failure raises ``ValueError`` naming the block
    and the shapes.
    """

    blocks: tuple[BlockDef, ...]
    input_shape: tuple[int, ...]
    num_classes: int

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not self.blocks:
            raise ValueError("an ALNetwork needs at least one block; got none")
        jax.eval_shape(lambda: self._init_chain(jax.random.key(0), 2, check=True))

    def _init_chain(self, key: Array, batch: int, check: bool = False):
        s = jnp.zeros((batch, *self.input_shape), jnp.float32)
        y = jnp.zeros((batch, self.num_classes), jnp.float32)
        states = []
        for i, (bd, k) in enumerate(zip(self.blocks, jax.random.split(key, len(self.blocks)))):
            label = f"AL block {i + 1} ({bd.name})"
            try:
                st, s_out, y_out = init_block(bd, k, s, y)
            except Exception as e:  # noqa: BLE001 - re-raised with the block named
                raise ValueError(f"{label}: cannot initialise on s_{i} of shape {_shape(s)} "
                                 f"and y_{i} of shape {_shape(y)}: {e}") from e
            z, _ = apply_fn(bd.b, st.params["b"], st.model_state["b"], s_out, False)
            if check and _shape(z) != _shape(y_out):
                raise ValueError(f"{label}: bridge b output shape {_shape(z)} does not match "
                                 f"y_{i + 1} shape {_shape(y_out)} from g (s_{i + 1} shape "
                                 f"{_shape(s_out)})")
            y_hat = bd.h.apply({"params": st.params["h"]}, y_out)
            if check and _shape(y_hat) != _shape(y):
                raise ValueError(f"{label}: decoder h output shape {_shape(y_hat)} does not "
                                 f"match y_{i} shape {_shape(y)}")
            states.append(st)
            s, y = s_out, y_out
        return tuple(states)

    def init(self, key: Array, batch_size: int = 2) -> tuple[BlockState, ...]:
        """Initial per-block states (params, model state, two optimizer states each).

        One jitted program (an eager init would compile every layer's ops separately).
        """
        return jax.jit(lambda k: self._init_chain(k, batch_size))(key)


def targets(net: ALNetwork, labels: Array) -> Array:
    """``y_0``: one-hot labels."""
    return jax.nn.one_hot(labels, net.num_classes, dtype=jnp.float32)


def train_step(net: ALNetwork, states: Sequence[BlockState], x: Array, labels: Array
               ) -> tuple[tuple[BlockState, ...], dict]:
    """Whole-network AL step: every block's :func:`block_step` in order (pure, jittable).

    Metrics: per-block ``assoc_loss_i``/``ae_loss_i`` and their sums ``assoc_loss``,
    ``ae_loss``.
    """
    s, y = x, targets(net, labels)
    new, metrics = [], {}
    for i, (bd, st) in enumerate(zip(net.blocks, states)):
        st, s, y, m = block_step(bd, st, s, y)
        new.append(st)
        metrics.update({f"{k}_{i + 1}": v for k, v in m.items()})
    for k in ("assoc_loss", "ae_loss"):
        metrics[k] = sum(metrics[f"{k}_{i + 1}"] for i in range(len(net.blocks)))
    return tuple(new), metrics


def _run(module, params: dict, state: dict, x: Array, name: str
         ) -> tuple[Array, list[tuple[str, Array]]]:
    """Inference-mode output of ``module`` and its layers' activations.

    The layers are what the module ``sow``-s into ``"intermediates"`` (``Stack`` sows each
    activated layer), in order; a module that sows nothing contributes its output.
    """
    kwargs = {"train": False} if "train" in _call_params(module) else {}
    out, sown = module.apply({"params": params, **state}, x, mutable=["intermediates"],
                             **kwargs)
    inter = sown.get("intermediates", {})
    acts = [(f"{name}/{k}", v[-1] if isinstance(v, tuple) else v) for k, v in inter.items()
            if not isinstance(v, dict)]
    return out, acts or [(name, out)]


def _call_params(module) -> tuple[str, ...]:
    import inspect
    try:
        return tuple(inspect.signature(type(module).__call__).parameters)
    except (TypeError, ValueError):
        return ()


def prediction_path(net: ALNetwork, states: Sequence[BlockState], x: Array
                    ) -> tuple[Array, list[tuple[str, Array]]]:
    """Eq. 2.8 in inference mode; returns (scores, [(name, activation), ...]) in order.

    The activations are the layers of f_1 … f_N, b_N, h_N … h_1 (named ``f1/layer1``, …,
    ``b3/layer2``, ``h1/layer1``): the k-th entry is the k-th layer of the BP twin.
    """
    acts, s = [], x
    for i, (bd, st) in enumerate(zip(net.blocks, states)):
        s, a = _run(bd.f, st.params["f"], st.model_state["f"], s, f"f{i + 1}")
        acts += a
    bd, st = net.blocks[-1], states[-1]
    z, a = _run(bd.b, st.params["b"], st.model_state["b"], s, f"b{len(net.blocks)}")
    acts += a
    for i in reversed(range(len(net.blocks))):
        z, a = _run(net.blocks[i].h, states[i].params["h"], {}, z, f"h{i + 1}")
        acts += a
    return z, acts


def predict(net: ALNetwork, states: Sequence[BlockState], x: Array) -> Array:
    """Class scores ``h_1 ∘ … ∘ h_N ∘ b_N ∘ f_N ∘ … ∘ f_1 (x)`` (eq. 2.8)."""
    return prediction_path(net, states, x)[0]


def _count(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def param_counts(net: ALNetwork, states: Sequence[BlockState]) -> dict[str, int]:
    """{"effective", "affiliated", "total"} parameter counts (thesis Sec. 2.6)."""
    n = len(states)
    eff = sum(_count(st.params["f"]) + _count(st.params["h"]) for st in states)
    eff += _count(states[-1].params["b"])
    aff = sum(_count(st.params["g"]) for st in states)
    aff += sum(_count(st.params["b"]) for st in states[: n - 1])
    return {"effective": eff, "affiliated": aff, "total": eff + aff}
