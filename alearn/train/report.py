"""Run outputs in a workdir: ``metrics.jsonl``, TensorBoard events, ``results.json``,
``curves.png``.

Only process 0 of a multi-process run writes (the others read). Files are replaced
atomically (written aside, then renamed), and a ``metrics.jsonl`` line cut short by a kill is
dropped on the next read, so a SIGKILL at any instant leaves readable outputs.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import jax
from absl import logging


def _writer() -> bool:
    """Whether this process writes run outputs (process 0 only)."""
    return jax.process_index() == 0


def atomic_write_json(path: str, obj: Any, **kwargs) -> None:
    """Writes ``obj`` as JSON to ``path`` via a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, **kwargs)
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else str(f)


class MetricsWriter:
    """Appends one JSON object per epoch to ``<workdir>/metrics.jsonl`` (and TensorBoard)."""

    def __init__(self, workdir: str, tensorboard: bool = True, filename: str = "metrics.jsonl"):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, filename)
        self._tb = None
        self._enabled = _writer()
        if tensorboard and self._enabled:
            from tensorboardX import SummaryWriter  # imported lazily: optional output
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def history(self) -> list[dict]:
        """All records written so far (in order)."""
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a killed process
                    logging.warning("dropping an unreadable line of %s", self.path)
        return records

    def truncate(self, epoch: int) -> list[dict]:
        """Keeps only records with ``record["epoch"] <= epoch`` (used on resume)."""
        kept = [r for r in self.history() if r.get("epoch", 0) <= epoch]
        if self._enabled:
            tmp = f"{self.path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, self.path)
        return kept

    def write(self, record: dict) -> None:
        """Appends ``record`` (must hold ``"epoch"``) and logs its scalars to TensorBoard."""
        record = _jsonable(record)
        if not self._enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_results(workdir: str, results: dict) -> str:
    """Writes ``<workdir>/results.json``; returns its path."""
    path = os.path.join(workdir, "results.json")
    if _writer():
        atomic_write_json(path, results, indent=2, sort_keys=True)
    return path


def plot_curves(history: Sequence[dict], path: str, title: str = "") -> str | None:
    """Accuracy and loss per epoch (train and test) as a PNG (matplotlib Agg)."""
    if not history or not _writer():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for split in ("train", "test"):
            key = f"{split}_{metric}"
            ys = [r.get(key) for r in history]
            if all(isinstance(y, (int, float)) for y in ys):
                ax.plot(epochs, ys, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    logging.info("wrote %s", path)
    return path
