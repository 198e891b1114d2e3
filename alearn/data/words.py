"""A word vocabulary built from a training split (the ``tokenizer="words"`` text option).

Words: the UTF-8 text (invalid bytes replaced) is lower-cased, HTML line breaks (``<br />``,
in IMDB reviews) become spaces, and ``[\\w']+`` runs and single other non-space characters are
the words: ``"Don't stop! <br />Great."`` -> ``don't stop ! great .``.

Ids share the byte tokenizer's specials (``alearn.data.text``): 0 padding, 1 / 2 reserved
(BOS / EOS, never emitted), 3 = unknown word, then the ``vocab_size - 4`` most frequent
training words, most frequent first (ties: alphabetical), from id 4. A text keeps its first
``max_length`` words and is zero-padded.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence

import numpy as np

from alearn.data import text as text_lib

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[\w']+|[^\w\s]")


def split_words(text: str | bytes) -> list[str]:
    """The lower-cased words of ``text`` (see the module docstring)."""
    if not isinstance(text, str):
        text = text_lib.as_bytes(text).decode("utf-8", errors="replace")
    return _WORD.findall(_BREAK.sub(" ", text).lower())


def check_vocab_size(vocab_size) -> int:
    """``vocab_size`` as an int (> 4 specials), or ValueError naming the bad value."""
    ok = not isinstance(vocab_size, bool) and isinstance(vocab_size, (int, np.integer))
    if not ok or vocab_size <= text_lib.NUM_SPECIAL:
        raise ValueError(f"vocab_size must be an integer > {text_lib.NUM_SPECIAL} (the special "
                         f"ids 0-3 plus at least one word), got {vocab_size!r}")
    return int(vocab_size)


class Vocabulary:
    """Word -> id for the ``vocab_size - 4`` most frequent words of a corpus."""

    def __init__(self, words: Sequence[str]):
        self.words = tuple(words)  # id 4 + i is words[i]
        self._ids = {w: i + text_lib.NUM_SPECIAL for i, w in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            raise ValueError("vocabulary words must be distinct")

    @classmethod
    def build(cls, texts: Iterable[str | bytes], vocab_size: int) -> "Vocabulary":
        """The vocabulary of ``texts``: most frequent words first, ties alphabetical."""
        vocab_size = check_vocab_size(vocab_size)
        counts = collections.Counter()
        for t in texts:
            counts.update(split_words(t))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([w for w, _ in ranked[:vocab_size - text_lib.NUM_SPECIAL]])

    @property
    def size(self) -> int:
        """Number of ids (specials included): what an embedding table needs."""
        return len(self.words) + text_lib.NUM_SPECIAL

    def encode(self, texts: Sequence[str | bytes], max_length: int, dtype=np.int32) -> np.ndarray:
        """Word ids ``(len(texts), max_length)``: first ``max_length`` words, zero-padded."""
        max_length = text_lib.check_max_length(max_length)
        out = np.zeros((len(texts), max_length), dtype)
        for i, t in enumerate(texts):
            ids = [self._ids.get(w, text_lib.UNK_ID) for w in split_words(t)[:max_length]]
            out[i, :len(ids)] = ids
        return out
