"""``reproduce``'s ``al_seq`` table: AL LSTM / Transformer vs their parameter-matched BP twins.

One run per cell (seeds are added by the table registry). cpu scale: sequential
Fashion-MNIST (28 rows of 28 pixels) with the ``cpu`` cell of configs/al_seq.py (width 32,
8 epochs; ~2 min per run on 2 cores; 2 epochs until issue 26 left AL still rising 30-39 pt
per epoch). paper scale: the byte-token text sets the
data layer provides (AG News, IMDB, SST-2) at width 128.
"""

from __future__ import annotations

from experiments.configs import al_seq as cfg
from experiments.paper._run import SCALES, Run

CPU_DATASETS = ("fashion_mnist",)
PAPER_DATASETS = ("ag_news_subset", "imdb_reviews", "sst2")
NAMES = {"fashion_mnist": "sequential Fashion-MNIST", "mnist5k": "sequential mnist5k",
         "ag_news_subset": "AG News", "imdb_reviews": "IMDB", "sst2": "SST-2",
         "lstm": "LSTM", "transformer": "Transformer"}


def al_seq(scale: str) -> list:
    """The runs of table ``al_seq`` at ``scale`` ("cpu" or "paper")."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    cpu = scale == "cpu"
    out = []
    for d in CPU_DATASETS if cpu else PAPER_DATASETS:
        for m in cfg.MODELS:
            for method in ("bp", "al"):
                c = cfg.get_config(f"{m},{d}" + (",cpu" if cpu else "")
                                   + (",bp" if method == "bp" else ""))
                c.progress_bar, c.tensorboard = False, not cpu
                name = f"{m}_{method}" if cpu else f"{m}_{d}_{method}"
                out.append(Run(name, f"{NAMES[d]} / {NAMES[m]}", method.upper(), config=c))
    return out
