"""Orbax checkpoints of the ``TrainState``, one per finished epoch, with resume.

Checkpoints live in ``<workdir>/checkpoints/<epoch>`` where ``<epoch>`` counts finished
epochs. A run whose workdir already holds a checkpoint continues from the newest one; the
data order is a pure function of (seed, epoch), so an interrupted and resumed run ends with
the same state as an uninterrupted one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores ``TrainState`` pytrees under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        """Number of finished epochs in the newest checkpoint, or None if there is none."""
        return self._manager.latest_step()

    def all_epochs(self) -> list[int]:
        """Finished-epoch counts of all kept checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: Any) -> None:
        """Saves ``state`` as the checkpoint after ``epoch`` finished epochs (async write)."""
        self._manager.save(epoch, args=ocp.args.StandardSave(state))

    def restore(self, epoch: int, template: Any) -> Any:
        """Restores the checkpoint ``epoch`` into the structure, dtypes and shardings of
        ``template`` (e.g. a freshly created ``TrainState``)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def wait(self) -> None:
        """Blocks until pending asynchronous writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
