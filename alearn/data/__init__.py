"""Datasets: one deterministic batch iterator over MNIST-5k, TFDS sets, Tiny ImageNet, synthetic.

```python
ds = alearn.data.create("mnist5k", seed=0)
for batch in ds.batches("train", 128, epoch=3):   # {"image": f32 (B,H,W,C), "label": i32 (B,)}
    ...
```

``create(name, *, data_dir=None, seed=0, **options)``; options (all datasets):
``augment`` (policy name, see ``alearn.data.augment``), ``crop_padding`` (int),
``normalize`` ("unit": pixels in [0, 1]; "standardize": (x - mean) / std per channel;
"pixel_mean": [0, 1] pixels minus the per-pixel training mean, the AL authors' MNIST code;
"pixel_mean_per_image": that, then augmentation on the mean-subtracted floats, then
per-image standardisation of train and test images, the AL authors' CIFAR code),
``mean`` / ``std`` (override the constants of ``alearn.data.specs``), ``validation`` (a
fraction in (0, 1): a fixed, class-stratified held-out part of the training split becomes
the ``"test"`` split and the rest ``"train"``; the real test split of IDX / TFDS data is then
not even opened — for choosing hyperparameters, see ``alearn.data.holdout``),
``train_examples`` (an int: a fixed class-stratified subset of that many training examples,
taken after ``validation``; the test split is untouched). TFDS datasets also take
``in_memory`` (default True: decode each split once at ``create``, ~85 us per 32x32 PNG here,
then batches are numpy gathers; False: decode every batch from the array_record files with
one ``__getitems__`` call, for splits too large for RAM); ``synthetic`` takes
``num_classes``, ``image_shape``, ``num_train``, ``num_test``, ``noise``, ``data_seed``.

Text datasets (``ag_news_subset``, ``imdb_reviews``, ``sst2``; ``alearn.data.text``) give
``{"image": int32 (B, T) token ids, "label": int32 (B,)}`` — ``"image"`` is the trainer's
model-input key for every dataset — with ``info.vocab_size`` (``text.VOCAB_SIZE`` = 260 for
the default UTF-8 byte ids), ``info.image_shape == (T,)`` and ``info.input_dtype == "int32"``.
They take
``tokenizer`` ("bytes" or "words": a vocabulary of the training split), ``max_length`` (T),
``vocab_size`` (words), ``in_memory`` and ``validation`` (``alearn.data.text_dataset``); pixel
options (``augment``, ``crop_padding``, ``normalize``, ``mean``, ``std``) are rejected.
"""

from __future__ import annotations

from alearn.data import augment, holdout, text, words
from alearn.data.dataset import ArraySource, Dataset, DatasetInfo
from alearn.data.specs import SPECS, DatasetSpec
from alearn.data.tfds_source import DatasetNotFoundError, resolve_data_dir

_COMMON_OPTIONS = ("augment", "crop_padding", "normalize", "mean", "std", "validation",
                   "train_examples")
_KIND_OPTIONS = {
    "mnist5k": (),
    "idx": (),
    "tfds": ("in_memory",),
    "tiny_imagenet": (),
    "synthetic": ("num_classes", "image_shape", "num_train", "num_test", "noise", "data_seed"),
}
NORMALIZATIONS = ("unit", "standardize", "pixel_mean", "pixel_mean_per_image")


def names() -> list[str]:
    """The valid dataset names."""
    return sorted(SPECS)


def _sources(spec: DatasetSpec, data_dir, kind_options: dict, train_only: bool = False):
    """(sources, metadata overrides) for ``spec``; ``train_only``: IDX and TFDS data do not
    even open the test split (in-memory mnist5k / Tiny ImageNet / synthetic have it anyway)."""
    if spec.kind == "mnist5k":
        from alearn.data import mnist5k  # pylint: disable=import-outside-toplevel
        return mnist5k.sources(), {}
    if spec.kind == "idx":
        from alearn.data import idx  # pylint: disable=import-outside-toplevel
        return idx.sources(data_dir, ("train",) if train_only else ("train", "test")), {}
    if spec.kind == "tfds":
        from alearn.data import tfds_source  # pylint: disable=import-outside-toplevel
        splits = {"train": "train"} if train_only else {"train": "train", "test": spec.test_split}
        return tfds_source.open_splits(
            spec.name, spec.tfds_name, data_dir, splits,
            extras=spec.build_extras, in_memory=bool(kind_options.get("in_memory", True)),
        ), {}
    if spec.kind == "tiny_imagenet":
        from alearn.data import tiny_imagenet  # pylint: disable=import-outside-toplevel
        return tiny_imagenet.open_splits(data_dir)
    from alearn.data import synthetic  # pylint: disable=import-outside-toplevel
    sources = synthetic.make_sources(**kind_options)
    meta = {"num_classes": kind_options.get("num_classes", 10),
            "image_shape": tuple(sources["train"].images.shape[1:])}
    return sources, meta


def create(name: str, *, data_dir: str | None = None, seed: int = 0, **options) -> Dataset:
    """Builds dataset ``name`` (see module docstring for ``options``).

    Args:
      name: one of ``names()``.
      data_dir: where prepared TFDS / Tiny ImageNet data lives (default ``$TFDS_DATA_DIR``,
        else ``~/tensorflow_datasets``); for ``fashion_mnist`` a folder with the original IDX
        files (default: the Debian package's); unused by ``mnist5k`` and ``synthetic``.
      seed: shuffling / augmentation seed; batches are a function of (seed, epoch).
      **options: preprocessing and dataset-specific options.

    Raises:
      ValueError: unknown name, option or option value (the message lists valid ones).
      DatasetNotFoundError: a TFDS / Tiny ImageNet / Fashion-MNIST dataset is not on disk;
        the message names the folders searched and the command that prepares or installs
        it. Never downloads.
      alearn.data.idx.IdxFormatError (a ValueError): a malformed Fashion-MNIST file.
    """
    key = str(name).lower()
    if key not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(names())}")
    spec = SPECS[key]
    if spec.kind == "text":
        from alearn.data import text_dataset  # pylint: disable=import-outside-toplevel
        return text_dataset.create(spec, data_dir, seed, options)
    valid = _COMMON_OPTIONS + _KIND_OPTIONS[spec.kind]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {key!r}; valid: {', '.join(valid)}"
        )
    policy = options.get("augment", spec.augment)
    if policy not in augment.POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; choose one of: "
                         f"{', '.join(augment.POLICIES)}")
    normalize = options.get("normalize", spec.normalize)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of: {', '.join(NORMALIZATIONS)}")

    validation = options.get("validation", None)
    if validation is not None:
        validation = holdout.check_fraction(validation)  # before any data is read
    train_examples = options.get("train_examples", None)
    kind_options = {k: v for k, v in options.items() if k in _KIND_OPTIONS[spec.kind]}
    sources, meta = _sources(spec, data_dir, kind_options, train_only=validation is not None)
    key_name = key
    if validation is not None:
        sources = holdout.split(sources["train"], validation)
        key_name += f"[validation={validation:g}]"
    if train_examples is not None:
        sources = {**sources, "train": holdout.subset(sources["train"], train_examples)}
        key_name += f"[train_examples={train_examples}]"
    if normalize == "unit":
        mean, std = (0.0,), (1.0,)
    else:
        mean, std = meta.get("mean", spec.mean), meta.get("std", spec.std)
    mean, std = options.get("mean", mean), options.get("std", std)
    info = DatasetInfo(
        name=key_name,
        num_classes=int(meta.get("num_classes", spec.num_classes)),
        image_shape=tuple(meta.get("image_shape", spec.image_shape)),
        num_train=len(sources["train"]),
        num_test=len(sources["test"]),
    )
    pixel_norm = normalize if normalize.startswith("pixel_mean") else ""
    return Dataset(info, sources, seed=seed, augment=policy,
                   crop_padding=options.get("crop_padding", spec.crop_padding), mean=mean,
                   std=std, pixel_norm=pixel_norm)


__all__ = [
    "ArraySource", "Dataset", "DatasetInfo", "DatasetNotFoundError", "DatasetSpec", "SPECS",
    "augment", "create", "names", "resolve_data_dir", "text", "words",
]
