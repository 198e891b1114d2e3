"""Orbax checkpoints of the training state, one per finished epoch, safe against SIGKILL.

Checkpoints live in ``<workdir>/checkpoints/<epoch>`` where ``<epoch>`` counts finished
epochs. A run whose workdir already holds a checkpoint continues from the newest one; the
data order is a pure function of (seed, epoch), so an interrupted and resumed run ends with
the same state as an uninterrupted one.

Kill safety: orbax writes a save into ``<epoch>.orbax-checkpoint-tmp`` and renames it when
complete, so a finished ``<epoch>`` directory is a complete checkpoint. Temporary
directories of a killed save are deleted when the manager opens (``cleanup_tmp_directories``);
a complete checkpoint that cannot be read (damaged on disk) is moved to
``<workdir>/corrupted_checkpoints/`` with a warning naming it, and the next older one is
used; if none can be read, :class:`~alearn.train.errors.CheckpointError` names the directory
and the choices.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from alearn.train import interrupt
from alearn.train.errors import CheckpointError


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


class Checkpointer:
    """Saves and restores state pytrees under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 3):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self._max_to_keep = max_to_keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True,
                                               cleanup_tmp_directories=True)
        return ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        """Number of finished epochs in the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_epochs(self) -> list[int]:
        """Finished-epoch counts of all kept complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: Any) -> None:
        """Saves ``state`` as the checkpoint after ``epoch`` finished epochs.

        The device-to-host copy is synchronous (a SIGTERM waits for it); the file writes
        continue in the background until the next ``save``, ``wait`` or ``close``.
        """
        with interrupt.critical():
            self._manager.save(epoch, args=ocp.args.StandardSave(state))

    def restore(self, epoch: int, template: Any) -> Any:
        """Restores the checkpoint ``epoch`` into the structure, dtypes and shardings of
        ``template`` (e.g. a freshly created ``TrainState``).

        A checkpoint whose feedback weights have the layout of alearn's older hand-written
        models (DFA receivers placed by the model; ``alearn.models._convert``) is restored
        with that layout and converted, with a warning.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            return self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except Exception:  # noqa: BLE001 - orbax raises many types on a structure mismatch
            state = self._restore_old_layout(epoch, template)
            if state is None:
                raise
            return state

    def _restore_old_layout(self, epoch: int, template: Any) -> Any | None:
        """The checkpoint restored with its old feedback layout, then converted; None when
        it does not hold one."""
        from alearn.models import _convert  # pylint: disable=import-outside-toplevel
        fixed = getattr(template, "fixed", None)
        if not isinstance(fixed, dict) or "feedback" not in fixed:
            return None
        try:
            raw = self._manager.restore(epoch, args=ocp.args.StandardRestore())
        except Exception:  # noqa: BLE001
            return None
        old = (raw.get("fixed") or {}).get("feedback")
        if not _convert.is_old_layout(old):
            return None
        old_abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, old)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                template.replace(fixed={**fixed, "feedback": None}))
        abstract = abstract.replace(fixed={**abstract.fixed, "feedback": old_abstract})
        state = self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        feedback, notes = _convert.convert_feedback(state.fixed["feedback"], fixed["feedback"])
        logging.warning("checkpoint %s: feedback weights in the layout of alearn's older "
                        "hand-written models, converted (%s)",
                        os.path.join(self.directory, str(epoch)), "; ".join(notes) or "renamed")
        return state.replace(fixed={**state.fixed, "feedback": feedback})

    def restore_latest(self, template: Any) -> tuple[int, Any]:
        """``(epoch, state)`` of the newest checkpoint that restores; ``(0, template)`` if
        there is none. Unreadable newer checkpoints are moved aside with a warning.

        Raises:
          CheckpointError: checkpoints exist but none of them can be read.
        """
        epochs = sorted(self.all_epochs(), reverse=True)
        failures = []
        for epoch in epochs:
            try:
                state = self.restore(epoch, template)
            except Exception as e:  # orbax raises many types for damaged files  # noqa: BLE001
                path = os.path.join(self.directory, str(epoch))
                logging.warning("checkpoint %s cannot be read (%s: %s); trying an older one",
                                path, type(e).__name__, str(e).splitlines()[0][:200])
                failures.append((epoch, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
                continue
            if failures:
                self._set_aside([e for e, _ in failures])
            return epoch, state
        if failures:
            listed = "; ".join(f"epoch {e}: {msg}" for e, msg in failures)
            raise CheckpointError(
                f"none of the {len(failures)} checkpoints in {self.directory} can be restored "
                f"({listed}). If the run's config changed, use a new --workdir; to start this "
                f"run over, delete {self.directory} (or pass --config.overwrite=True).")
        return 0, template

    def _set_aside(self, epochs: list[int]) -> None:
        """Moves unreadable checkpoints to ``<workdir>/corrupted_checkpoints/`` (process 0)."""
        self._manager.close()
        if jax.process_index() == 0:
            dest_root = os.path.join(self.workdir, "corrupted_checkpoints")
            os.makedirs(dest_root, exist_ok=True)
            for epoch in epochs:
                src = os.path.join(self.directory, str(epoch))
                dest = os.path.join(dest_root, f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.move(src, dest)
                logging.warning("moved unreadable checkpoint %s to %s", src, dest)
        _sync("alearn_checkpoint_set_aside")
        self._manager = self._open()

    def wait(self) -> None:
        """Blocks until pending asynchronous writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
