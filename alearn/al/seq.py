"""Sequence layers for the AL LSTM / Transformer models (``alearn.al.Stack`` spec kinds).

A sequence activation is one array ``(B, T, D + 1)``: D features per time step and, in the
last channel, the validity mask (1 = real step, 0 = padding). The mask travels with the
features so that block i > 1 (which never sees the token ids) still masks padding in
attention and pooling; it is never trained (an exact 0/1 copy of block 1's input mask).

Inputs of :class:`SeqEmbed` (block 1):

- int token ids ``(B, T)``, 0 = padding (the text datasets' ``"image"`` batch key); a
  float ``(B, T)`` array is read as ids too (the trainers initialise models on float
  zeros; ids < 2**24 are exact in float32);
- float images ``(B, H, W, C)``: H time steps of W*C features (sequential MNIST rows);
- float features ``(B, T, F)``.

Spec kinds (tuples, as ``alearn.al.stack``'s):

- ``("embed", width, vocab_size, max_len)``: token embedding (ids) or a Dense projection
  (features) to ``width``; ``max_len > 0`` adds learned positions and makes a longer input
  fail at trace time naming both lengths; ``max_len = 0`` (LSTM): no positions, any length;
- ``("lstm", width)``: one LSTM layer (gates i, f, g, o; forget bias 1); at a padded step
  the state is held, so the last output is the last real step's state;
- ``("encoder", heads, mlp_width)``: one pre-LayerNorm Transformer encoder layer (masked
  multi-head self-attention, no key bias, + GELU MLP, both residual), width kept;
- ``("seqpool", "mean" | "last")``: ``(B, T, D + 1) -> (B, D)``: mean over the real steps,
  or the last step's output (the LSTM's last real state, padding on either side).

Layers are plain Flax (trained by autodiff): inside an AL block that is the block's BP;
the BP twin accepts only the ``bp`` rule (:func:`check_rule`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
SEQ_KINDS = ("embed", "lstm", "encoder", "seqpool")
POOLS = ("mean", "last")
NEG = -1e9  # attention logit of a padded key


def split(x: Array) -> tuple[Array, Array]:
    """(features (B, T, D), mask (B, T)) of a sequence activation."""
    if x.ndim != 3:
        raise ValueError(f"a sequence layer needs (batch, time, features + mask); got shape "
                         f"{tuple(x.shape)}")
    return x[..., :-1], x[..., -1]


def join(h: Array, mask: Array) -> Array:
    return jnp.concatenate([h, mask[..., None].astype(h.dtype)], axis=-1)


def check_rule(rule) -> None:
    """Sequence layers learn by autodiff: only the BP rule trains them honestly."""
    name = getattr(rule, "name", type(rule).__name__)
    if name != "bp":
        raise ValueError(f"rule {name!r} cannot train the LSTM / attention layers of a "
                         f"sequence model (they learn by autodiff); use rule 'bp'")


class SeqEmbed(nn.Module):
    """Token ids or feature rows -> ``(B, T, width + 1)`` (see module docstring)."""

    width: int
    vocab_size: int = 260
    max_len: int = 0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim == 2:  # token ids, 0 = padding
            ids = x.astype(jnp.int32)
            mask = (ids != 0).astype(jnp.float32)
            h = nn.Embed(self.vocab_size, self.width, name="tokens",
                         embedding_init=nn.initializers.normal(0.1))(ids)
        elif x.ndim in (3, 4):  # (B, T, F) features or (B, H, W, C) image rows
            rows = x.reshape(x.shape[0], x.shape[1], -1).astype(jnp.float32)
            mask = jnp.ones(rows.shape[:2], jnp.float32)
            h = nn.Dense(self.width, name="rows")(rows)
        else:
            raise ValueError(f"sequence input must be token ids (batch, time), features "
                             f"(batch, time, features) or images (batch, H, W, C); got shape "
                             f"{tuple(x.shape)}")
        length = h.shape[1]
        if self.max_len:
            if length > self.max_len:
                raise ValueError(f"input sequence length {length} exceeds the model's maximum "
                                 f"length max_len={self.max_len}; raise model_kwargs.max_len "
                                 f"or truncate the data to {self.max_len} steps")
            pos = self.param("positions", nn.initializers.normal(0.02),
                             (self.max_len, self.width))
            h = h + pos[:length]
        return join(h, mask)


class LSTM(nn.Module):
    """One LSTM layer over a sequence activation; padded steps hold the state."""

    width: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h_in, mask = split(x)
        d = self.width
        wi = self.param("kernel_i", nn.initializers.lecun_normal(), (h_in.shape[-1], 4 * d))
        wh = self.param("kernel_h", nn.initializers.orthogonal(), (d, 4 * d))
        bias = self.param("bias", lambda k, s: jnp.zeros(s).at[d:2 * d].set(1.0), (4 * d,))
        xs = h_in @ wi + bias  # (B, T, 4d): input part of every gate, all steps at once

        def step(carry, inp):
            h, c = carry
            z_t, m_t = inp
            i, f, g, o = jnp.split(z_t + h @ wh, 4, axis=-1)
            c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
            m = m_t[:, None]
            h, c = m * h_new + (1 - m) * h, m * c_new + (1 - m) * c
            return (h, c), h

        zeros = jnp.zeros((x.shape[0], d), xs.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), (jnp.swapaxes(xs, 0, 1), mask.T))
        return join(jnp.swapaxes(hs, 0, 1), mask)


class Encoder(nn.Module):
    """Pre-LN Transformer encoder layer: ``h += MHA(LN(h))``, ``h += MLP(LN(h))``."""

    heads: int
    mlp_width: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h, mask = split(x)
        b, t, d = h.shape
        if d % self.heads:
            raise ValueError(f"encoder width {d} is not divisible by heads={self.heads}")
        dh = d // self.heads
        a = nn.LayerNorm(epsilon=1e-6, name="ln_attn")(h)
        # no key bias: softmax is shift-invariant, so its gradient is exactly 0 (Adam would
        # only amplify float noise in it)
        q, k, v = (nn.Dense(d, use_bias=n != "key", name=n)(a).reshape(b, t, self.heads, dh)
                   for n in ("query", "key", "value"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(dh))
        logits = jnp.where(mask[:, None, None, :] > 0, logits, NEG)
        att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        h = h + nn.Dense(d, name="out")(att.reshape(b, t, d))
        m = nn.LayerNorm(epsilon=1e-6, name="ln_mlp")(h)
        m = nn.Dense(d, name="mlp_out")(jax.nn.gelu(nn.Dense(self.mlp_width, name="mlp_in")(m)))
        return join(h + m, mask)


def pool(x: Array, how: str) -> Array:
    """``(B, T, D + 1) -> (B, D)``: masked mean over time, or the last step's output."""
    if how not in POOLS:
        raise ValueError(f"unknown sequence pool {how!r}; choose one of: {', '.join(POOLS)}")
    h, mask = split(x)
    if how == "last":
        return h[:, -1]
    count = jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    return (h * mask[..., None]).sum(1) / count


def apply_spec(spec: tuple, x: Array) -> Array:
    """Applies sequence layer ``spec`` (inside a compact ``Stack``)."""
    kind = spec[0]
    if kind == "embed":
        return SeqEmbed(spec[1], spec[2], spec[3])(x)
    if kind == "lstm":
        return LSTM(spec[1])(x)
    if kind == "encoder":
        return Encoder(spec[1], spec[2])(x)
    return pool(x, spec[1])
