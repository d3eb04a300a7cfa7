"""The datafile store: data by (inode, seed), sparse, at real offsets."""

import errno
import os
import threading

import pytest

from common.runtime.datastore import MARKER, DataStore, StoreError, open_store


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


# -- store identity (open_store: the marker, refusals, runtime checks) -------------------


def marker_id(directory):
    lines = open(os.path.join(directory, MARKER)).read().splitlines()
    assert "format 1" in lines
    [line] = [x for x in lines if x.startswith("id ")]
    return bytes.fromhex(line[3:])


def test_a_missing_directory_becomes_a_new_marked_store_and_keeps_its_id(tmp_path):
    d = str(tmp_path / "a" / "new")
    s = open_store(d)
    try:
        assert s.initialised == "new"
        assert len(s.store_id) == 16 and s.store_id == marker_id(d)
        assert s.identity_problem() is None
        s.write(5, 6, 0, b"data")
    finally:
        s.close()
    # written atomically: nothing but the marker and the data is left over
    assert sorted(os.listdir(d)) == [MARKER, "05"]
    again = open_store(d)
    try:
        assert again.initialised is None and again.store_id == marker_id(d)
        assert again.read(5, 6, 0, 4) == b"data"
    finally:
        again.close()
    # --init on a marked store changes nothing
    third = open_store(d, init=True)
    assert third.initialised is None and third.store_id == again.store_id
    third.close()


def test_two_new_stores_get_different_ids(tmp_path):
    ids = set()
    for name in ("x", "y"):
        s = open_store(str(tmp_path / name))
        ids.add(s.store_id)
        s.close()
    assert len(ids) == 2


@pytest.mark.parametrize("content", [[], ["lost+found"]])
def test_an_existing_empty_directory_needs_init(tmp_path, content):
    d = tmp_path / "mountpoint"
    d.mkdir()
    for name in content:
        (d / name).mkdir()
    with pytest.raises(StoreError) as e:
        open_store(str(d))
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "not mounted" in msg and "--init" in msg
    assert sorted(os.listdir(d)) == content        # refused: nothing written
    s = open_store(str(d), init=True)
    assert s.initialised == "new" and s.store_id == marker_id(str(d))
    s.close()


def test_unmarked_datafiles_are_adopted_only_with_init(tmp_path):
    d = str(tmp_path / "old")
    plain = DataStore(d)
    plain.write(0x1234, 7, 100, b"kept")
    plain.close()
    with pytest.raises(StoreError) as e:
        open_store(d)
    assert "holds datafiles" in str(e.value) and "--init" in str(e.value)
    assert not os.path.exists(os.path.join(d, MARKER))
    s = open_store(d, init=True)
    try:
        assert s.initialised == "adopted" and s.store_id == marker_id(d)
        assert s.read(0x1234, 7, 100, 4) == b"kept"
    finally:
        s.close()


@pytest.mark.parametrize("init", [False, True])
def test_a_directory_that_is_no_store_is_refused_even_with_init(tmp_path, init):
    d = tmp_path / "home"
    (d / "05").mkdir(parents=True)
    (d / "notes.txt").write_text("mine")
    with pytest.raises(StoreError) as e:
        open_store(str(d), init=init)
    assert "not an iod data store" in str(e.value) and "notes.txt" in str(e.value)
    assert not (d / MARKER).exists()


def test_a_file_is_no_data_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(str(f))


@pytest.mark.parametrize("text, says", [
    ("garbage\x00\xff", "corrupt"),
    ("format 1\n", "corrupt"),
    ("format 1\nid 1234\n", "corrupt"),
    ("format 1\nid " + "AB" * 16 + "\n", "corrupt"),
    ("id " + "ab" * 16 + "\n", "corrupt"),
    ("format 1\nformat 1\nid " + "ab" * 16 + "\n", "corrupt"),
    ("format 1\nid " + "ab" * 16 + "\n" + "#" * 5000, "corrupt"),
    ("format 2\nid " + "ab" * 16 + "\n", "newer NFSP release"),
])
def test_a_corrupt_or_foreign_marker_is_refused(tmp_path, text, says):
    d = tmp_path / "s"
    open_store(str(d)).close()
    (d / MARKER).chmod(0o644)
    (d / MARKER).write_bytes(text.encode("latin-1"))
    for init in (False, True):
        with pytest.raises(StoreError) as e:
            open_store(str(d), init=init)
        assert says in str(e.value) and "\n" not in str(e.value)


def test_a_marker_that_is_a_symlink_or_a_directory_is_refused(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (tmp_path / "elsewhere").write_text("format 1\nid " + "ab" * 16 + "\n")
    (d / MARKER).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(str(d))
    (d / MARKER).unlink()
    (d / MARKER).mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        open_store(str(d))


def test_a_written_marker_parses_and_a_leftover_temporary_is_ignored(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / (MARKER + ".tmp-1-dead")).write_text("half")   # an init that crashed
    s = open_store(str(d), init=True)
    assert s.initialised == "new"
    s.close()
    assert oct(os.stat(d / MARKER).st_mode & 0o777) == "0o444"


def test_one_store_serves_one_iod_at_a_time(tmp_path):
    d = str(tmp_path / "s")
    first = open_store(d)
    with pytest.raises(StoreError, match="in use by another iod"):
        open_store(d)
    first.close()
    open_store(d).close()


def test_identity_problem_sees_the_marker_removed_or_replaced(tmp_path):
    d = tmp_path / "s"
    s = open_store(str(d))
    try:
        marker = d / MARKER
        text = marker.read_text()
        os.unlink(marker)
        assert "was removed" in s.identity_problem()
        marker.write_text(text)                       # same content, another file
        assert "replaced" in s.identity_problem()
    finally:
        s.close()


def test_identity_problem_sees_the_directory_moved_away(tmp_path):
    d = tmp_path / "s"
    s = open_store(str(d))
    try:
        os.rename(d, tmp_path / "moved")
        assert "gone from its path" in s.identity_problem()
        open_store(str(d)).close()                    # a new store where it was
        assert "another directory" in s.identity_problem()
    finally:
        s.close()


def test_a_plain_store_has_no_identity_to_lose(store):
    assert store.store_id is None and store.identity_problem() is None
