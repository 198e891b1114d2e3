"""Text classification data: UTF-8 byte tokens from TFDS ``data_source`` (nothing to download).

Id layout (``VOCAB_SIZE`` = 260 ids):

====  =========================================================================
id    meaning
====  =========================================================================
0     ``PAD_ID``: padding after the last byte (a model masks / ignores it)
1     ``BOS_ID``: reserved (start of sequence; never emitted by ``encode``)
2     ``EOS_ID``: reserved (end of sequence; never emitted by ``encode``)
3     ``UNK_ID``: reserved (out of vocabulary; a byte never is)
4+b   byte ``b`` (0..255) of the text's UTF-8 encoding, so ids 4..259
====  =========================================================================

``encode(texts, max_length)`` keeps the first ``max_length`` bytes of each text (a multi-byte
character cut at the end stays as its leading bytes) and pads with 0 to ``max_length``. Every
sequence therefore has length ``max_length`` and the number of real tokens is the number of
non-zero ids (a byte 0x00 in a text is id 4, not padding).

The datasets (``alearn.data.create("ag_news_subset" | "imdb_reviews" | "sst2")``) read the
TFDS builders' plain-text features (tensorflow-datasets 4.9.10 sources): ``ag_news_subset``
``title`` + " " + ``description`` (the HuggingFace ``ag_news`` text field; TFDS' supervised
key is the description alone), 4 classes; ``imdb_reviews`` (config ``plain_text``) ``text``,
2 classes; ``glue/sst2`` ``sentence``, 2 classes, evaluated on ``validation`` (its ``test``
labels are -1). Batches are ``{"image": int32 (B, T) ids, "label": int32 (B,)}``: ``"image"``
is the trainer's model-input key for every dataset and holds token ids for text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_SPECIAL = 4
BYTE_OFFSET = NUM_SPECIAL  # byte b has id b + BYTE_OFFSET
VOCAB_SIZE = 256 + NUM_SPECIAL
# Stored token arrays: ids < 260 fit uint16 (half the memory of int32 for in-memory splits).
STORE_DTYPE = np.uint16


def as_bytes(text) -> bytes:
    """``text`` as bytes: ``str`` encoded as UTF-8, bytes (TFDS ``Text`` values) as they are."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, np.bytes_):
        return bytes(text)
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, np.ndarray) and text.shape == ():
        return as_bytes(text.item())
    raise TypeError(f"a text must be str or UTF-8 bytes, got {type(text).__name__}: {text!r:.80}")


def check_max_length(max_length) -> int:
    """``max_length`` as an int, or ValueError naming the bad value."""
    ok = not isinstance(max_length, bool) and isinstance(max_length, (int, np.integer))
    if not ok or max_length < 1:
        raise ValueError(f"max_length must be a positive integer (tokens per sequence), "
                         f"got {max_length!r}")
    return int(max_length)


def encode(texts: Sequence[str | bytes], max_length: int, dtype=np.int32) -> np.ndarray:
    """Byte ids ``(len(texts), max_length)``: UTF-8 bytes + 4, truncated, zero-padded.

    ``str`` is encoded as UTF-8; ``bytes`` (what TFDS ``Text`` features decode to) are taken
    as they are.
    """
    max_length = check_max_length(max_length)
    out = np.zeros((len(texts), max_length), dtype)
    for i, text in enumerate(texts):
        raw = np.frombuffer(as_bytes(text)[:max_length], np.uint8)
        out[i, :len(raw)] = raw.astype(dtype) + BYTE_OFFSET
    return out


def decode(ids: np.ndarray) -> str:
    """The text of one id sequence (padding and reserved ids dropped; invalid UTF-8 replaced)."""
    ids = np.asarray(ids).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}), got min {ids.min()} max {ids.max()}")
    raw = (ids[ids >= BYTE_OFFSET] - BYTE_OFFSET).astype(np.uint8).tobytes()
    return raw.decode("utf-8", errors="replace")


class RecordTexts:
    """Maps TFDS records to ``(texts (B,) object array of bytes, labels (B,) int32)``.

    The ``encode`` of a :class:`~alearn.data.tfds_source.TfdsSource`: the features
    ``text_keys`` of a record are joined by one space.
    """

    def __init__(self, text_keys: Sequence[str], label_key: str = "label"):
        if not text_keys:
            raise ValueError("text_keys must name at least one text feature")
        self.text_keys = tuple(text_keys)
        self.label_key = label_key

    def __call__(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        try:
            texts = [b" ".join(as_bytes(r[k]) for k in self.text_keys) for r in records]
            labels = np.asarray([r[self.label_key] for r in records], np.int32)
        except KeyError as e:
            have = sorted(records[0]) if records else []
            raise KeyError(f"TFDS record has no feature {e.args[0]!r}; it has {have}") from None
        out = np.empty(len(texts), object)
        out[:] = texts
        return out, labels


class TokenizedSource:
    """A text source whose ``gather`` gives token ids: ``tokenize(texts)`` per batch."""

    def __init__(self, source, tokenize):
        self.source = source
        self.tokenize = tokenize

    def __len__(self) -> int:
        return len(self.source)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts, labels = self.source.gather(indices)
        return self.tokenize(list(texts)), labels


def all_texts(source, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Every (text, label) of a source, read in chunks of ``chunk`` indices."""
    n = len(source)
    parts = [source.gather(np.arange(s, min(n, s + chunk))) for s in range(0, n, chunk)]
    if not parts:
        return np.empty(0, object), np.empty(0, np.int32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
