"""Typed exceptions of a training run; the experiment binaries translate them.

- :class:`ConfigError` (a ``ValueError``): the user's configuration cannot work (unknown name,
  out-of-range value, missing data). Raised before any data is read or anything compiles.
  Binaries print its message and exit with status 2 (usage error), without a traceback.
- :class:`CheckpointError`: the workdir holds checkpoints of which none can be restored;
  the message names the directory and the choices.
- :class:`TrainingInterrupted`: SIGTERM / SIGINT stopped the run at a clean point (pending
  checkpoint writes finished); the same command resumes it.
- ``alearn.train.TrainingDivergedError`` (loop.py): the loss became NaN / infinite.
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the accepted values."""


class CheckpointError(RuntimeError):
    """No checkpoint in a workdir can be restored (all of them are unreadable)."""


class TrainingInterrupted(Exception):
    """The run was stopped by a signal; checkpoints on disk are complete and resumable."""

    def __init__(self, signum: int, workdir: str, last_epoch: int | None):
        self.signum, self.workdir, self.last_epoch = signum, workdir, last_epoch
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        saved = (f"the newest checkpoint (after epoch {last_epoch}) is complete"
                 if last_epoch else "no epoch had finished, nothing was saved")
        super().__init__(f"training stopped by {name}; {saved} in {workdir}. "
                         "Resume with the same command.")

    @property
    def exit_code(self) -> int:
        """The shell convention for death by a signal: 128 + signal number."""
        return 128 + int(self.signum)
