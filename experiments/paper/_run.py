"""``Run``, the unit of work of a table, and the scales: the bottom of the reproduction
machinery (``tables`` and every table builder import it; it imports none of them)."""

from __future__ import annotations

import dataclasses
from typing import Any

SCALES = ("cpu", "paper")


@dataclasses.dataclass
class Run:
    """One unit of work, written to ``<workdir>/<table>/<name>/``.

    kind: ``train`` (``alearn.train.train_and_evaluate``), ``foa`` (train, then the W-vs-C
    angle of every epoch's checkpoint, Fig. 3.2), ``al_compare`` (AL and its BP twin, then
    Sec. 3.3 metafeature distances and t-SNE), ``memory`` (Ch. 6 access model and XLA step
    memory), ``pipeline`` (AL pipeline schedule and modelled makespan).
    """

    name: str
    row: str
    col: str
    kind: str = "train"
    config: Any = None
    options: dict = dataclasses.field(default_factory=dict)
    cell: str = ""  # the table cell this run is one seed of ("" = ``name``)
    seed: int | None = None

    @property
    def cell_name(self) -> str:
        return self.cell or self.name

    def setup(self) -> str:
        """A one-line description of what ours ran (model, width, data, epochs)."""
        c = self.config
        if c is None:
            return ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        w = c.model_kwargs.get("width_multiplier", 1.0)
        n = (c.get("dataset_options", None) or {}).get("train_examples", None)
        text = (f"{c.model} x{w:g}, {c.dataset}" + (f" ({n:,} train)" if n else "")
                + f", {c.epochs} ep, lr {c.learning_rate:.3g}")
        if str(c.model).startswith("al_") and c.rule != "al":  # which BP baseline this row is
            kind = c.model_kwargs.get("baseline", "matched")
            text += (", BP baseline: authors' code (not parameter-matched)" if kind == "authors"
                     else ", BP baseline: parameter-matched twin")
        if c.get("preprocessing", None):
            text += f", preprocessing {c.preprocessing}"
        return text
