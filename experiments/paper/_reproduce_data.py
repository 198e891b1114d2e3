"""Whether the datasets of a reproduction's runs are on disk (``reproduce``'s data check).

Uses alearn.data's cheap on-disk checks: no TFDS import, nothing is read or downloaded.
"""

from __future__ import annotations

import sys
from typing import Sequence

from experiments.paper import tables
from experiments.paper.tables import Run


class DatasetMissingError(SystemExit):
    """A dataset the requested runs need is not prepared; the message says how to prepare it."""


def check_datasets(runs: Sequence[Run], data_dir: str | None) -> None:
    """Raises :class:`DatasetMissingError` naming each missing dataset and its command.

    Uses alearn.data's cheap on-disk checks (no TFDS import, nothing is read or downloaded).
    """
    problems = dataset_problems(runs, data_dir)
    if problems:
        raise DatasetMissingError("No run was started; prepare these datasets first:\n"
                                  + "\n".join(problems))


def dataset_problems(runs: Sequence[Run], data_dir: str | None) -> list[str]:
    """One message per dataset of ``runs`` that is not on disk, each with the command that
    prepares it: TFDS builds, Tiny ImageNet, and Fashion-MNIST (the cpu scale's data:
    ``apt-get install dataset-fashion-mnist``)."""
    from alearn.data import idx, specs, tfds_source, tiny_imagenet

    root = tfds_source.resolve_data_dir(data_dir or None)
    problems = []
    for name in sorted({r.config.dataset for r in runs if r.config is not None}):
        spec = specs.SPECS[name]
        if spec.kind == "idx":  # fashion_mnist: data_dir, then the Debian package's folder
            try:
                idx.locate(data_dir or None)
            except FileNotFoundError as e:  # this binary's flag is --data_dir
                problems.append(str(e).replace("--config.data_dir=", "--data_dir="))
        elif spec.kind in specs.TFDS_KINDS:  # images and text
            try:
                tfds_source.check_prepared(spec.name, spec.tfds_name, root, spec.build_extras)
            except tfds_source.DatasetNotFoundError as e:
                problems.append(str(e))
        elif spec.kind == "tiny_imagenet":
            missing = [f for f in tiny_imagenet.FILES
                       if not (root / tiny_imagenet.DIRNAME / f).is_file()]
            if missing:
                problems.append(f"dataset 'tiny_imagenet' is not prepared under data_dir {root} "
                                f"(missing {', '.join(missing)}). Run:\n  "
                                f"{tiny_imagenet.prepare_command(root)}")
    return problems


def print_data_status(table_ids: Sequence[str], scale: str, seeds, data_dir: str | None,
                      out=None) -> list[str]:
    """After a dry run's listing: whether the runs' datasets are on disk, with the command
    that prepares each missing one (a real run would stop at once). Returns the problems."""
    out = sys.stdout if out is None else out
    runs = [r for t in table_ids for r in tables.runs(t, scale, seeds)]
    names = sorted({r.config.dataset for r in runs if r.config is not None})
    problems = dataset_problems(runs, data_dir)
    if not problems:
        print(f"data: ready ({', '.join(names) or 'none needed'})", file=out)
    for p in problems:
        print(f"data: NOT READY: {p}", file=out)
    if problems:
        print("data: prepare the datasets above first; a run without them stops before "
              "training", file=out)
    return problems
