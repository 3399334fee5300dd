"""Objects handed between processes through one shared-memory block (app.shared_pickles): they come
back equal and in order, arrays writable; a block the analysis child makes outlives the child; a
block is freed exactly when asked; without room in /dev/shm the bytes travel in the descriptor."""

from __future__ import annotations

import os
import pickle
import sys
import time

import numpy as np
import psutil
import pytest

from app import shared_pickles
from app.shared_pickles import read_pickles, share_pickles, unlink_pickles

needs_dev_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")


def _objects():
    rng = np.random.default_rng(3)
    big = rng.integers(0, 2**31, size=(40, 50, 60), dtype=np.int64)
    return [
        {"coords": rng.integers(0, 500, size=(1000, 3)).astype(np.int32), "name": "FN 1"},
        [big, big[:, ::2, 1:]],  # a non-contiguous view is pickled in band, the array out of band
        b"raw bytes",
        (np.zeros(0, bool), np.float32(2.5), None),
        "last",
    ]


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _ended(pid: int) -> bool:
    # the process may go between any two looks at it
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _exists(block) -> bool:
    return block.name is not None and os.path.exists(f"/dev/shm/{block.name}")


@pytest.mark.parametrize("shared_memory", [pytest.param(True, marks=needs_dev_shm), False])
def test_objects_come_back_equal_in_order_with_writable_arrays(shared_memory):
    objects = _objects()
    block = share_pickles(objects, shared_memory=shared_memory)
    assert len(block) == len(objects)
    # the descriptor carries the bytes only without shared memory: it is what crosses the pipe
    assert (len(pickle.dumps(block)) > block.nbytes) == (not shared_memory)
    first = read_pickles(block, unlink=False)
    assert _equal(first, objects)
    arr = first[1][0]
    assert arr.flags.writeable and arr.flags.c_contiguous
    arr[0, 0, 0] = -1  # a copy, not the block
    again = read_pickles(block, unlink=True)
    assert _equal(again, objects)
    if shared_memory:
        assert not _exists(block)


@needs_dev_shm
def test_a_block_is_freed_when_asked_and_only_then():
    block = share_pickles(["x"])
    assert _exists(block)
    read_pickles(block, unlink=False)
    assert _exists(block)
    unlink_pickles(block)
    assert not _exists(block)
    unlink_pickles(block)  # gone already: nothing to do
    with pytest.raises(FileNotFoundError):
        read_pickles(block, unlink=True)


def test_without_room_in_dev_shm_the_bytes_travel_in_the_descriptor(monkeypatch):
    monkeypatch.setattr(shared_pickles, "shm_has_room", lambda nbytes: False)
    objects = _objects()
    block = share_pickles(objects)
    assert block.name is None and block.data is not None and len(block.data) == block.nbytes
    assert _equal(read_pickles(block, unlink=True), objects)


@needs_dev_shm
def test_room_is_what_dev_shm_has_free_less_a_margin(monkeypatch):
    import shutil

    free = shutil.disk_usage("/dev/shm").free
    assert shared_pickles.shm_has_room(free - shared_pickles.SHM_MARGIN_BYTES)
    assert not shared_pickles.shm_has_room(free)


@needs_dev_shm
@pytest.mark.skipif(sys.platform != "linux", reason="the analysis child is a Linux spawn child here")
def test_a_block_the_analysis_child_made_outlives_the_child():
    """The tree's block is kept between analyses; a child that ends (killed on cancel, or the app
    restarting it) must not take the block with it: spawn children share the parent's resource
    tracker, which frees nothing while this process lives."""
    from app.workers import call_in_process, shutdown_process_pool

    objects = _objects()
    shutdown_process_pool()
    try:
        pid = call_in_process(os.getpid)
        block = call_in_process(share_pickles, objects, shared_memory=True)
        assert _exists(block)
    finally:
        shutdown_process_pool()
    deadline = time.monotonic() + 60
    while not _ended(pid):
        assert time.monotonic() < deadline, "the analysis child did not end"
        time.sleep(0.05)
    try:
        assert _exists(block)
        assert _equal(read_pickles(block, unlink=False), objects)
    finally:
        unlink_pickles(block)
    assert not _exists(block)
