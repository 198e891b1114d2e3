"""``train_and_evaluate(config, workdir)``: the epoch loop of a rule-pluggable model.

Before anything is read or compiled, the config is validated (``validate.py``) and the
workdir inspected (``workdir.py``: a finished run of the same config is reported, not
retrained). Per epoch: train on every batch (data-parallel jitted step), evaluate on the
test split, append metrics to ``metrics.jsonl`` / TensorBoard, save an orbax checkpoint. A
workdir that already holds a checkpoint continues from the newest readable one. A non-finite
training loss raises :class:`TrainingDivergedError` before anything of that epoch is saved,
so the newest checkpoint is the last good state; SIGTERM / SIGINT end the run at a clean
point with :class:`~alearn.train.errors.TrainingInterrupted`. At the end: ``results.json``
and ``curves.png`` (process 0 writes).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

import alearn
from alearn.analysis import alignment
from alearn.train import interrupt, report, setup, validate
from alearn.train import workdir as workdir_lib
from alearn.train.checkpoint import Checkpointer
from alearn.train.optim import optimizer_from_config
from alearn.train.sharding import (data_mesh, pad_batch, padded_size, prefetch_to_device,
                                   replicate, shard_batch)
from alearn.train.state import create_train_state, num_params
from alearn.train.step import make_eval_step, make_train_step


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, loss: float, step: int, epoch: int, checkpoint_epoch: int | None,
                 workdir: str):
        self.loss, self.step, self.epoch = loss, step, epoch
        self.checkpoint_epoch = checkpoint_epoch
        saved = (f"the last good checkpoint (after epoch {checkpoint_epoch}) is in "
                 f"{workdir}/checkpoints" if checkpoint_epoch else "no checkpoint was saved")
        super().__init__(
            f"training loss is {loss} at step {step} (epoch {epoch}); stopped, {saved}. "
            "Lower the learning rate or check the data.")


def train_and_evaluate(config: Any, workdir: str, *, dataset: Any = None) -> dict:
    """Trains ``config.model`` with ``config.rule`` on ``config.dataset``; returns results.

    Rule families with their own trainer (``setup.FAMILY_TRAINERS``, e.g. ``"al"``) are
    dispatched to it. ``dataset`` replaces ``alearn.data.create`` (tests, custom data).
    A workdir holding this finished run returns its stored results (with
    ``"already_finished": True``) unless ``config.overwrite``.

    Raises:
      ConfigError: a bad config value (before anything is read or compiled).
      CheckpointError: the workdir's checkpoints exist but none can be read.
      TrainingInterrupted: SIGTERM / SIGINT; rerunning the same call resumes.
      TrainingDivergedError: the training loss became NaN / infinite.
    """
    validate.validate_config(config)
    config = validate.resolve_config(config)  # rule="al", model="mlp" -> "al_mlp"
    finished = workdir_lib.prepare(config, workdir)
    if finished is not None:
        return finished
    with interrupt.handle_signals(workdir):
        trainer = setup.family_trainer(config.rule)
        if trainer is not None:
            return trainer(config, workdir, dataset=dataset)
        return _train_rule_pluggable(config, workdir, dataset)


def _train_epoch(ctx: dict, state, epoch: int, bar) -> tuple[Any, dict]:
    """One epoch of training; checks each step's loss one step late (keeps dispatch async)."""
    ds, mesh, bs = ctx["dataset"], ctx["mesh"], ctx["batch_size"]
    sums = {"loss": 0.0, "accuracy": 0.0, "n": 0}
    pending = None
    t_start = time.perf_counter()

    def check(item):
        step, n, metrics = item
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise TrainingDivergedError(loss, step, epoch + 1, ctx["last_ckpt"], ctx["workdir"])
        sums["loss"] += loss * n
        sums["accuracy"] += float(metrics["accuracy"]) * n
        sums["n"] += n
        if ctx["t0"] is None:  # the first (compiling) step is left out of the throughput
            ctx["t0"] = time.perf_counter()
        else:
            ctx["timed_samples"] += n
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.4f}",
                        acc=f"{sums['accuracy'] / sums['n']:.4f}", refresh=False)

    for batch in prefetch_to_device(ds.batches("train", bs, epoch=epoch), mesh):
        n = len(batch["label"])
        state, metrics = ctx["train_step"](state, batch)
        ctx["step"] += 1
        if ctx["align_every"] and ctx["step"] % ctx["align_every"] == 0:
            ctx["align_log"](state)
        if pending is not None:
            check(pending)
        pending = (ctx["step"], n, metrics)
    if pending is not None:
        check(pending)
    if ctx["t0"] is not None:  # training time only: no eval, checkpoint or compile time
        ctx["train_time"] += time.perf_counter() - max(t_start, ctx["t0"])
    n = max(sums["n"], 1)
    return state, {"train_loss": sums["loss"] / n, "train_accuracy": sums["accuracy"] / n}


def _evaluate(ctx: dict, state) -> dict:
    mesh, bs = ctx["mesh"], ctx["eval_batch_size"]
    size = padded_size(bs, mesh)
    total = None
    for batch in ctx["dataset"].batches("test", bs):
        out = ctx["eval_step"](state, shard_batch(pad_batch(batch, size), mesh))
        total = out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
    total = jax.device_get(total)
    count = max(float(total["count"]), 1.0)
    return {"test_loss": float(total["loss_sum"]) / count,
            "test_accuracy": float(total["correct"]) / count}


def _write_description(model: Any, rule: Any, image_shape: tuple, workdir: str) -> None:
    """``describe.txt``: for a wrapped Flax model, every parameter with the rule that
    updates it (``alearn.describe``; an abstract trace, nothing is compiled)."""
    if not isinstance(model, alearn.Wrapped) or jax.process_index() != 0:
        return
    table = alearn.describe(model, rule, np.zeros((1, *image_shape), np.float32))
    with open(os.path.join(workdir, "describe.txt"), "w", encoding="utf-8") as f:
        f.write(str(table) + "\n")


def _train_rule_pluggable(config: Any, workdir: str, dataset: Any) -> dict:
    os.makedirs(workdir, exist_ok=True)
    wall0 = time.perf_counter()
    ds = dataset if dataset is not None else setup.create_dataset(config)
    info = ds.info
    model, rule = setup.create_model_and_rule(config, info.num_classes)
    batch_size, epochs = int(config.batch_size), int(config.epochs)
    steps_per_epoch = setup.steps_per_epoch(ds, batch_size)
    optimizer = optimizer_from_config(config, rule, steps_per_epoch)
    state = create_train_state(model, rule, optimizer, jax.random.key(int(config.get("seed", 0))),
                               np.zeros((1, *info.image_shape), np.float32))

    _write_description(model, rule, info.image_shape, workdir)
    mesh = data_mesh()
    state = replicate(state, mesh)
    ckpt = Checkpointer(workdir, int(config.get("checkpoint_keep", 3)))
    writer = report.MetricsWriter(workdir, tensorboard=bool(config.get("tensorboard", True)))
    start, state = ckpt.restore_latest(state)
    if start:
        logging.info("resuming from the checkpoint after epoch %d in %s", start, ckpt.directory)
    history = writer.truncate(start)
    # Optional alignment diagnostics (config.alignment): angles on one fixed training batch.
    align_batch = (next(iter(ds.batches("train", batch_size, epoch=0, augment=False)))
                   if config.get("alignment", False) else None)
    align_every = int(config.get("alignment_every", 0)) if align_batch is not None else 0
    if align_every < 0:
        raise ValueError(f"config.alignment_every={align_every}: use 0 (once per epoch) or a "
                         "positive number of steps")
    align_writer = (report.MetricsWriter(workdir, tensorboard=False, filename="alignment.jsonl")
                    if align_every else None)
    if align_writer is not None:
        align_writer.truncate(start)

    def align_log(st):  # every config.alignment_every steps, to alignment.jsonl
        align_writer.write({"step": ctx["step"], "epoch": ctx["step"] / steps_per_epoch,
                            **alignment.alignment_angles(
            model, rule, jax.device_get(st.variables()), align_batch["image"],
            align_batch["label"])})

    ctx = dict(dataset=ds, mesh=mesh, batch_size=batch_size, workdir=workdir,
               align_every=align_every, align_log=align_log,
               eval_batch_size=int(config.get("eval_batch_size", 1000)),
               train_step=make_train_step(model, rule, optimizer, mesh=mesh,
                                          step_hook=setup.step_hook_for(rule, model)),
               eval_step=make_eval_step(model, rule, mesh=mesh),
               step=int(state.step), last_ckpt=start or None, t0=None, train_time=0.0,
               timed_samples=0)
    align0 = ([{"epoch": 0, **alignment.alignment_angles(  # the untrained net, for the plot
        model, rule, jax.device_get(state.variables()), align_batch["image"],
        align_batch["label"])}] if align_batch is not None and not start else [])
    bar = tqdm.tqdm(total=(epochs - start) * steps_per_epoch, unit="step", dynamic_ncols=True,
                    disable=not config.get("progress_bar", True))
    try:
        for epoch in range(start, epochs):
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            t_epoch = time.perf_counter()
            state, train_metrics = _train_epoch(ctx, state, epoch, bar)
            record = {"epoch": epoch + 1, "step": ctx["step"], **train_metrics,
                      **_evaluate(ctx, state), "epoch_time_s": time.perf_counter() - t_epoch}
            if align_batch is not None:
                record.update(alignment.alignment_angles(
                    model, rule, jax.device_get(state.variables()), align_batch["image"],
                    align_batch["label"]))
            writer.write(record)
            history.append(record)
            ckpt.save(epoch + 1, state)
            ctx["last_ckpt"] = epoch + 1
            logging.info("epoch %d/%d: %s", epoch + 1, epochs, record)
    finally:
        bar.close()
        ckpt.close()
        writer.close()

    final = history[-1] if history else {}
    elapsed = ctx["train_time"]
    results = {
        "rule": str(config.rule), "model": str(config.model), "dataset": str(config.dataset),
        "epochs": epochs, "steps": ctx["step"],
        "test_accuracy": final.get("test_accuracy"), "test_loss": final.get("test_loss"),
        "train_accuracy": final.get("train_accuracy"), "train_loss": final.get("train_loss"),
        "best_test_accuracy": max((r["test_accuracy"] for r in history), default=None),
        "train_samples_per_second": ctx["timed_samples"] / elapsed if elapsed > 0 else None,
        "num_params": num_params(state), "num_devices": mesh.size,
        "resumed_from_epoch": start, "wall_time_s": time.perf_counter() - wall0,
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
    }
    report.write_results(workdir, results)
    report.plot_curves(history, os.path.join(workdir, "curves.png"),
                       title=f"{config.rule} / {config.model} / {config.dataset}")
    if align_batch is not None and jax.process_index() == 0 and any(k.startswith(alignment.UPDATE)
                                       for r in history for k in r):
        steps = align_writer.history() if align_writer is not None else []
        alignment.plot_alignment(
            [{**h, "step": 0} for h in align0] + steps if steps else align0 + history,
            os.path.join(workdir, "alignment.png"), x="step" if steps else "epoch",
            title=f"{config.rule} / {config.model} / {config.dataset}")
    return results
