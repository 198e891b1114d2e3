"""Text data: the byte tokenizer, real TFDS array_record reads, and the missing-data errors."""

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from alearn import data
from alearn.data import text, words
from tests._text_tfds import write_text_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_byte_ids_hand_written():
    # "Hi" = 0x48 0x69 -> 72+4, 105+4; then padding 0.
    np.testing.assert_array_equal(text.encode(["Hi"], 4), [[76, 109, 0, 0]])
    # "é" = C3 A9, "€" = E2 82 AC (UTF-8), each byte + 4.
    np.testing.assert_array_equal(text.encode(["é€"], 6), [[199, 173, 230, 134, 176, 0]])
    # Truncation keeps the first bytes, even mid-character: "aé" -> 'a', C3 | A9 cut.
    np.testing.assert_array_equal(text.encode(["aé"], 2), [[101, 199]])
    # bytes are taken as they are; byte 0x00 is id 4 (a token), not padding; "" is all padding.
    np.testing.assert_array_equal(text.encode([b"\x00\xff", ""], 3), [[4, 259, 0], [0, 0, 0]])
    assert text.encode(["x"], 5).dtype == np.int32
    assert (text.VOCAB_SIZE, text.PAD_ID, text.BYTE_OFFSET) == (260, 0, 4)


def test_decode_inverts_encode_up_to_truncation():
    ids = text.encode(["naïve café ✓", "abc"], 32)
    assert [text.decode(r) for r in ids] == ["naïve café ✓", "abc"]
    assert text.decode(text.encode(["aé"], 2)[0]) == "a\ufffd"  # the cut é is replaced
    with pytest.raises(ValueError, match=r"ids must be in \[0, 260\), got min 0 max 260"):
        text.decode(np.array([0, 260]))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_max_length_must_be_positive_int(bad):
    with pytest.raises(ValueError, match=f"max_length must be a positive integer.*{bad!r}"):
        text.encode(["a"], bad)


def _ids(s: str, length: int) -> list[int]:
    """Independent reference: UTF-8 bytes + 4, cut, zero-padded (plain Python)."""
    raw = [b + 4 for b in s.encode("utf-8")][:length]
    return raw + [0] * (length - len(raw))


AG_TRAIN = [("World", "Talks resume", 0), ("Sports", "Köln wins", 1),
            ("Business", "Stocks fall", 2), ("Sci/Tech", "New chip", 3),
            ("World", "Peace deal", 0), ("Sports", "A very long match report", 1)]
AG_TEST = [("Ab", "ç", 3), ("Tech", "Qubits", 3), ("Biz", "Oil up", 2)]
IMDB_TRAIN = [("Great film ★★★★", 1), ("Dull.", 0), ("Loved it", 1), ("Meh", 0)]
IMDB_TEST = [("Bad", 0), ("Superb acting", 1)]
SST_TRAIN = [("a gem", 1), ("tedious", 0), ("fun ride", 1)]
SST_VAL = [("charming", 1), ("a mess", 0)]
SST_TEST = [("unlabelled one", -1), ("unlabelled two", -1), ("unlabelled three", -1)]

# name -> (tfds name, {split: examples}, expected train/test (text, label) in file order)
CASES = {
    "ag_news_subset": (
        "ag_news_subset",
        {"train": [{"title": t, "description": d, "label": y} for t, d, y in AG_TRAIN],
         "test": [{"title": t, "description": d, "label": y} for t, d, y in AG_TEST]},
        [(f"{t} {d}", y) for t, d, y in AG_TRAIN], [(f"{t} {d}", y) for t, d, y in AG_TEST]),
    "imdb_reviews": (
        "imdb_reviews/plain_text",
        {"train": [{"text": t, "label": y} for t, y in IMDB_TRAIN],
         "test": [{"text": t, "label": y} for t, y in IMDB_TEST]},
        IMDB_TRAIN, IMDB_TEST),
    "sst2": (
        "glue/sst2",
        {split: [{"sentence": t, "label": y, "idx": i} for i, (t, y) in enumerate(rows)]
         for split, rows in (("train", SST_TRAIN), ("validation", SST_VAL), ("test", SST_TEST))},
        SST_TRAIN, SST_VAL),  # "test" of alearn = TFDS validation (TFDS test labels are -1)
}


@pytest.fixture(scope="module")
def text_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_text")
    for tfds_name, splits, _, _ in CASES.values():
        write_text_dataset(root, tfds_name, splits)
    return str(root)


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_text_dataset_reads_real_array_record_files(text_data_dir, name, in_memory):
    _, _, train, test = CASES[name]
    ds = data.create(name, data_dir=text_data_dir, max_length=12, in_memory=in_memory)
    assert ds.info == data.DatasetInfo(name, data.SPECS[name].num_classes, (12,), len(train),
                                       len(test), vocab_size=260, input_dtype="int32")
    assert ds.info.max_length == 12
    (batch,) = list(ds.batches("test", 100))
    assert batch["image"].dtype == np.int32 and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["image"], [_ids(t, 12) for t, _ in test])
    np.testing.assert_array_equal(batch["label"], [y for _, y in test])
    # Train: shuffled, every example once per epoch, each row still paired with its label.
    rows = {tuple(_ids(t, 12)): y for t, y in train}
    seen = [(tuple(x), y) for b in ds.batches("train", 1, epoch=3) for x, y in
            zip(b["image"].tolist(), b["label"].tolist())]
    assert sorted(seen) == sorted(rows.items())


def test_text_ids_hand_written_from_files(text_data_dir):
    # ag_news test record 0: title "Ab", description "ç" -> b"Ab \xc3\xa7".
    ds = data.create("ag_news_subset", data_dir=text_data_dir, max_length=6)
    first = next(ds.batches("test", 1))
    np.testing.assert_array_equal(first["image"], [[69, 102, 36, 199, 171, 0]])
    assert first["label"].tolist() == [3]
    # Default length: the spec's 512 tokens.
    assert data.create("ag_news_subset", data_dir=text_data_dir).info.image_shape == (512,)


def test_text_validation_split_holds_out_training_examples(text_data_dir):
    ds = data.create("imdb_reviews", data_dir=text_data_dir, max_length=8, validation=0.5)
    assert (ds.info.num_train, ds.info.num_test) == (2, 2)  # one of each class held out
    held = next(ds.batches("test", 10))
    assert sorted(held["label"].tolist()) == [0, 1]
    train_rows = {tuple(_ids(t, 8)) for t, _ in IMDB_TRAIN}
    assert all(tuple(r) in train_rows for r in held["image"].tolist())


def test_words_hand_written():
    assert words.split_words("Don't stop! <br />Great.") == ["don't", "stop", "!", "great", "."]
    assert words.split_words("Café NAÏVE".encode()) == ["café", "naïve"]
    # counts: a 3, b 2, c 1, d 1 -> a = 4, b = 5; 6 ids = 4 specials + 2 words.
    vocab = words.Vocabulary.build(["b a a", "c b a", "d"], 6)
    assert vocab.words == ("a", "b") and vocab.size == 6
    np.testing.assert_array_equal(vocab.encode(["a c b", "b b b b b"], 4),
                                  [[4, 3, 5, 0], [5, 5, 5, 5]])  # c unknown (3); truncated
    # A tie (c and d once each) is broken alphabetically.
    assert words.Vocabulary.build(["b a a", "c b a", "d"], 7).words == ("a", "b", "c")
    with pytest.raises(ValueError, match="vocab_size must be an integer > 4.*got 4"):
        words.Vocabulary.build(["a"], 4)


def test_word_tokenizer_reads_real_files(text_data_dir):
    # sst2 train words, each once: a, fun, gem, ride, tedious -> the first 3 alphabetically.
    ds = data.create("sst2", data_dir=text_data_dir, tokenizer="words", vocab_size=7)
    assert ds.vocabulary.words == ("a", "fun", "gem")
    assert (ds.info.vocab_size, ds.info.image_shape) == (7, (64,))  # 256 bytes // 4
    batch = next(ds.batches("test", 10))  # TFDS validation: "charming", "a mess"
    np.testing.assert_array_equal(batch["image"][:, :3], [[3, 0, 0], [4, 3, 0]])
    assert batch["image"].dtype == np.int32 and not batch["image"][:, 3:].any()


def test_word_vocabulary_comes_from_the_training_part_only(text_data_dir):
    # The four IMDB train texts share no word, so the held-out pair's words are all unknown.
    ds = data.create("imdb_reviews", data_dir=text_data_dir, tokenizer="words",
                     validation=0.5, in_memory=False)
    held = next(ds.batches("test", 10))["image"]
    assert held[held > 0].tolist() == [3] * int((held > 0).sum()) and (held > 0).any()
    kept = [t for t, _ in IMDB_TRAIN if set(words.split_words(t)) & set(ds.vocabulary.words)]
    assert len(kept) == 2
    assert sorted(ds.vocabulary.words) == sorted({w for t in kept for w in words.split_words(t)})


@pytest.mark.parametrize("options,message", [
    ({"tokenizer": "chars"}, "unknown tokenizer 'chars' for dataset 'sst2'; choose one of: "
                             "bytes, words"),
    ({"vocab_size": 100}, "vocab_size=100 applies to tokenizer='words' only"),
    ({"tokenizer": "words", "vocab_size": 3}, "vocab_size must be an integer > 4"),
    ({"augment": "flip"}, "option.s. augment do not apply to text dataset 'sst2'"),
    ({"normalize": "unit", "mean": (0.5,)}, "mean, normalize do not apply to text dataset"),
    ({"crop_padding": 2}, "crop_padding do not apply.*valid: validation, max_length, in_memory"),
    ({"vocab": 10}, "unknown option.s. vocab for dataset 'sst2'"),
    ({"max_length": 0}, "max_length must be a positive integer"),
])
def test_pixel_options_are_rejected_for_text_before_reading(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        data.create("sst2", data_dir=str(tmp_path), **options)  # tmp_path holds no data


@pytest.mark.parametrize("name,tfds_name", [("ag_news_subset", "ag_news_subset"),
                                            ("imdb_reviews", "imdb_reviews/plain_text"),
                                            ("sst2", "glue/sst2")])
def test_missing_text_dataset_fails_fast_naming_the_command(tmp_path, name, tfds_name):
    root = tmp_path / "nothing_here"
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.create(name, data_dir=str(root))
    assert time.perf_counter() - start < 5
    assert (f"tfds build {tfds_name} --data_dir={root} --file_format=array_record"
            in str(e.value))


def test_missing_text_dataset_does_not_import_tfds():
    code = ("import sys, alearn.data as d\n"
            "try:\n    d.create('imdb_reviews', data_dir='/nonexistent/tfds')\n"
            "except d.DatasetNotFoundError as e:\n    print('tfds' in sys.modules, e)\n"
            "print('tensorflow_datasets' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "False", proc.stdout
    assert "tfds build imdb_reviews/plain_text" in proc.stdout


def test_binary_reports_missing_text_data_without_traceback(tmp_path):
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": str(empty)}
    env.pop("XLA_FLAGS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train",
         "--config=experiments/configs/al.py:mlp,mnist5k", "--config.dataset=imdb_reviews",
         f"--workdir={tmp_path / 'wd'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (f"tfds build imdb_reviews/plain_text --data_dir={empty} "
            "--file_format=array_record") in proc.stderr
    assert not os.path.exists(tmp_path / "wd" / "checkpoints")
    # CPU time, not wall: the shared test box may be loaded (1.6-1.8 s CPU, 3.3-3.5 s wall at
    # load 7 here). Mostly importing JAX / alearn; no data is read.
    assert cpu < 5, f"{cpu:.1f} s CPU"


def test_reproduce_check_datasets_names_missing_text_data(tmp_path):
    from experiments import reproduce
    from experiments.paper.tables import Run
    import ml_collections
    runs = [Run(name, "r", "AL", config=ml_collections.ConfigDict({"dataset": name}))
            for name in ("sst2", "ag_news_subset", "mnist5k")]
    with pytest.raises(reproduce.DatasetMissingError) as e:
        reproduce.check_datasets(runs, str(tmp_path))
    msg = str(e.value)
    assert f"tfds build glue/sst2 --data_dir={tmp_path}" in msg
    assert f"tfds build ag_news_subset --data_dir={tmp_path}" in msg
    assert "mnist5k" not in msg
