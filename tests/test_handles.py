"""File handles: kernel handles sealed with a MAC, at most 32 bytes."""

import os
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from common.nfs3 import nfsstat3
from nfspd.fs import handles
from nfspd.fs.handles import FHSIZE2, HandleCodec, export_id_for_path, export_id_of
from nfspd.fs.types import FsError

KEY = b"k" * 32


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "export"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x")
    (tmp_path / "outside").write_bytes(b"secret")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, root, fd
    os.close(fd)


def status(excinfo):
    return excinfo.value.status


def fh_of(codec, path):
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        return codec.encode_fd(fd)
    finally:
        os.close(fd)


def test_handles_fit_nfsv2_and_name_the_object(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    fh = fh_of(codec, root / "a" / "b" / "f")
    assert len(fh) <= FHSIZE2
    assert export_id_of(fh) == 7
    fd, cfh = codec.open(fh)
    assert cfh == fh
    assert os.fstat(fd).st_ino == os.stat(root / "a" / "b" / "f").st_ino


def test_nfsv2_zero_padding_is_accepted(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    fh = fh_of(codec, root / "a")
    padded = fh + bytes(FHSIZE2 - len(fh))
    fd, cfh = codec.open(padded)
    assert cfh == fh
    assert os.fstat(fd).st_ino == os.stat(root / "a").st_ino
    # ...but nothing else after the handle.
    with pytest.raises(FsError) as e:
        codec.open(fh + b"\1" + bytes(FHSIZE2 - len(fh) - 1))
    assert status(e) == nfsstat3.NFS3ERR_BADHANDLE


def test_a_new_codec_with_the_same_key_opens_old_handles(tree):
    _, root, mfd = tree
    fh = fh_of(HandleCodec(7, KEY, mfd), root / "a" / "b")
    os.rename(root / "a", root / "moved")
    fd, _ = HandleCodec(7, KEY, mfd).open(fh)
    assert os.fstat(fd).st_ino == os.stat(root / "moved" / "b").st_ino


def test_another_key_rejects_the_handle(tree):
    _, root, mfd = tree
    fh = fh_of(HandleCodec(7, KEY, mfd), root / "a")
    with pytest.raises(FsError) as e:
        HandleCodec(7, b"other key 123456", mfd).open(fh)
    assert status(e) == nfsstat3.NFS3ERR_BADHANDLE


def test_a_handle_forged_for_a_file_outside_the_export_is_rejected(tree):
    tmp, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    good = fh_of(codec, root / "a")
    # Take the kernel handle of a file outside the export and splice it into
    # the right frame: without the key the MAC cannot be right.
    from nfspd.fs.syscalls import name_to_handle
    htype, data = name_to_handle(os.open(tmp / "outside", os.O_PATH), b"")
    forged = good[:5] + bytes([htype, len(data)]) + data + good[7 + len(data):]
    with pytest.raises(FsError) as e:
        codec.open(forged)
    assert status(e) == nfsstat3.NFS3ERR_BADHANDLE


def test_a_handle_of_another_export_is_rejected(tree):
    _, root, mfd = tree
    fh = fh_of(HandleCodec(7, KEY, mfd), root / "a")
    with pytest.raises(FsError) as e:
        HandleCodec(8, KEY, mfd).open(fh)
    assert status(e) == nfsstat3.NFS3ERR_BADHANDLE


@given(st.binary(max_size=70))
@settings(max_examples=300)
def test_garbage_is_a_bad_handle(data):
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FsError) as e:
            HandleCodec(7, KEY, fd).open(data)
        assert status(e) == nfsstat3.NFS3ERR_BADHANDLE
    finally:
        os.close(fd)


def test_every_truncation_and_every_flipped_bit_is_a_bad_handle(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    fh = fh_of(codec, root / "a" / "b" / "f")
    for n in range(len(fh)):
        with pytest.raises(FsError) as e:
            codec.open(fh[:n])
        assert status(e) == nfsstat3.NFS3ERR_BADHANDLE
    for i in range(len(fh)):
        for bit in range(8):
            bad = bytearray(fh)
            bad[i] ^= 1 << bit
            with pytest.raises(FsError) as e:
                HandleCodec(7, KEY, mfd).open(bytes(bad))
            assert status(e) in (nfsstat3.NFS3ERR_BADHANDLE,), (i, bit)


def test_a_removed_object_is_stale(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    fh = fh_of(codec, root / "a" / "b" / "f")
    os.unlink(root / "a" / "b" / "f")
    with pytest.raises(FsError) as e:
        HandleCodec(7, KEY, mfd).open(fh)
    assert status(e) == nfsstat3.NFS3ERR_STALE


def test_an_object_on_another_device_is_refused(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd, dev=os.stat(root).st_dev + 1)
    fh = codec.encode_fd(mfd)
    with pytest.raises(FsError) as e:
        codec.open(fh)
    assert status(e) == nfsstat3.NFS3ERR_STALE


def test_the_cache_stays_bounded_and_forget_drops_entries(tree):
    _, root, mfd = tree
    for i in range(40):
        (root / f"n{i}").write_bytes(b"")
    codec = HandleCodec(7, KEY, mfd, cache_size=16)
    fhs = [fh_of(codec, root / f"n{i}") for i in range(40)]
    for fh in fhs:
        codec.open(fh)
    assert len(codec._cache) == 16
    codec.forget_ino(os.stat(root / "n39").st_ino)
    assert fhs[39] not in codec._cache
    assert len(codec._cache) == 15


def test_handles_made_lately_are_kept_first_in_first_out_up_to_a_bound(tree, monkeypatch):
    _, root, mfd = tree
    monkeypatch.setattr(handles, "SEALED_CACHED", 8)
    for i in range(20):
        (root / f"n{i}").write_bytes(b"")
    codec = HandleCodec(7, KEY, mfd)
    lstats = [os.lstat(root / f"n{i}") for i in range(20)]
    for i, lst in enumerate(lstats):
        fh = fh_of(codec, root / f"n{i}")
        codec.remember(lst, fh)
        if i == 3:
            codec.forget_ino(lst.st_ino)      # gone from the middle of the order
    assert len(codec._sealed) == len(codec._minted) == 8
    assert [codec.known(lst) is not None for lst in lstats] == [False] * 12 + [True] * 8
    # Sealing again what was dropped gives the same handle (a cache, no state).
    assert fh_of(codec, root / "n0") == HandleCodec(7, KEY, mfd).encode_at(mfd, b"n0")


def test_export_ids_are_stable_u32s():
    a = export_id_for_path("/srv/nfsp")
    assert a == export_id_for_path("/srv/nfsp/") == export_id_for_path("/srv//nfsp")
    assert 0 <= a < 2**32
    assert a != export_id_for_path("/srv/other")


def test_export_id_of_malformed_is_none():
    assert export_id_of(b"") is None
    assert export_id_of(b"\2" + bytes(31)) is None
    assert export_id_of(None) is None


@settings(max_examples=1000)
@given(st.integers(0, 40), st.integers(0, (1 << 32) - 1), st.binary(max_size=40),
       st.integers(0, 3), st.booleans(), st.sampled_from([b"", b"\0", b"\0\0\0\0", b"x", b"\0x"]))
def test_export_id_of_reads_what_the_whole_parse_reads(n, export_id, tail, version, shaped, pad):
    # Its shortcut for canonical handles answers as the full parse does, for
    # canonical, padded, short, long and malformed ones alike.
    fh = bytes([version]) + export_id.to_bytes(4, "big") + bytes([1, n]) + tail
    if shaped and 0 < n <= handles.MAX_KERNEL_HANDLE:
        fh = (fh + bytes(64))[:handles._LENGTH[n]] + pad  # canonical, or padded after
    parts = handles._split(fh)
    assert export_id_of(fh) == (None if parts is None else parts[0])


def test_handles_made_again_are_the_same_bytes(tree):
    # Sealing is cached by kernel handle: a cached handle must be exactly the
    # one a codec that never saw the object makes (clients keep handles).
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    dfd = os.open(root / "a" / "b", os.O_PATH | os.O_DIRECTORY)
    try:
        first = codec.encode_at(dfd, "f")
        assert codec.encode_at(dfd, "f") == first
        assert HandleCodec(7, KEY, mfd).encode_at(dfd, "f") == first
        assert codec.canonical(first) == first
        forged = first[:-1] + bytes([first[-1] ^ 1])
        with pytest.raises(FsError) as e:
            codec.canonical(forged)
        assert status(e) == nfsstat3.NFS3ERR_BADHANDLE
    finally:
        os.close(dfd)


def test_a_remembered_handle_is_found_by_inode_and_ctime_only(tree):
    _, root, mfd = tree
    codec = HandleCodec(7, KEY, mfd)
    path = root / "a" / "b" / "f"
    st = os.lstat(path)
    assert codec.known(st) is None
    fh = fh_of(codec, path)
    codec.remember(st, fh)
    assert codec.known(os.lstat(path)) == fh
    # The same inode number with another ctime: changed, or another object.
    later = SimpleNamespace(st_ino=st.st_ino, st_ctime_ns=st.st_ctime_ns + 1)
    assert codec.known(later) is None
    assert codec.known(st) == fh
    # An object removed here is forgotten, whatever its ctime would say.
    codec.forget_ino(st.st_ino)
    assert codec.known(st) is None
