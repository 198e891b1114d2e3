"""``alearn.data.create`` for the text datasets: TFDS texts -> token ids -> a ``Dataset``.

Options (all validated before any data is opened):

* ``tokenizer``: ``"bytes"`` (default; UTF-8 bytes, 260 ids, ``alearn.data.text``) or
  ``"words"`` (a vocabulary of the training split's most frequent words,
  ``alearn.data.words``).
* ``max_length``: tokens per example. Default: the spec's (``alearn.data.specs``) for bytes,
  a quarter of it for words (an English word and its space are ~6 bytes, so T/4 words cover
  at least the text T bytes would).
* ``vocab_size``: ids of the word vocabulary, specials included (default
  ``DEFAULT_VOCAB_SIZE``); words only.
* ``in_memory`` (default True): read and tokenise every split once at ``create``; False
  reads and tokenises each batch from the array_record files.
* ``validation``: a class-stratified held-out fraction of the training split becomes
  ``"test"`` (``alearn.data.holdout``); the word vocabulary is built from the rest only.

Pixel options (``augment``, ``crop_padding``, ``normalize``, ``mean``, ``std``) raise
``ValueError``: text inputs are token ids.
"""

from __future__ import annotations

import functools

import numpy as np

from alearn.data import holdout, tfds_source
from alearn.data import text as text_lib
from alearn.data import words as words_lib
from alearn.data.dataset import ArraySource, Dataset, DatasetInfo
from alearn.data.specs import DatasetSpec

OPTIONS = ("validation", "max_length", "in_memory", "tokenizer", "vocab_size")
PIXEL_OPTIONS = ("augment", "crop_padding", "normalize", "mean", "std")
TOKENIZERS = ("bytes", "words")
DEFAULT_VOCAB_SIZE = 20000
WORD_LENGTH_DIVISOR = 4


def _check_options(spec: DatasetSpec, options: dict) -> tuple[str, int, int | None]:
    """(tokenizer, max_length, vocab_size or None) from ``options``, or ValueError."""
    pixel = sorted(set(options) & set(PIXEL_OPTIONS))
    if pixel:
        raise ValueError(
            f"option(s) {', '.join(pixel)} do not apply to text dataset {spec.name!r}: its "
            f"inputs are token ids, not pixels (no augmentation or normalisation); valid: "
            f"{', '.join(OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset {spec.name!r}; "
                         f"valid: {', '.join(OPTIONS)}")
    tokenizer = options.get("tokenizer", "bytes")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r} for dataset {spec.name!r}; choose "
                         f"one of: {', '.join(TOKENIZERS)}")
    default_length = spec.image_shape[0]
    if tokenizer == "words":
        default_length = max(1, default_length // WORD_LENGTH_DIVISOR)
    max_length = text_lib.check_max_length(options.get("max_length", default_length))
    vocab_size = options.get("vocab_size", None)
    if tokenizer == "bytes" and vocab_size is not None:
        raise ValueError(f"vocab_size={vocab_size!r} applies to tokenizer='words' only; the "
                         f"byte tokenizer has {text_lib.VOCAB_SIZE} ids")
    if tokenizer == "words":
        vocab_size = words_lib.check_vocab_size(
            DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size)
    return tokenizer, max_length, vocab_size


def _tokenized(source, tokenize, in_memory: bool):
    if not in_memory:
        return text_lib.TokenizedSource(source, tokenize)
    texts, labels = text_lib.all_texts(source)
    return ArraySource(tokenize(list(texts)), labels)


def create(spec: DatasetSpec, data_dir, seed: int, options: dict) -> Dataset:
    """The text dataset ``spec`` with ``options`` (see the module docstring).

    Raises:
      ValueError: a bad option or value (before any data is opened).
      DatasetNotFoundError: the TFDS data is not prepared under the data_dir.
    """
    tokenizer, max_length, vocab_size = _check_options(spec, options)
    in_memory = bool(options.get("in_memory", True))
    sources = tfds_source.open_splits(
        spec.name, spec.tfds_name, data_dir, {"train": "train", "test": spec.test_split},
        in_memory=in_memory, encode=text_lib.RecordTexts(spec.text_keys))
    name = spec.name
    validation = options.get("validation", None)
    if validation is not None:
        sources = holdout.split(sources["train"], validation)
        name = f"{name}[validation={validation:g}]"
    vocabulary = None
    if tokenizer == "bytes":
        size = text_lib.VOCAB_SIZE
        tokenize = functools.partial(text_lib.encode, max_length=max_length,
                                     dtype=text_lib.STORE_DTYPE)
    else:
        vocabulary = words_lib.Vocabulary.build(text_lib.all_texts(sources["train"])[0],
                                                vocab_size)
        size = vocabulary.size
        dtype = text_lib.STORE_DTYPE if size <= np.iinfo(text_lib.STORE_DTYPE).max + 1 else np.int32
        tokenize = functools.partial(vocabulary.encode, max_length=max_length, dtype=dtype)
    sources = {split: _tokenized(src, tokenize, in_memory) for split, src in sources.items()}
    info = DatasetInfo(name=name, num_classes=spec.num_classes, image_shape=(max_length,),
                       num_train=len(sources["train"]), num_test=len(sources["test"]),
                       vocab_size=size, input_dtype="int32")
    return Dataset(info, sources, seed=seed, vocabulary=vocabulary)
