"""SIGTERM / SIGINT during training: stop at a clean point, never inside a checkpoint save.

:func:`handle_signals` installs handlers for the duration of a run (main thread only). A
signal outside a critical section stops the run at once; inside one (a checkpoint save's
synchronous part, :func:`critical`) the stop waits until the section ends. The loop's
``finally`` blocks then finish pending asynchronous checkpoint writes, and the run ends
with :class:`~alearn.train.errors.TrainingInterrupted`. A second signal stops immediately.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from alearn.train.errors import TrainingInterrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(BaseException):
    """Raised in the main thread by the handler (BaseException: libraries don't swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Guard:
    depth = 0
    pending: int | None = None
    stopping = False


_GUARD = _Guard()


def _handler(signum, frame):  # noqa: ARG001
    if _GUARD.stopping or _GUARD.depth == 0:
        _GUARD.stopping = True
        raise _Stop(signum)
    _GUARD.stopping, _GUARD.pending = True, signum


@contextlib.contextmanager
def critical():
    """A section a signal must not interrupt (the stop is delivered when it ends)."""
    _GUARD.depth += 1
    try:
        yield
    finally:
        _GUARD.depth -= 1
    if _GUARD.depth == 0 and _GUARD.pending is not None:
        signum, _GUARD.pending = _GUARD.pending, None
        raise _Stop(signum)


def _finished_epochs(workdir: str) -> int | None:
    d = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in (os.listdir(d) if os.path.isdir(d) else []) if n.isdigit()]
    return max(steps) if steps else None


@contextlib.contextmanager
def handle_signals(workdir: str):
    """Turns SIGINT / SIGTERM inside the block into :class:`TrainingInterrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    _GUARD.depth, _GUARD.pending, _GUARD.stopping = 0, None, False
    try:
        yield
    except _Stop as stop:
        raise TrainingInterrupted(stop.signum, workdir, _finished_epochs(workdir)) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _GUARD.depth, _GUARD.pending, _GUARD.stopping = 0, None, False
