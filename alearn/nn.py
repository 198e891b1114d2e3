"""Drop-in replacements for ``flax.linen`` functions, for use in your own models.

- :func:`max_pool`: ``flax.linen.max_pool`` with the same results and gradients bit for bit
  (ties included) and a cheaper gradient on CPU for non-overlapping windows (the strided
  slices of each window instead of XLA's ``select_and_scatter``; docs/notes/perf.md).
- :func:`variance_scaling`, :data:`he_normal`: the ``flax.linen.initializers`` of the same
  names, drawn as one flat vector and reshaped: the same distribution, several times faster
  to compile for conv kernels on CPU (docs/notes/models.md, "Init").
"""

from alearn._layers.initializers import he_normal, variance_scaling
from alearn._layers.pool import max_pool

__all__ = ["he_normal", "max_pool", "variance_scaling"]
