"""READDIRPLUS's lookups (nfspd/fs/dirplus.py): each entry packed straight
from its stat (Objects.entryplus3) is what the generic codec makes of the
entryplus3 a LOOKUP's handle and attributes give."""

import os
import pathlib
import stat

import pytest

from common import nfs3
from common import metafile
from common.metafile import HEADER as META_HEADER
from common.nfs3 import fattr3, ftype3, nfstime3, specdata3
from common.runtime import metarecord
from common.xdr import encode
from nfspd.datapath import DataPath
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, SetAttr

ROOT = Caller(0, 0)
_FTYPE3 = {stat.S_IFREG: ftype3.NF3REG, stat.S_IFDIR: ftype3.NF3DIR, stat.S_IFBLK: ftype3.NF3BLK,
           stat.S_IFCHR: ftype3.NF3CHR, stat.S_IFLNK: ftype3.NF3LNK,
           stat.S_IFSOCK: ftype3.NF3SOCK, stat.S_IFIFO: ftype3.NF3FIFO}


@pytest.fixture
def fs(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    fs = MetaFS(str(root), 0x5EED_F51D, b"k" * 32, DataPath())
    yield fs
    fs.close()


def time3(ns):
    return nfstime3((ns // 10**9) & 0xFFFFFFFF, ns % 10**9)


def expected_entry(fs, path, e, fh):
    """The entryplus3 the codec makes from the object's lstat, by RFC 1813's
    rules as MetaFS keeps them (a regular file's size the metafile's length
    less its header, its used bytes that rounded up to 4 KiB)."""
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFREG:
        size = st.st_size - META_HEADER
        used = (size + 4095) // 4096 * 4096
    else:
        size, used = st.st_size, st.st_blocks * 512
    attrs = fattr3(_FTYPE3[fmt], stat.S_IMODE(st.st_mode), st.st_nlink, st.st_uid, st.st_gid,
                   size, used, specdata3(os.major(st.st_rdev), os.minor(st.st_rdev)),
                   fs.fsid, st.st_ino, time3(st.st_atime_ns), time3(st.st_mtime_ns),
                   time3(st.st_ctime_ns))
    # entryplus3_bytes includes the value-follows word of the list before it.
    return b"\0\0\0\1" + encode(nfs3.entryplus3, nfs3.entryplus3(e.fileid, e.name, e.cookie,
                                                                  attrs, fh))


def populate(fs, root):
    d = fs.root_fh
    for name, size in ((b"empty", None), (b"sized", 5000), (b"huge", 3 << 40)):
        fh, _, _ = fs.create(d, name, ROOT, CreateHow.GUARDED, SetAttr(mode=0o640))
        if size is not None:
            fs.setattr(fh, ROOT, SetAttr(size=size))
    fs.mkdir(d, b"dir", ROOT, SetAttr(mode=0o755))
    fs.symlink(d, b"link", ROOT, b"sized", SetAttr())
    os.mkfifo(root / "fifo")
    try:
        os.mknod(root / "null", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "disk", 0o600 | stat.S_IFBLK, os.makedev(259, 70000))
    except PermissionError:
        pass  # (not root: no devices)
    # Times with nanoseconds, some beyond 2106 (they wrap at 32 bits).
    for i, name in enumerate(sorted(os.listdir(root))):
        os.utime(root / name, ns=(1_700_000_000_123_456_789 + i, 5_000_000_000_987_654_321 - i),
                 follow_symlinks=False)


def packed_names(fs, monkeypatch):
    """The names whose entry Objects.entryplus3 packs from now on."""
    objects = fs._objects
    names, pack = [], objects.entryplus3

    def spy(fileid, name, cookie, st, fh):
        names.append(name)
        return pack(fileid, name, cookie, st, fh)
    monkeypatch.setattr(objects, "entryplus3", spy)
    return names


def test_entries_packed_from_the_stat_are_the_codecs(fs, monkeypatch):
    root = fs._objects.export_path
    populate(fs, pathlib.Path(root))
    packed = packed_names(fs, monkeypatch)
    names = sorted(os.fsencode(n) for n in os.listdir(root))
    # Handles made (name_to_handle_at), then remembered, then cached after a LOOKUP.
    for listing in ("made", "remembered", "cached"):
        if listing == "cached":
            for name in names:
                fs.lookup(fs.root_fh, name, ROOT)
        del packed[:]
        rows, eof, _, _ = fs.readdirplus(fs.root_fh, 0, None, ROOT, 100, encoded=True)
        assert eof and sorted(e.name for e, _ in rows) == sorted(names + [b".", b".."])
        assert sorted(packed) == names, listing  # every one packed from its stat
        for e, entry in rows:
            fh, attr, _ = fs.lookup(fs.root_fh, e.name, ROOT)
            assert entry == nfs3.entryplus3_bytes(e.fileid, e.name, e.cookie, attr, fh)
            if e.name not in (b".", b".."):
                assert entry == expected_entry(fs, os.path.join(root, os.fsdecode(e.name)), e, fh)


def test_sizes_come_from_the_metafile_length(fs):
    populate(fs, pathlib.Path(fs._objects.export_path))
    rows, _, _, _ = fs.readdirplus(fs.root_fh, 0, None, ROOT, 100)
    sizes = {e.name: a.size for e, _, a in rows}
    assert (sizes[b"empty"], sizes[b"sized"], sizes[b"huge"]) == (0, 5000, 3 << 40)


def test_a_file_whose_size_is_in_its_record_is_looked_up(fs, monkeypatch):
    # A metafile of the form made before issue 15 (sized by its record, 56
    # bytes): its stat does not tell the size; its entry is made from the
    # Attr that reading the record gives.
    fs.create(fs.root_fh, b"old", ROOT, CreateHow.GUARDED, SetAttr())
    path = os.path.join(fs._objects.export_path, "old")
    meta = metarecord.of_path(path).replace(size=777)
    os.removexattr(path, metarecord.XATTR)
    with open(path, "r+b") as f:
        f.write(meta.encode())
        f.truncate(metafile.SIZE)
    packed = packed_names(fs, monkeypatch)
    rows, _, _, _ = fs.readdirplus(fs.root_fh, 0, None, ROOT, 100, encoded=True)
    assert b"old" not in packed
    (e, entry), = [r for r in rows if r[0].name == b"old"]
    fh, attr, _ = fs.lookup(fs.root_fh, b"old", ROOT)
    assert attr.size == 777
    assert entry == nfs3.entryplus3_bytes(e.fileid, e.name, e.cookie, attr, fh)


def test_files_made_here_are_found_by_inode_and_ctime_from_the_second_listing_on(fs):
    # A file CREATE made is in the handle cache only; the first listing takes
    # its handle from there and remembers it, so that a listing read again
    # finds every handle with one dict lookup (HandleCodec.known).
    names = [b"f%d" % i for i in range(20)]
    for name in names:
        fs.create(fs.root_fh, name, ROOT, CreateHow.GUARDED, SetAttr())
    codec, dfd = fs._objects.codec, os.open(fs._objects.export_path, os.O_RDONLY)
    try:
        stats = {n: os.stat(n, dir_fd=dfd, follow_symlinks=False) for n in names}
        assert all(codec.known(st) is None for st in stats.values())
        rows, _, _, _ = fs.readdirplus(fs.root_fh, 0, None, ROOT, 100, encoded=True)
        handles = {e.name: fs.lookup(fs.root_fh, e.name, ROOT)[0] for e, _ in rows}
        assert all(codec.known(stats[n]) == handles[n] for n in names)
    finally:
        os.close(dfd)


@pytest.mark.parametrize("encoded", [True, False])
def test_a_file_that_is_not_a_metafile_costs_its_own_entry_and_not_the_listing(fs, encoded):
    # Say a file copied into the export by hand: its LOOKUP fails (IO), so its
    # entry has no handle or attributes; the others keep theirs, on the first
    # listing and on those after (once the file is in the handle cache too).
    fs.create(fs.root_fh, b"good", ROOT, CreateHow.GUARDED, SetAttr())
    pathlib.Path(fs._objects.export_path, "foreign").write_bytes(b"")
    for _ in range(2):
        rows, eof, _, _ = fs.readdirplus(fs.root_fh, 0, None, ROOT, 100, encoded=encoded)
        assert eof
        bare = {}
        for e, *row in rows:
            nothing = nfs3.entryplus3_bytes(e.fileid, e.name, e.cookie, None, None)
            bare[e.name] = row == [nothing] if encoded else row == [None, None]
        assert bare == {b".": False, b"..": False, b"good": False, b"foreign": True}
