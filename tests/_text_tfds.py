"""Writes REAL TFDS-format array_record text datasets for tests (no TensorFlow, no download).

The builder's own ``DatasetInfo`` (features, version, config) comes from the installed
tensorflow-datasets package; ``tfds.core.SequentialWriter`` with
``file_format="array_record"`` serialises each example with the builder's features
(``tf.train.Example`` protos from TFDS' bundled ``tf_example_pb2``, not TensorFlow) into
``<data_dir>/<name>[/<config>]/<version>/<name>-<split>.array_record-00000`` and writes
``dataset_info.json`` / ``features.json`` — the layout ``tfds.data_source`` reads.
"""

from __future__ import annotations

import os


def write_text_dataset(data_dir, tfds_name: str, splits: dict[str, list[dict]]) -> str:
    """Writes ``{split: [example, ...]}`` for builder ``tfds_name``; returns the version dir."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import sequential_writer
    if tfds_name.startswith("glue/"):
        import tensorflow_datasets.text.glue  # noqa: F401 — registers the GLUE builder

    builder = tfds.builder(tfds_name, data_dir=str(data_dir), file_format="array_record")
    info = builder.info
    os.makedirs(info.data_dir, exist_ok=True)
    writer = sequential_writer.SequentialWriter(info, max_examples_per_shard=1000,
                                                file_format="array_record")
    writer.initialize_splits(list(splits))
    writer.add_examples(splits)
    writer.close_all()
    return str(info.data_dir)
