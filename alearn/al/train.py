"""``train_and_evaluate(config, workdir)`` for ``config.rule == "al"`` (thesis Ch. 3).

Dispatched from ``alearn.train.train_and_evaluate`` (``FAMILY_TRAINERS``). Reuses the
generic trainer's pieces: schedules (``create_schedule``), ``MetricsWriter`` /
``results.json`` / ``curves.png`` and the orbax ``Checkpointer`` (resume from the newest
epoch). One jitted whole-network AL step per batch (every block's local update in order,
:class:`SequentialStep`; the per-device pipeline is ``alearn.al``'s pipeline module), and
one epoch loop for both (:func:`train_epoch`: metrics read one step late, so dispatch runs
ahead of the host).

Config fields used: ``model`` (an AL model, e.g. ``al_mlp``), ``model_kwargs``
(``width_multiplier``), ``dataset``, ``batch_size``, ``epochs``, ``optimizer`` ("adam"),
``learning_rate``, ``schedule``/``decay_epochs``/``decay_factor`` (or ``decay_fractions``
/ ``decay_factors``, the authors' code), ``weight_decay`` (L2 λ/2‖W‖² on the kernels
``al_hparams.l2_scope`` names), ``seed``, and ``al_hparams`` (not ``rule_hparams``, which
the BP twin's rule validates): ``ae_lr_mult`` (2.0, the code), ``assoc_trains_g`` (False),
``assoc_reduction`` ("mean", the code; "sum" = eq. 2.7), ``l2_scope`` ("f", the code).
``model_kwargs.baseline`` selects the BP twin's kind and is ignored by the AL network.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from alearn.al.config import HPARAMS, build  # noqa: F401 (HPARAMS re-exported)
from alearn.al.network import ALNetwork, param_counts, predict, train_step
from alearn.train import report, setup
from alearn.train.checkpoint import Checkpointer
from alearn.train.sharding import data_mesh, prefetch_to_device, replicated


def accuracy(net: ALNetwork, states: Any, dataset: Any, split: str,
             batch_size: int = 1000) -> float:
    """Accuracy of eq. 2.8's prediction on ``split`` (no augmentation, no shuffle)."""
    pred = _predict_fn(net)
    correct = count = 0
    for batch in dataset.batches(split, batch_size, shuffle=False, augment=False,
                                 drop_remainder=False):
        scores = pred(states, batch["image"])
        correct += int(np.sum(np.argmax(np.asarray(scores), -1) == batch["label"]))
        count += len(batch["label"])
    return correct / max(count, 1)


@functools.lru_cache(maxsize=8)
def _predict_fn(net):
    return jax.jit(functools.partial(predict, net))


def restore(config: Any, workdir: str, dataset: Any = None):
    """(net, states, dataset) of the newest checkpoint in ``workdir``."""
    ds = dataset if dataset is not None else setup.create_dataset(config)
    spe = ds.num_batches("train", int(config.batch_size))
    net = build(config, ds.info.num_classes, ds.info.image_shape, spe)
    template = {"states": net.init(jax.random.key(int(config.get("seed", 0)))),
                "step": jnp.zeros((), jnp.int32)}
    ckpt = Checkpointer(workdir)
    epoch = ckpt.latest_epoch()
    if epoch is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    out = ckpt.restore(epoch, template)
    ckpt.close()
    return net, out["states"], ds


class SequentialStep:
    """Sequential AL's step for :func:`train_epoch`: ``(states, x, labels) -> (states, metrics)``.

    One jitted whole-network step (every block's local update in order, the computation
    the one-stage pipeline runs), states donated and kept on one device. :meth:`place`
    puts the states there with the sharding the step gives its outputs: states that arrive
    uncommitted (a fresh ``net.init``, a restored checkpoint) would otherwise compile the
    step twice, once for them and once for its own outputs, the second time inside the
    first epoch's timed steps (issue 27: 1.5 s of a 3-epoch al_mlp run).
    :meth:`inputs` prepares the host batches ahead of their steps (a prefetch thread) and
    leaves them on the host: the jitted call transfers them, as the pipeline engine's does
    (a ``device_put`` in the thread cost ~5 % of al_mlp's step, issue 27).
    """

    def __init__(self, net: ALNetwork, device: jax.Device | None = None):
        self.mesh = data_mesh([device if device is not None else jax.local_devices()[0]])
        self._step = jax.jit(functools.partial(train_step, net), donate_argnums=0)

    def place(self, states: Any) -> Any:
        """``states`` on the step's device, sharded as the step returns them."""
        return jax.device_put(states, replicated(self.mesh))

    def inputs(self, batches: Iterable[dict]) -> Iterator[dict]:
        return prefetch_to_device(batches, None)

    def __call__(self, states: Any, x: Any, labels: Any) -> tuple[Any, dict]:
        return self._step(states, x, labels)


@dataclasses.dataclass
class EpochStats:
    """What :func:`train_epoch` measured: ``step`` (global, after the epoch), ``steps``
    (this epoch's), ``sums`` (per metric, float64 sums of the steps' float32 values),
    ``timed_samples`` and ``seconds`` (every step but the first, which may compile)."""

    step: int
    steps: int
    sums: dict
    timed_samples: int
    seconds: float


def train_epoch(step_fn: Any, states: Any, batches: Iterable[dict], *, step: int = 0,
                epoch: int = 0, bar: Any = None) -> tuple[Any, EpochStats]:
    """One epoch of ``step_fn`` (:class:`SequentialStep` or the pipeline's ``PipelinedStep``)
    over host ``batches``; returns the trained states and :class:`EpochStats`.

    The host never waits for the step it has just dispatched: step t's metrics are read
    (checked, summed, shown) after step t + 1 is dispatched, so the next step is queued
    while the host reads, as the pipeline engine does. The first step of the epoch is
    waited for before the clock starts (it may compile). A non-finite associated loss
    raises ``FloatingPointError`` naming its step and epoch (at most one step later; no
    checkpoint is written in between).
    """
    sums: dict[str, float] = {}
    n_seen, timed, t0, pending = 0, 0, None, None

    def absorb(item):
        nonlocal n_seen
        at, m = item
        m = jax.device_get(m)
        if not math.isfinite(float(m["assoc_loss"])):
            raise FloatingPointError(f"AL associated loss is {m['assoc_loss']} at step {at} "
                                     f"(epoch {epoch + 1}); lower the lr")
        n_seen += 1
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if bar is not None:
            bar.set_postfix(assoc=f"{sums['assoc_loss'] / n_seen:.4f}",
                            ae=f"{sums['ae_loss'] / n_seen:.4f}", refresh=False)

    inputs = step_fn.inputs(batches) if hasattr(step_fn, "inputs") else batches
    for batch in inputs:
        states, m = step_fn(states, batch["image"], batch["label"])
        step += 1
        if pending is not None:
            absorb(pending)
        pending = (step, m)
        if t0 is None:  # the epoch's first step (compiles in a run's first epoch): not timed
            absorb(pending)
            pending = None
            t0 = time.perf_counter()
        else:
            timed += len(batch["label"])
        if bar is not None:
            bar.update(1)
    if pending is not None:
        absorb(pending)
    if hasattr(step_fn, "finish"):  # the pipeline drains once per epoch
        states = step_fn.finish()
    else:
        states = jax.block_until_ready(states)
    seconds = time.perf_counter() - t0 if t0 is not None else 0.0
    return states, EpochStats(step, n_seen, sums, timed, seconds)


def train_and_evaluate(config: Any, workdir: str, *, dataset: Any = None) -> dict:
    """Trains AL model ``config.model`` and writes metrics.jsonl / results.json / curves.png."""
    os.makedirs(workdir, exist_ok=True)
    wall0 = time.perf_counter()
    ds = dataset if dataset is not None else setup.create_dataset(config)
    info, bs, epochs = ds.info, int(config.batch_size), int(config.epochs)
    spe = setup.steps_per_epoch(ds, bs)  # ConfigError for a batch larger than the data
    if spe < 1:
        raise ValueError(f"config.batch_size={bs} exceeds the {info.num_train} training examples")
    net = build(config, info.num_classes, info.image_shape, spe)
    seed = int(config.get("seed", 0))
    ckpt_state = {"states": net.init(jax.random.key(seed)), "step": jnp.zeros((), jnp.int32)}
    counts = param_counts(net, ckpt_state["states"])
    ckpt = Checkpointer(workdir, int(config.get("checkpoint_keep", 3)))
    writer = report.MetricsWriter(workdir, tensorboard=bool(config.get("tensorboard", True)))
    start, ckpt_state = ckpt.restore_latest(ckpt_state)  # newest readable checkpoint
    if start:
        logging.info("resuming AL from the checkpoint after epoch %d", start)
    history = writer.truncate(start)
    states, step = ckpt_state["states"], int(ckpt_state["step"])
    if int(config.get("pipeline_stages", 0) or 0):  # device pipeline (alearn.al.pipeline)
        from alearn.al.pipeline.al import PipelinedStep
        step_fn = PipelinedStep(net, states, config)
    else:
        step_fn = SequentialStep(net)
        states = step_fn.place(states)
    timed_samples, train_time = 0, 0.0
    bar = tqdm.tqdm(total=(epochs - start) * spe, unit="step", dynamic_ncols=True,
                    disable=not config.get("progress_bar", True))
    try:
        for epoch in range(start, epochs):
            bar.set_description(f"AL epoch {epoch + 1}/{epochs}")
            t_epoch = time.perf_counter()
            states, stats = train_epoch(step_fn, states, ds.batches("train", bs, epoch=epoch),
                                        step=step, epoch=epoch, bar=bar)
            step, sums, n_seen = stats.step, stats.sums, stats.steps
            timed_samples += stats.timed_samples
            train_time += stats.seconds
            record = {"epoch": epoch + 1, "step": step,
                      **{f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()},
                      "test_accuracy": accuracy(net, states, ds, "test"),
                      "epoch_time_s": time.perf_counter() - t_epoch}
            if config.get("eval_train", True):
                record["train_accuracy"] = accuracy(net, states, ds, "train")
            writer.write(record)
            history.append(record)
            ckpt.save(epoch + 1, {"states": states, "step": jnp.asarray(step, jnp.int32)})
            logging.info("AL epoch %d/%d: %s", epoch + 1, epochs, record)
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    final = history[-1] if history else {}
    results = {
        "rule": "al", "model": str(config.model), "dataset": str(config.dataset),
        "epochs": epochs, "steps": step,
        "test_accuracy": final.get("test_accuracy"),
        "train_accuracy": final.get("train_accuracy"),
        "best_test_accuracy": max((r["test_accuracy"] for r in history), default=None),
        "train_samples_per_second": timed_samples / train_time if train_time > 0 else None,
        "num_params": counts["effective"], "effective_params": counts["effective"],
        "affiliated_params": counts["affiliated"], "total_params": counts["total"],
        "num_blocks": len(net.blocks), "resumed_from_epoch": start,
        "wall_time_s": time.perf_counter() - wall0,
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
    }
    report.write_results(workdir, results)
    report.plot_curves(history, os.path.join(workdir, "curves.png"),
                       title=f"al / {config.model} / {config.dataset}")
    return results
