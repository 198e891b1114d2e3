"""Small copies of the Flax models researchers actually use, for testing ``alearn.wrap``.

Each model is written in the style of a public Flax model (module structure, naming,
transforms, call signature), shrunk to widths 4-32, one or two blocks and tiny inputs so
it compiles in about a second on one CPU core. None of them imports alearn: they are the
"unmodified third-party models" the wrappers must take as they are.

Every ``make_<name>()`` returns ``(model, inputs, targets)`` with fixed seeds:
``inputs`` is the tuple of positional arguments of ``__call__`` after the variables
(``model.apply(variables, *inputs)``), ``targets`` integer class labels of the output's
leading shape (``(B,)`` for classifiers, ``(B, T)`` for language models).

Deliberate departures from the originals (all for test strength or speed, never for
convenience of the wrapper):

- ResNet: the example zero-initialises the scale of each block's last BatchNorm, which
  makes the residual branch's output and the last conv's gradient exactly 0 at init under
  any rule; ``make_resnet`` turns that off (``zero_init_residual=False``), the class keeps
  the example's default.
- ViT, MlpMixer: both originals zero-initialise the classifier head (``head_zeroinit``),
  which makes every hidden layer's BP gradient 0 at init; the ``make_`` functions turn it
  off, the classes keep the originals' default.
- ResNet: no ``axis_name="batch"`` on BatchNorm (that needs a ``pmap``/``shard_map`` axis).
- TransformerLM: no input shifting or padding mask (tokens are fed as they are), a learned
  positional embedding (lm1b's ``posemb_init`` option) instead of the fixed sinusoid.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ModuleDef = Any

# ----------------------------------------------------------------------------------------
# ResNet (flax/examples/imagenet/models.py)
# ----------------------------------------------------------------------------------------


class ResNetBlock(nn.Module):
    """Basic residual block: conv3x3-BN-act, conv3x3-BN, projection shortcut, act(r + y)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    zero_init_residual: bool = True

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        if self.zero_init_residual:
            y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        else:
            y = self.norm()(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    """The Flax ImageNet example's ResNet (``ResNet18`` with stage_sizes (2, 2, 2, 2))."""

    stage_sizes: Sequence[int]
    num_classes: int
    num_filters: int = 64
    block_cls: ModuleDef = ResNetBlock
    act: Callable = nn.relu
    conv: ModuleDef = nn.Conv
    dtype: Any = jnp.float32
    zero_init_residual: bool = True

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = partial(self.conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                       epsilon=1e-5, dtype=self.dtype)
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
                 name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2 ** i, strides=strides, conv=conv,
                                   norm=norm, act=self.act,
                                   zero_init_residual=self.zero_init_residual)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return jnp.asarray(x, self.dtype)


RESNET_CLASSES = 5


def make_resnet():
    """(ResNet, (x,), y): stem 4 filters, stages (1, 1) -> ``ResNetBlock_0`` (identity
    shortcut) and ``ResNetBlock_1`` (stride 2, ``conv_proj``/``norm_proj``); x (4, 16, 16, 3).
    Call as ``model.apply(v, x, train=True, mutable=["batch_stats"])``."""
    model = ResNet(stage_sizes=(1, 1), num_classes=RESNET_CLASSES, num_filters=4,
                   zero_init_residual=False)
    kx, ky = jax.random.split(jax.random.key(101))
    x = jax.random.normal(kx, (4, 16, 16, 3))
    y = jax.random.randint(ky, (4,), 0, RESNET_CLASSES)
    return model, (x,), y


# ----------------------------------------------------------------------------------------
# Decoder-only Transformer LM (flax/examples/lm1b/models.py)
# ----------------------------------------------------------------------------------------


class AddPositionEmbs(nn.Module):
    """Learned positional embedding, (1, max_len, d), added to the inputs."""

    max_len: int
    posemb_init: Callable = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, inputs):
        length = inputs.shape[1]
        pos_embedding = self.param("pos_embedding", self.posemb_init,
                                   (1, self.max_len, inputs.shape[-1]))
        return inputs + pos_embedding[:, :length, :]


class LMMlpBlock(nn.Module):
    """Dense -> gelu -> Dense (lm1b's ``MlpBlock``; gelu as in GPT-style LMs)."""

    mlp_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, inputs):
        init = dict(kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(stddev=1e-6))
        x = nn.Dense(self.mlp_dim, **init)(inputs)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=self.deterministic)
        out = nn.Dense(inputs.shape[-1], **init)(x)
        return nn.Dropout(rate=self.dropout_rate)(out, deterministic=self.deterministic)


class DecoderBlock(nn.Module):
    """Pre-LN block: LN -> causal self-attention -> +x; LN -> MLP -> +x."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, inputs, decoder_mask=None):
        x = nn.LayerNorm()(inputs)
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
            use_bias=False, broadcast_dropout=False, dropout_rate=self.dropout_rate,
            deterministic=self.deterministic)(x, mask=decoder_mask)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=self.deterministic)
        x = x + inputs
        z = nn.LayerNorm()(x)
        z = LMMlpBlock(self.mlp_dim, self.dropout_rate, self.deterministic)(z)
        return x + z


class TransformerLM(nn.Module):
    """lm1b's decoder-only Transformer: tied ``Embed`` in/out, learned positions, pre-LN
    blocks ``block_<i>``, final LayerNorm, ``logits = embed.attend(y) / sqrt(d)``."""

    vocab_size: int = 32
    max_len: int = 8
    emb_dim: int = 16
    num_heads: int = 2
    mlp_dim: int = 32
    num_layers: int = 2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True):
        embed = nn.Embed(num_embeddings=self.vocab_size, features=self.emb_dim,
                         embedding_init=nn.initializers.normal(stddev=1.0), name="embed")
        decoder_mask = nn.make_causal_mask(tokens)
        y = embed(tokens.astype("int32"))
        y = AddPositionEmbs(self.max_len, name="posembed_output")(y)
        y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
        for i in range(self.num_layers):
            y = DecoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, deterministic,
                             name=f"block_{i}")(y, decoder_mask=decoder_mask)
        y = nn.LayerNorm(name="encoderdecoder_norm")(y)
        logits = embed.attend(y.astype(jnp.float32))
        return logits / jnp.sqrt(y.shape[-1])


def make_transformer_lm():
    """(TransformerLM, (tokens,), next_tokens): V=32, T=8, d=16, 2 heads, 2 blocks;
    tokens (4, 8) int32, output (4, 8, 32)."""
    model = TransformerLM()
    seq = jax.random.randint(jax.random.key(102), (4, model.max_len + 1), 0, model.vocab_size)
    return model, (seq[:, :-1],), seq[:, 1:]


# ----------------------------------------------------------------------------------------
# ViT (big_vision/models/vit.py): nn.scan(nn.remat(Encoder1DBlock)) over depth
# ----------------------------------------------------------------------------------------


class MlpBlock(nn.Module):
    """big_vision's ViT MLP: Dense -> gelu -> Dropout -> Dense."""

    mlp_dim: int | None = None
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic=True):
        inits = dict(kernel_init=nn.initializers.xavier_uniform(),
                     bias_init=nn.initializers.normal(stddev=1e-6))
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim or 4 * d, **inits)(x)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout)(x, deterministic)
        return nn.Dense(d, **inits)(x)


class Encoder1DBlock(nn.Module):
    """LN -> MHA -> +x, LN -> MlpBlock -> +x; returns (x, None) so it can be scanned."""

    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic=True):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
            deterministic=deterministic)(y, y)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        x = x + y
        y = nn.LayerNorm()(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout)(y, deterministic)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        return x + y, None


class Encoder(nn.Module):
    """``depth`` Encoder1DBlocks as one scanned, rematerialised layer ``encoderblock``
    (params stacked on a leading axis of size depth), then ``encoder_norm``."""

    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic=True):
        block = nn.remat(Encoder1DBlock, prevent_cse=False, static_argnums=(2,))
        x, _ = nn.scan(block, variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=nn.broadcast, length=self.depth)(
            name="encoderblock", mlp_dim=self.mlp_dim, num_heads=self.num_heads,
            dropout=self.dropout)(x, deterministic)
        return nn.LayerNorm(name="encoder_norm")(x)


class ViT(nn.Module):
    """big_vision's ViT ``_Model``: patch conv ``embedding``, learned ``pos_embedding``,
    optional ``cls`` token (pool_type "tok") or global average pool ("gap"), scanned
    encoder ``Transformer``, Dense ``head``. Returns ``(logits, out)`` like big_vision."""

    num_classes: int
    patch_size: tuple[int, int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    pool_type: str = "gap"
    head_zeroinit: bool = True

    @nn.compact
    def __call__(self, image, *, train=False):
        out = {}
        x = out["stem"] = nn.Conv(self.width, self.patch_size, strides=self.patch_size,
                                  padding="VALID", name="embedding")(image)
        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])
        posemb = self.param("pos_embedding",
                            nn.initializers.normal(stddev=1 / np.sqrt(c)), (1, h * w, c),
                            x.dtype)
        x = out["with_posemb"] = x + posemb
        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
            x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)
        x = nn.Dropout(rate=self.dropout)(x, not train)
        x = out["encoded"] = Encoder(depth=self.depth, mlp_dim=self.mlp_dim,
                                     num_heads=self.num_heads, dropout=self.dropout,
                                     name="Transformer")(x, deterministic=not train)
        if self.pool_type == "gap":
            x = jnp.mean(x, axis=1)
        elif self.pool_type == "tok":
            x = x[:, 0]
        else:
            raise ValueError(f"Unknown pool type: '{self.pool_type}'")
        out["head_input"] = out["pre_logits"] = x
        kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
        x = out["logits"] = nn.Dense(self.num_classes, name="head", **kw)(x)
        return x, out


VIT_CLASSES = 5


def make_vit(pool_type: str = "gap"):
    """(ViT, (images,), y): 8x8x3 images, patch 4 (4 tokens), width 16, depth 2, 2 heads,
    mlp 32; images (4, 8, 8, 3). ``apply`` returns ``(logits (4, 5), aux dict)``."""
    model = ViT(num_classes=VIT_CLASSES, patch_size=(4, 4), width=16, depth=2, mlp_dim=32,
                num_heads=2, pool_type=pool_type, head_zeroinit=False)
    kx, ky = jax.random.split(jax.random.key(103))
    x = jax.random.normal(kx, (4, 8, 8, 3))
    y = jax.random.randint(ky, (4,), 0, VIT_CLASSES)
    return model, (x,), y


# ----------------------------------------------------------------------------------------
# LSTM text classifier (flax/examples/sst2/models.py)
# ----------------------------------------------------------------------------------------


class LSTMClassifier(nn.Module):
    """SST-2 example's classifier, unidirectional: ``nn.Embed`` -> ``nn.RNN(
    OptimizedLSTMCell)`` with ``seq_lengths`` -> hidden state at the last valid step ->
    Dropout -> Dense to classes."""

    vocab_size: int
    embedding_size: int
    hidden_size: int
    output_size: int
    dropout_rate: float = 0.0

    def setup(self):
        self.embedder = nn.Embed(self.vocab_size, self.embedding_size,
                                 embedding_init=nn.initializers.normal(stddev=0.1))
        self.encoder = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size), return_carry=True)
        self.dropout = nn.Dropout(rate=self.dropout_rate)
        self.classifier = nn.Dense(self.output_size)

    def __call__(self, tokens, lengths, deterministic: bool = True):
        embedded = self.embedder(tokens)
        (_, hidden), _ = self.encoder(embedded, seq_lengths=lengths)
        hidden = self.dropout(hidden, deterministic=deterministic)
        return self.classifier(hidden)


LSTM_CLASSES = 3


def make_lstm_classifier():
    """(LSTMClassifier, (tokens, lengths), y): vocab 20, embed 8, hidden 12, 3 classes;
    tokens (4, 6) int32, lengths (4,) in 2..6 (padding id 0 after each length)."""
    model = LSTMClassifier(vocab_size=20, embedding_size=8, hidden_size=12,
                           output_size=LSTM_CLASSES)
    kt, ky = jax.random.split(jax.random.key(104))
    lengths = jnp.array([6, 3, 5, 2], dtype=jnp.int32)
    tokens = jax.random.randint(kt, (4, 6), 2, 20)
    tokens = jnp.where(jnp.arange(6)[None, :] < lengths[:, None], tokens, 0)
    y = jax.random.randint(ky, (4,), 0, LSTM_CLASSES)
    return model, (tokens, lengths), y


# ----------------------------------------------------------------------------------------
# MLP-Mixer (google-research/vision_transformer/vit_jax/models_mixer.py)
# ----------------------------------------------------------------------------------------


class MixerMlpBlock(nn.Module):
    """Dense -> gelu -> Dense back to the input's width."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.mlp_dim)(x)
        y = nn.gelu(y)
        return nn.Dense(x.shape[-1])(y)


class MixerBlock(nn.Module):
    """Token mixing on the (B, C, T) transpose, then channel mixing; LN before each."""

    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        y = jnp.swapaxes(y, 1, 2)
        y = MixerMlpBlock(self.tokens_mlp_dim, name="token_mixing")(y)
        y = jnp.swapaxes(y, 1, 2)
        x = x + y
        y = nn.LayerNorm()(x)
        return x + MixerMlpBlock(self.channels_mlp_dim, name="channel_mixing")(y)


class MlpMixer(nn.Module):
    """Mixer: patch conv ``stem``, ``MixerBlock_<i>``, ``pre_head_layer_norm``, gap,
    Dense ``head``."""

    patches: tuple[int, int]
    num_classes: int
    num_blocks: int
    hidden_dim: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    head_zeroinit: bool = True

    @nn.compact
    def __call__(self, inputs, *, train):
        del train
        x = nn.Conv(self.hidden_dim, self.patches, strides=self.patches, name="stem")(inputs)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        for _ in range(self.num_blocks):
            x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
        x = nn.LayerNorm(name="pre_head_layer_norm")(x)
        x = jnp.mean(x, axis=1)
        kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
        return nn.Dense(self.num_classes, name="head", **kw)(x)


MIXER_CLASSES = 5


def make_mlp_mixer():
    """(MlpMixer, (images,), y): 8x8x3 images, patch 2 (16 tokens), hidden 12, 2 blocks,
    token mlp 8, channel mlp 24; call with ``train=`` (keyword-only, as the original)."""
    model = MlpMixer(patches=(2, 2), num_classes=MIXER_CLASSES, num_blocks=2, hidden_dim=12,
                     tokens_mlp_dim=8, channels_mlp_dim=24, head_zeroinit=False)
    kx, ky = jax.random.split(jax.random.key(105))
    x = jax.random.normal(kx, (4, 8, 8, 3))
    y = jax.random.randint(ky, (4,), 0, MIXER_CLASSES)
    return model, (x,), y


# ----------------------------------------------------------------------------------------
# NNX: scan over layers (the nnx.scan docstring / "scan over layers" guide)
# ----------------------------------------------------------------------------------------


class ScanBlock(nnx.Module):
    """One layer of the scanned stack: Linear -> relu."""

    def __init__(self, features: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(features, features, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.linear(x))


class NNXScanMLP(nnx.Module):
    """Input Linear, ``num_layers`` ScanBlocks created by ``nnx.vmap`` over split keys
    (params stacked: ``blocks.linear.kernel`` is (num_layers, d, d)) and applied with
    ``nnx.scan`` (x is the carry), output Linear."""

    def __init__(self, din: int, features: int, dout: int, num_layers: int, *,
                 rngs: nnx.Rngs):
        self.input = nnx.Linear(din, features, rngs=rngs)

        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create_block(rngs: nnx.Rngs):
            return ScanBlock(features, rngs=rngs)

        self.blocks = create_block(rngs)
        self.output = nnx.Linear(features, dout, rngs=rngs)
        self.num_layers = num_layers

    def __call__(self, x):
        x = nnx.relu(self.input(x))

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return block(x)

        x = forward(x, self.blocks)
        return self.output(x)


SCAN_CLASSES = 4


def make_nnx_scan_mlp():
    """(NNXScanMLP, (x,), y): 6 -> 16 -> 3 scanned 16x16 layers -> 4; x (5, 6)."""
    model = NNXScanMLP(6, 16, SCAN_CLASSES, 3, rngs=nnx.Rngs(106))
    kx, ky = jax.random.split(jax.random.key(106))
    x = jax.random.normal(kx, (5, 6))
    y = jax.random.randint(ky, (5,), 0, SCAN_CLASSES)
    return model, (x,), y


# ----------------------------------------------------------------------------------------
# NNX MiniGPT (jax-ai-stack "Train a miniGPT language model with JAX" tutorial)
# ----------------------------------------------------------------------------------------


def causal_attention_mask(seq_len: int):
    return jnp.tril(jnp.ones((seq_len, seq_len)))


def _part(init, names):
    return nnx.with_partitioning(init, names)


class TransformerBlock(nnx.Module):
    """Post-LN block of the tutorial: causal MHA -> dropout -> LN(x + a); Linear-relu-Linear
    -> dropout -> LN(h + f). Kernels annotated (None, "model"), biases/scales ("model",)."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, *, rngs: nnx.Rngs,
                 rate: float = 0.1):
        xavier, zeros, ones = (nnx.initializers.xavier_uniform(),
                               nnx.initializers.zeros_init(), nnx.initializers.ones_init())
        self.mha = nnx.MultiHeadAttention(
            num_heads=num_heads, in_features=embed_dim,
            kernel_init=_part(xavier, (None, "model")), bias_init=_part(zeros, ("model",)),
            decode=False, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=rate, rngs=rngs)
        self.layer_norm1 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim,
                                         scale_init=_part(ones, ("model",)),
                                         bias_init=_part(zeros, ("model",)), rngs=rngs)
        self.linear1 = nnx.Linear(embed_dim, ff_dim, kernel_init=_part(xavier, (None, "model")),
                                  bias_init=_part(zeros, ("model",)), rngs=rngs)
        self.linear2 = nnx.Linear(ff_dim, embed_dim, kernel_init=_part(xavier, (None, "model")),
                                  bias_init=_part(zeros, ("model",)), rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=rate, rngs=rngs)
        self.layer_norm2 = nnx.LayerNorm(epsilon=1e-6, num_features=embed_dim,
                                         scale_init=_part(ones, ("model",)),
                                         bias_init=_part(zeros, ("model",)), rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        _, seq_len, _ = inputs.shape
        mask = causal_attention_mask(seq_len)
        attention_output = self.mha(inputs_q=inputs, mask=mask, decode=False)
        attention_output = self.dropout1(attention_output, deterministic=not training)
        out1 = self.layer_norm1(inputs + attention_output)
        ffn_output = self.linear2(nnx.relu(self.linear1(out1)))
        ffn_output = self.dropout2(ffn_output, deterministic=not training)
        return self.layer_norm2(out1 + ffn_output)


class TokenAndPositionEmbedding(nnx.Module):
    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.token_emb = nnx.Embed(num_embeddings=vocab_size, features=embed_dim, rngs=rngs)
        self.pos_emb = nnx.Embed(num_embeddings=maxlen, features=embed_dim, rngs=rngs)

    def __call__(self, x):
        positions = jnp.arange(0, x.shape[1])[None, :]
        return self.token_emb(x) + self.pos_emb(positions)


class MiniGPT(nnx.Module):
    """The tutorial's MiniGPT: token+position ``nnx.Embed``, ``nnx.List`` of
    TransformerBlocks, ``output_layer`` Linear to the vocabulary (logits (B, T, V))."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, num_heads: int,
                 feed_forward_dim: int, num_transformer_blocks: int, *, rngs: nnx.Rngs,
                 rate: float = 0.1):
        self.embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim,
                                                         rngs=rngs)
        self.transformer_blocks = nnx.List([
            TransformerBlock(embed_dim, num_heads, feed_forward_dim, rngs=rngs, rate=rate)
            for _ in range(num_transformer_blocks)])
        self.output_layer = nnx.Linear(
            embed_dim, vocab_size,
            kernel_init=_part(nnx.initializers.xavier_uniform(), (None, "model")),
            bias_init=_part(nnx.initializers.zeros_init(), ("model",)), rngs=rngs)

    def __call__(self, inputs, training: bool = False):
        x = self.embedding_layer(inputs)
        for block in self.transformer_blocks:
            x = block(x, training=training)
        return self.output_layer(x)


MINIGPT = dict(maxlen=8, vocab_size=32, embed_dim=16, num_heads=2, feed_forward_dim=32,
               num_transformer_blocks=2)


def _minigpt_data():
    seq = jax.random.randint(jax.random.key(107), (4, MINIGPT["maxlen"] + 1), 0,
                             MINIGPT["vocab_size"])
    return seq[:, :-1], seq[:, 1:]


def make_minigpt():
    """(MiniGPT, (tokens,), next_tokens): V=32, T=8, d=16, 2 heads, ff 32, 2 blocks,
    dropout 0.1 (active only with ``training=True``); tokens (4, 8) int32. Built outside
    any mesh: the partitioning annotations stay as metadata (``out_sharding``) but eager
    sharding is off (Flax 0.12 raises when an annotated variable is created with eager
    sharding on and no mesh)."""
    with nnx.use_eager_sharding(False):
        model = MiniGPT(**MINIGPT, rngs=nnx.Rngs(107))
    x, y = _minigpt_data()
    return model, (x,), y


def make_minigpt_under_mesh(axis_types=None):
    """(MiniGPT, (tokens,), next_tokens, mesh) built as the tutorial does, inside
    ``with jax.set_mesh(mesh)`` of a 1-device ``jax.make_mesh((1, 1), ("batch", "model"))``:
    every annotated parameter is created with a ``NamedSharding`` over that mesh (Flax's
    eager sharding, on by default). JAX 0.10 has no ``jax.sharding.use_mesh``;
    ``jax.set_mesh`` is the context manager. ``make_mesh``'s default axis types are
    ``Explicit`` in JAX 0.10 (sharding in the types: ``jax.typeof(kernel).sharding``);
    pass ``axis_types=(jax.sharding.AxisType.Auto,) * 2`` for the older behaviour. The
    model also runs outside the mesh context (1x1 mesh)."""
    kw = {} if axis_types is None else {"axis_types": tuple(axis_types)}
    mesh = jax.make_mesh((1, 1), ("batch", "model"), devices=jax.devices()[:1], **kw)
    with jax.set_mesh(mesh):
        model = MiniGPT(**MINIGPT, rngs=nnx.Rngs(107))
    x, y = _minigpt_data()
    return model, (x,), y, mesh


ALL_LINEN = ("resnet", "transformer_lm", "vit", "lstm_classifier", "mlp_mixer")
ALL_NNX = ("nnx_scan_mlp", "minigpt")


def make(name: str):
    """``make_<name>()`` by name."""
    return globals()[f"make_{name}"]()
