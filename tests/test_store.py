"""The datafile store: data by (inode, seed), sparse, at real offsets."""

import errno
import os
import threading

import pytest

from iod.store import DataStore


@pytest.fixture
def store(tmp_path):
    s = DataStore(str(tmp_path / "store"), max_open=4)
    yield s
    s.close()


def test_missing_datafile_reads_empty(store):
    assert store.read(1, 2, 0, 100) == b""


def test_data_lives_at_real_offsets_with_holes_as_zeros(store):
    store.write(10, 99, 1 << 20, b"abc")
    assert store.read(10, 99, (1 << 20) - 2, 10) == b"\0\0abc"
    assert store.read(10, 99, 5, 4) == b"\0\0\0\0"
    apparent, allocated = store.size(10, 99)
    assert apparent == (1 << 20) + 3
    assert allocated < 1 << 20  # sparse


def test_seed_tells_apart_files_that_share_an_inode(store):
    store.write(10, 1, 0, b"old")
    assert store.read(10, 2, 0, 3) == b""
    store.write(10, 2, 0, b"new")
    assert store.read(10, 1, 0, 3) == b"old"
    assert store.read(10, 2, 0, 3) == b"new"


def test_truncate_then_grow_reads_zeros(store):
    store.write(3, 3, 0, b"x" * 100)
    store.truncate(3, 3, 10)
    store.write(3, 3, 50, b"y")
    assert store.read(3, 3, 0, 60) == b"x" * 10 + bytes(40) + b"y"


def test_purge_forgets_and_list_enumerates(store):
    store.write(1, 11, 0, b"a")
    store.write(0x1234, 22, 0, b"b", sync=True)
    store.commit(1, 11)
    assert sorted(store.list()) == [(1, 11), (0x1234, 22)]
    assert store.purge(1, 11)
    assert not store.purge(1, 11)
    assert list(store.list()) == [(0x1234, 22)]
    assert store.read(1, 11, 0, 1) == b""


def test_files_fan_out_into_subdirectories(store):
    for ino in range(300):
        store.write(ino, 1, 0, b"z")
    top = [d for d in os.listdir(store.directory)]
    assert len(top) == 256
    assert sum(len(files) for _, _, files in os.walk(store.directory)) == 300


def test_more_files_than_open_descriptors(store):
    for ino in range(50):
        store.write(ino, 5, ino, bytes([ino]))
    for ino in range(50):
        assert store.read(ino, 5, ino, 1) == bytes([ino])
    assert len(store._open) <= 4


def test_concurrent_writers_and_readers(store):
    errors = []

    def worker(k):
        try:
            for i in range(200):
                ino = (k * 7 + i) % 20
                store.write(ino, 9, k * 10, b"%02d" % k)
                assert len(store.read(ino, 9, k * 10, 2)) == 2
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_statvfs_reports_space(store):
    total, free, avail, files, ffree, favail = store.statvfs()
    assert total >= free >= 0 and files > 0


def test_no_space_surfaces_as_oserror(tmp_path):
    # A tiny tmpfs is the honest way to run out of space.
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        s = DataStore(str(mnt / "s"))
        with pytest.raises(OSError) as e:
            s.write(1, 1, 0, b"x" * (1 << 20), sync=True)
        assert e.value.errno == errno.ENOSPC
        s.close()
    finally:
        os.system(f"umount {mnt}")


def test_removals_can_be_made_durable_in_one_call(tmp_path):
    store = DataStore(str(tmp_path))
    store.write(7, 9, 0, b"x", sync=True)
    assert store.purge(7, 9)
    store.sync_removals()  # syncfs on the store's directory: must not raise
    assert list(store.list()) == []
