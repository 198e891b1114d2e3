"""The trainer's input path: prefetching keeps order and contents, and fails loudly."""

import threading

import numpy as np
import pytest

from alearn import train


def _host_batches(n):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield {"image": rng.normal(size=(8, 3)).astype(np.float32),
               "label": np.full((8,), i, np.int32)}


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetch_yields_the_same_batches_in_order_placed_on_the_mesh(depth):
    mesh = train.data_mesh()
    got = list(train.prefetch_to_device(_host_batches(7), mesh, depth=depth))
    want = list(_host_batches(7))
    assert len(got) == 7
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g["image"]), w["image"])
        np.testing.assert_array_equal(np.asarray(g["label"]), w["label"])
        assert g["image"].sharding == train.shard_batch(w, mesh)["image"].sharding


def test_prefetch_reraises_the_producer_error_after_the_good_batches():
    def broken():
        yield from _host_batches(2)
        raise OSError("disk gone")

    it = train.prefetch_to_device(broken(), train.data_mesh())
    assert next(it)["label"][0] == 0 and next(it)["label"][0] == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    before = {t.ident for t in threading.enumerate()}
    it = train.prefetch_to_device(_host_batches(1000), train.data_mesh(), depth=2)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate()
                if t.name == "alearn-prefetch" and t.ident not in before and t.is_alive()]


def test_prefetch_rejects_a_bad_depth():
    with pytest.raises(ValueError, match="depth=0"):
        next(train.prefetch_to_device(_host_batches(1), train.data_mesh(), depth=0))


def test_prefetch_without_a_mesh_yields_the_host_batches_in_order():
    """``mesh=None``: the thread prepares the host batches only (sequential AL's input path,
    whose jitted step transfers them)."""
    got = list(train.prefetch_to_device(_host_batches(5), None))
    want = list(_host_batches(5))
    assert len(got) == 5
    for g, w in zip(got, want):
        assert isinstance(g["image"], np.ndarray)
        np.testing.assert_array_equal(g["image"], w["image"])
        np.testing.assert_array_equal(g["label"], w["label"])
