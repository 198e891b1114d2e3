"""Device mesh and block grouping of the AL pipeline, with errors naming devices and blocks."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

STAGE, DATA = "stage", "data"


def _describe(devices: Sequence[jax.Device]) -> str:
    names = [f"{d.platform}:{d.id}" for d in devices]
    return ", ".join(names) if names else "(none)"


def make_mesh(stages: int, data: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(stage[, data])`` mesh over the first ``stages * data`` devices, in order.

    Devices are taken in ``jax.devices()`` order (process by process), so consecutive stages
    sit on the same process and the stage axis spans processes in a multi-host run. Axes are
    ``AxisType.Auto``. Without a data axis (``data == 1``) the mesh has only ``stage``.

    Raises:
      ValueError: fewer devices than ``stages * data``, naming the devices there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if stages < 1 or data < 1:
        raise ValueError(f"pipeline_stages and data must be >= 1; got stages={stages}, "
                         f"data={data}")
    need = stages * data
    if need > len(devices):
        raise ValueError(
            f"pipeline_stages={stages} x data={data} needs {need} devices, but only "
            f"{len(devices)} are available ({_describe(devices)}); use at most "
            f"{len(devices) // data} stages, or on CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={need} before JAX is imported")
    grid = np.array(devices[:need], dtype=object)
    if data == 1:
        return Mesh(grid.reshape(stages), (STAGE,), axis_types=(AxisType.Auto,))
    return Mesh(grid.reshape(stages, data), (STAGE, DATA), axis_types=(AxisType.Auto,) * 2)


def group_blocks(block_names: Sequence[str], stages: int,
                 blocks_per_stage: Sequence[int] | None = None) -> tuple[tuple[int, ...], ...]:
    """Consecutive block indices of each stage.

    Default: ``len(blocks) / stages`` blocks per stage (must divide); ``blocks_per_stage``
    gives the counts explicitly (each >= 1, summing to the number of blocks).

    Raises:
      ValueError: naming the blocks and the stage count when they cannot be grouped.
    """
    n = len(block_names)
    listed = ", ".join(block_names)
    if stages > n:
        raise ValueError(f"pipeline_stages={stages} exceeds the {n} blocks ({listed}): every "
                         f"stage needs at least one block; use at most {n} stages")
    if blocks_per_stage is None:
        if n % stages:
            hint = [n // stages + (1 if i < n % stages else 0) for i in range(stages)]
            raise ValueError(
                f"pipeline_stages={stages} does not divide the {n} blocks ({listed}); choose a "
                f"divisor of {n} or pass blocks_per_stage explicitly, e.g. {tuple(hint)}")
        blocks_per_stage = [n // stages] * stages
    counts = [int(c) for c in blocks_per_stage]
    if len(counts) != stages or min(counts) < 1 or sum(counts) != n:
        raise ValueError(f"blocks_per_stage={tuple(counts)} must give {stages} stages of >= 1 "
                         f"block summing to the {n} blocks ({listed})")
    bounds = np.cumsum([0] + counts)
    return tuple(tuple(range(bounds[i], bounds[i + 1])) for i in range(stages))
