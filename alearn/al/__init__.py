"""Associated Learning (AL): blocks trained by local losses behind stop_gradient boundaries.

Thesis: Kao, "Associated Learning" (papers/associated-learning-thesis.txt), eqs. 2.2–2.8.

API (pure pytrees; the device pipeline builds on this):

- ``BlockDef(f, g, h, b, tx_forward, tx_ae, assoc_trains_g, assoc_reduction,
  weight_decay, l2_scope, name)`` (defaults = the authors' code: ``assoc_reduction="mean"``,
  L2 on f's kernels only): static description of one block; f/g/h/b are any Flax modules
  (``train=`` is passed when their ``__call__`` accepts it). Frozen, hashed by identity,
  so it is a valid ``jax.jit`` static argument.
- ``BlockState(params, model_state, opt_forward, opt_ae)``: NamedTuple pytree;
  ``params = {"f", "g", "h", "b"}``, ``model_state = {"f", "b"}`` (batch_stats or {}),
  ``opt_forward`` = optax state over {"f", "b"}, ``opt_ae`` = optax state over {"g", "h"}.
- ``block_step(block_def, block_state, s_in, y_in) -> (new_block_state, s_out, y_out,
  metrics)``: pure; ``s_in``/``y_in`` cross ``jax.lax.stop_gradient``; ``s_out``/``y_out``
  come from the pre-update parameters. ``make_block_step(bd, **jit_kwargs)`` jits it with
  ``bd`` bound. Blocks with equal shapes and one shared ``BlockDef`` (or structurally
  equal ones) can be vmapped over states stacked with
  ``jax.tree.map(lambda *a: jnp.stack(a), *states)``.
- ``ALNetwork(blocks, input_shape, num_classes)``: validates the chain at construction;
  ``net.init(key) -> tuple[BlockState, ...]``; ``targets(net, labels)`` = y_0 (one-hot);
  ``train_step(net, states, x, labels) -> (states, metrics)`` = every block_step in order
  (s_0 = x, y_0 = one-hot); ``predict(net, states, x)`` (eq. 2.8);
  ``prediction_path`` (scores and every layer's activation); ``param_counts`` (effective /
  affiliated / total, Sec. 2.6).
- Models: ``create(name, num_classes, input_shape, width_multiplier=..., lr=..., ...)`` for
  ``al_mlp, al_cnn, al_vgg, al_resnet20, al_resnet32, al_sigmoid_mlp`` and the sequence
  models ``al_lstm, al_transformer`` (layers: ``alearn.al.seq``);
  ``BASELINES[name](num_classes=..., width_multiplier=..., baseline="matched"|"authors")``
  is its BP model: the parameter-matched twin or the authors' code's, a plain Flax
  ``ALBaseline`` wrapped by ``alearn.wrap`` so any rule trains it (also registered in
  ``alearn.models``). ``Stack`` / ``MatchedBP`` / ``ALBaseline`` are plain ``flax.linen``.
- Training: ``train_and_evaluate(config, workdir)`` (``config.rule == "al"``).
"""

from alearn.al.block import (
    BlockDef,
    BlockState,
    apply_fn,
    associated_loss,
    autoencoder_loss,
    block_losses,
    block_step,
    init_block,
    l2_penalty,
    make_block_step,
)
from alearn.al.models import BASELINES, SPECS, ALBaseline, ALSpec, bp_baseline, create, network, spec
from alearn.al.network import (
    ALNetwork,
    param_counts,
    predict,
    prediction_path,
    targets,
    train_step,
)
from alearn.al.stack import MatchedBP, Stack


def train_and_evaluate(config, workdir: str, **kwargs) -> dict:
    """Trains the AL model of ``config`` (see :mod:`alearn.al.train`); imported lazily."""
    # Lazily: the trainer loads alearn.train (orbax, tensorboardX), which `import alearn.al`
    # need not pay for.
    from alearn.al.train import train_and_evaluate as _train
    return _train(config, workdir, **kwargs)

__all__ = [
    "ALBaseline", "ALNetwork", "ALSpec", "BASELINES", "BlockDef", "BlockState", "MatchedBP", "SPECS",
    "Stack", "apply_fn", "associated_loss", "autoencoder_loss", "block_losses", "block_step",
    "bp_baseline", "create", "init_block", "l2_penalty", "make_block_step", "network",
    "param_counts", "predict", "prediction_path", "spec", "targets", "train_and_evaluate", "train_step",
]
