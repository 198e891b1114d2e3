"""Packing stage states and hand-over activations into fixed-size flat buffers.

The pipeline runs one SPMD program over the ``stage`` mesh axis, so every stage must hold
arrays of one shape. Blocks of an AL network differ in shape (784->1024 vs 1024->1024, conv
stages of different widths), so each stage's state (parameters + optimizer states, any
pytree) is raveled into one flat vector *per dtype* and zero-padded to the longest stage;
the stacked buffer ``[N, L_max]`` is sharded one row per stage. The activations a stage
hands to the next, ``(s_i, y_i)``, are raveled per example into ``[batch, D_max]`` per
dtype. Packing is a pure reshape/concatenate: the arithmetic of a block never sees the
padding, so the pipeline stays bit-compatible with sequential AL.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Buffers = dict  # dtype name -> array


def _dtype_name(x) -> str:
    return jnp.dtype(x.dtype).name


class TreePacker:
    """Ravels one pytree (fixed structure, shapes, dtypes) into per-dtype flat vectors.

    ``lead`` leading dimensions of every leaf are kept (``lead=1`` packs per example: a
    leaf ``[B, *f]`` becomes a slice of ``[B, D]``).
    """

    def __init__(self, example: Any, lead: int = 0):
        leaves, self.treedef = jax.tree.flatten(example)
        self.lead = lead
        self.meta = []  # (dtype name, offset, trailing shape)
        self.sizes: dict[str, int] = {}
        for leaf in leaves:
            shape = tuple(leaf.shape)[lead:]
            name = _dtype_name(leaf)
            off = self.sizes.get(name, 0)
            self.meta.append((name, off, shape))
            self.sizes[name] = off + math.prod(shape)

    def pack(self, tree: Any, lengths: dict[str, int]) -> Buffers:
        """Flat buffers ``{dtype: [*lead, lengths[dtype]]}`` holding ``tree``, zero-padded."""
        leaves = self.treedef.flatten_up_to(tree)
        lead_shape = tuple(leaves[0].shape[:self.lead]) if leaves else ()
        parts: dict[str, list] = {name: [] for name in lengths}
        for leaf, (name, _, shape) in zip(leaves, self.meta):
            parts[name].append(jnp.reshape(leaf, lead_shape + (math.prod(shape),)))
        out = {}
        for name, length in lengths.items():
            used = self.sizes.get(name, 0)
            if used > length:
                raise ValueError(f"buffer of {name} holds {length} values, tree needs {used}")
            pad = jnp.zeros(lead_shape + (length - used,), jnp.dtype(name))
            out[name] = jnp.concatenate(parts[name] + [pad], axis=-1)
        return out

    def pack_into(self, bufs: Buffers, tree: Any, keep: Any = None, old: Any = None
                  ) -> Buffers:
        """``bufs`` with ``tree``'s leaves written at their offsets (``dynamic_update_slice``
        per leaf, no lead dimensions): XLA updates a loop-carried buffer in place instead of
        concatenating a fresh one; the padding keeps its old values. With ``keep`` (a bool
        scalar) and ``old`` (the tree as read before the update, :meth:`unpack` of ``bufs``),
        each leaf is ``where(keep, new, old)``, an elementwise select fused into the write."""
        out = dict(bufs)
        olds = self.treedef.flatten_up_to(old) if keep is not None else None
        for i, (leaf, (name, off, shape)) in enumerate(
                zip(self.treedef.flatten_up_to(tree), self.meta)):
            if keep is not None:
                leaf = jnp.where(keep, leaf, olds[i])
            flat = jnp.reshape(leaf, (math.prod(shape),)).astype(out[name].dtype)
            out[name] = jax.lax.dynamic_update_slice(out[name], flat, (off,))
        return out

    def unpack(self, bufs: Buffers) -> Any:
        """The pytree held in ``bufs`` (inverse of :meth:`pack`)."""
        leaves = []
        for name, off, shape in self.meta:
            buf = bufs[name]
            flat = jax.lax.slice_in_dim(buf, off, off + math.prod(shape), axis=buf.ndim - 1)
            leaves.append(jnp.reshape(flat, buf.shape[:-1] + shape))
        return self.treedef.unflatten(leaves)


def max_lengths(packers: list[TreePacker]) -> dict[str, int]:
    """Per-dtype buffer length fitting every packer (at least 1, so no buffer is empty)."""
    names = sorted({name for p in packers for name in p.sizes})
    return {name: max(1, max(p.sizes.get(name, 0) for p in packers)) for name in names}


def stack_buffers(bufs: list[Buffers]) -> Buffers:
    """``[N, ...]`` buffers from one buffer dict per stage."""
    return {name: jnp.stack([b[name] for b in bufs]) for name in bufs[0]}
