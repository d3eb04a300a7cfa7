"""The compiled fattr4 encoders (nfs4attrs.fattr4_bytes) give exactly the bytes
of the generic path (values() and nfs4.encode_attrs), for any bitmap a client
may send and any object."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import nfs4
from common.nfs3 import nfsstat3
from common.xdr import encode
from nfspd.fs.types import Attr, FileType, FsError, FsStat
from nfspd.nfs4attrs import SUPPORTED, AttrConfig, Obj, fattr4_bytes, values

# What Linux 6.1 asks when it revalidates an inode, and per READDIR entry.
LINUX_GETATTR = (
    nfs4.FATTR4_TYPE, nfs4.FATTR4_CHANGE, nfs4.FATTR4_SIZE, nfs4.FATTR4_FSID,
    nfs4.FATTR4_FILEID, nfs4.FATTR4_MODE, nfs4.FATTR4_NUMLINKS, nfs4.FATTR4_OWNER,
    nfs4.FATTR4_OWNER_GROUP, nfs4.FATTR4_RAWDEV, nfs4.FATTR4_SPACE_USED,
    nfs4.FATTR4_TIME_ACCESS, nfs4.FATTR4_TIME_METADATA, nfs4.FATTR4_TIME_MODIFY,
    nfs4.FATTR4_MOUNTED_ON_FILEID)
LINUX_READDIR = LINUX_GETATTR + (nfs4.FATTR4_RDATTR_ERROR, nfs4.FATTR4_FILEHANDLE)
# What the Linux client asks at mount time (server capabilities, fsinfo, pathconf, statfs).
LINUX_MOUNT = (
    nfs4.FATTR4_SUPPORTED_ATTRS, nfs4.FATTR4_FH_EXPIRE_TYPE, nfs4.FATTR4_LINK_SUPPORT,
    nfs4.FATTR4_SYMLINK_SUPPORT, nfs4.FATTR4_ACLSUPPORT, nfs4.FATTR4_CASE_INSENSITIVE,
    nfs4.FATTR4_CASE_PRESERVING, nfs4.FATTR4_MAXFILESIZE, nfs4.FATTR4_MAXREAD,
    nfs4.FATTR4_MAXWRITE, nfs4.FATTR4_LEASE_TIME, nfs4.FATTR4_TIME_DELTA,
    nfs4.FATTR4_FS_LAYOUT_TYPES, nfs4.FATTR4_LAYOUT_BLKSIZE, nfs4.FATTR4_MAXLINK,
    nfs4.FATTR4_MAXNAME, nfs4.FATTR4_SUPPATTR_EXCLCREAT, nfs4.FATTR4_FILES_AVAIL,
    nfs4.FATTR4_FILES_FREE, nfs4.FATTR4_FILES_TOTAL, nfs4.FATTR4_SPACE_AVAIL,
    nfs4.FATTR4_SPACE_FREE, nfs4.FATTR4_SPACE_TOTAL)


class FakeFs:
    """fsstat() as MetaFS answers it, or failing (then the figures are left out)."""

    def __init__(self, figures):
        self.figures = figures

    def fsstat(self, fh):
        if self.figures is None:
            raise FsError(nfsstat3.NFS3ERR_IO)
        return self.figures


def generic(obj, words):
    return encode(nfs4.fattr4, nfs4.encode_attrs(values(obj, words)))


u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
ns = st.integers(-(1 << 62), 1 << 62)
attrs = st.builds(
    lambda t, mode, nlink, uid, gid, size, used, rmaj, rmin, fileid, at, mt, ct: Attr(
        type=t, mode=mode, nlink=nlink, uid=uid, gid=gid, size=size, used=used,
        rdev_major=rmaj, rdev_minor=rmin, fsid=7, fileid=fileid, atime_ns=at, mtime_ns=mt,
        ctime_ns=ct),
    st.sampled_from(list(FileType)), st.integers(0, 0o177777), u32, u32, u32,
    st.integers(0, (1 << 63) - 1), u64, u32, u32, u64, ns, ns, ns)
figures = st.none() | st.builds(FsStat, u64, u64, u64, u64, u64, u64)
objects = st.builds(
    lambda fh, a, fs, fsid, mounted_on, cfg: Obj(fh, a, fs, fsid, mounted_on, cfg),
    st.binary(min_size=1, max_size=128), attrs,
    st.none() | st.builds(FakeFs, figures), st.tuples(u64, u64), st.none() | u64,
    st.builds(AttrConfig, lease_time=st.integers(1, 3600),
              max_io=st.sampled_from([1 << 20, 32 << 10]),
              domain=st.sampled_from([None, "example.org"]),
              layout_types=st.sampled_from([(), (1,), (1, 4)]),
              layout_blksize=st.none() | st.integers(4096, 1 << 22)))
# Any attribute numbers: supported or not (those are left out), in any words.
bitmaps = st.one_of(
    st.sampled_from([LINUX_GETATTR, LINUX_READDIR, LINUX_MOUNT, tuple(SUPPORTED), ()]),
    st.lists(st.sampled_from(sorted(SUPPORTED)), max_size=12),
    st.lists(st.integers(0, nfs4.FATTR4_MAX), max_size=12),
).map(lambda nums: nfs4.attrs_to_bitmap4(nums))


@settings(max_examples=400, deadline=None)
@given(objects, bitmaps)
def test_the_compiled_fattr4_is_the_generic_one(obj, words):
    assert fattr4_bytes(obj, words) == generic(obj, words)


@pytest.mark.parametrize("words", [
    nfs4.attrs_to_bitmap4(LINUX_GETATTR), nfs4.attrs_to_bitmap4(LINUX_READDIR),
    nfs4.attrs_to_bitmap4(LINUX_MOUNT), [0xFFFFFFFF] * 3, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1], []])
def test_bitmaps_linux_sends_with_trailing_words_and_unknown_bits(words):
    a = Attr(type=FileType.REG, mode=0o100644, nlink=1, uid=1000, gid=1000, size=12345,
             used=16384, rdev_major=0, rdev_minor=0, fsid=7, fileid=99, atime_ns=1,
             mtime_ns=2_000_000_001, ctime_ns=-3)
    for fs in (None, FakeFs(FsStat(1, 2, 3, 4, 5, 6)), FakeFs(None)):
        obj = Obj(b"\1" * 31, a, fs, (7, 0), None, AttrConfig(layout_types=(1,)))
        assert fattr4_bytes(obj, words) == generic(obj, words)
        # and again, from the compiled encoder kept for this bitmap
        assert fattr4_bytes(obj, list(words)) == generic(obj, words)


def test_an_unavailable_fsstat_leaves_its_figures_out():
    a = Attr(type=FileType.DIR, mode=0o755, nlink=2, uid=0, gid=0, size=4096, used=4096,
             rdev_major=0, rdev_minor=0, fsid=7, fileid=2, atime_ns=0, mtime_ns=0, ctime_ns=0)
    words = nfs4.attrs_to_bitmap4([nfs4.FATTR4_SIZE, nfs4.FATTR4_SPACE_FREE])
    data = fattr4_bytes(Obj(b"\1", a, FakeFs(None), (7, 0), None, AttrConfig()), words)
    decoded = nfs4.decode_attrs(nfs4.decode(nfs4.fattr4, data))
    assert decoded == {nfs4.FATTR4_SIZE: 4096}
