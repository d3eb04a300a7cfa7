"""NFSv2 XDR (RFC 1094 section 2.3): wire layout, bounds, and that hostile input
only ever raises XdrError."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import nfs2
from common.nfs2 import (NFSPROC, attrstat, createargs, diropargs, diropok, diropres, entry,
                         fattr, ftype, linkargs, nfsstat, readargs, readdirargs, readdirok,
                         readdirres, readlinkres, readokres, readres, renameargs, sattr,
                         sattrargs, statfsokres, statfsres, symlinkargs, timeval, writeargs)
from common.xdr import XdrError, decode, encode


def u32(*values):
    return b"".join(struct.pack(">I", v) for v in values)


def type_id(v):
    return getattr(v, "__name__", None) or repr(v)


def xdr_string(b):
    return u32(len(b)) + b + b"\0" * (-len(b) % 4)


FH = bytes(range(32))
FH2 = bytes(range(100, 132))


def sample_fattr(**kw):
    values = dict(type=ftype.NFREG, mode=0o100644, nlink=1, uid=1000, gid=100, size=12345,
                  blocksize=4096, rdev=0xFFFFFFFF, blocks=32, fsid=7, fileid=99,
                  atime=timeval(1, 2), mtime=timeval(3, 4), ctime=timeval(5, 6))
    values.update(kw)
    return fattr(**values)


SATTR = sattr(0o644, nfs2.SATTR_UNSET, 100, 0, timeval(10, 20),
              timeval(nfs2.SATTR_UNSET, nfs2.SATTR_UNSET))

# One realistic value per argument and result type of every procedure.
EXAMPLES = [
    (nfs2.fhandle, FH),
    (sattrargs, sattrargs(FH, SATTR)),
    (diropargs, diropargs(FH, b"name")),
    (readargs, readargs(FH, 8192, 4096, 0)),
    (writeargs, writeargs(FH, 0, 4096, 0, b"hello")),
    (createargs, createargs(diropargs(FH, b"new"), SATTR)),
    (renameargs, renameargs(diropargs(FH, b"a"), diropargs(FH2, b"b"))),
    (linkargs, linkargs(FH2, diropargs(FH, b"hard"))),
    (symlinkargs, symlinkargs(diropargs(FH, b"sym"), b"../target/x", SATTR)),
    (readdirargs, readdirargs(FH, b"\0\0\0\x05", 4096)),
    (attrstat, attrstat(nfsstat.NFS_OK, sample_fattr())),
    (attrstat, attrstat(nfsstat.NFSERR_STALE)),
    (diropres, diropres(nfsstat.NFS_OK, diropok(FH, sample_fattr(type=ftype.NFDIR)))),
    (diropres, diropres(nfsstat.NFSERR_NOENT)),
    (readlinkres, readlinkres(nfsstat.NFS_OK, b"/a/b")),
    (readres, readres(nfsstat.NFS_OK, readokres(sample_fattr(), b"abcde"))),
    (readdirres, readdirres(nfsstat.NFS_OK, readdirok(
        [entry(1, b".", b"\0\0\0\1"), entry(2, b"..", b"\0\0\0\2")], True))),
    (readdirres, readdirres(nfsstat.NFS_OK, readdirok([], False))),
    (statfsres, statfsres(nfsstat.NFS_OK, statfsokres(8192, 4096, 1000, 500, 400))),
    (nfs2.nfsstat_t, nfsstat.NFSERR_NOTEMPTY),
]
EXAMPLE_IDS = [f"{type_id(t)}-{i}" for i, (t, _) in enumerate(EXAMPLES)]


@pytest.mark.parametrize("xdr_type,value", EXAMPLES, ids=EXAMPLE_IDS)
def test_every_type_round_trips(xdr_type, value):
    assert decode(xdr_type, encode(xdr_type, value)) == value


@pytest.mark.parametrize("xdr_type,value", EXAMPLES, ids=EXAMPLE_IDS)
def test_every_proper_prefix_is_rejected_with_xdr_error(xdr_type, value):
    data = encode(xdr_type, value)
    for n in range(len(data)):
        with pytest.raises(XdrError):
            decode(xdr_type, data[:n])


def test_procedure_numbers_are_rfc_1094s():
    assert [p.value for p in NFSPROC] == list(range(18))
    assert NFSPROC.ROOT == 3 and NFSPROC.WRITECACHE == 7 and NFSPROC.STATFS == 17
    assert set(nfs2.PROCEDURE_TYPES) == set(NFSPROC)


def test_constants():
    assert (nfs2.NFS_MAXDATA, nfs2.NFS_MAXPATHLEN, nfs2.NFS_MAXNAMLEN, nfs2.NFS_FHSIZE) == \
        (8192, 1024, 255, 32)
    assert nfsstat.NFSERR_WFLUSH == 99 and nfsstat.NFSERR_INVAL == 22
    assert ftype.NFLNK == 5 and ftype.NFSOCK == 6 and ftype.NFFIFO == 8


# --- byte-for-byte against hand-assembled messages ------------------------


def test_lookup_args_layout():
    # fhandle is fixed-size: no length word; the name is padded to 4 bytes.
    assert encode(diropargs, diropargs(FH, b"foo")) == FH + u32(3) + b"foo\0"


def test_diropres_layout():
    res = diropres(nfsstat.NFS_OK, diropok(FH, sample_fattr()))
    expected = (u32(0) + FH
                + u32(1, 0o100644, 1, 1000, 100, 12345, 4096, 0xFFFFFFFF, 32, 7, 99)
                + u32(1, 2, 3, 4, 5, 6))
    assert encode(diropres, res) == expected
    # fattr is 17 words (the "68 bytes" of BSD's NFSX_NFSFATTR).
    assert len(encode(fattr, sample_fattr())) == 68


def test_error_results_carry_only_the_status():
    assert encode(attrstat, attrstat(nfsstat.NFSERR_ACCES)) == u32(13)
    assert encode(readdirres, readdirres(nfsstat.NFSERR_NOTDIR)) == u32(20)


def test_write_args_layout():
    args = writeargs(FH, 1, 2, 3, b"xyzzy")
    assert encode(writeargs, args) == FH + u32(1, 2, 3) + xdr_string(b"xyzzy")


def test_sattr_unset_is_all_ones():
    assert encode(sattr, nfs2.sattr_unset()) == b"\xff" * 32


def test_readdirres_layout():
    res = readdirres(nfsstat.NFS_OK, readdirok(
        [entry(10, b"a", b"\0\0\0\1"), entry(11, b"bcde", b"\0\0\0\2")], True))
    expected = (u32(0)
                + u32(1, 10) + xdr_string(b"a") + b"\0\0\0\1"
                + u32(1, 11) + xdr_string(b"bcde") + b"\0\0\0\2"
                + u32(0)          # no next entry
                + u32(1))         # eof
    assert encode(readdirres, res) == expected


def test_statfs_layout():
    res = statfsres(nfsstat.NFS_OK, statfsokres(8192, 4096, 3, 2, 1))
    assert encode(statfsres, res) == u32(0, 8192, 4096, 3, 2, 1)


# --- bounds --------------------------------------------------------------


def test_filename_longer_than_maxnamlen_is_rejected():
    with pytest.raises(XdrError):
        decode(diropargs, FH + xdr_string(b"x" * 256))
    assert decode(diropargs, FH + xdr_string(b"x" * 255)).name == b"x" * 255
    with pytest.raises(XdrError):
        encode(diropargs, diropargs(FH, b"x" * 256))


def test_path_longer_than_maxpathlen_is_rejected():
    data = encode(diropargs, diropargs(FH, b"s")) + xdr_string(b"p" * 1025) + b"\xff" * 32
    with pytest.raises(XdrError):
        decode(symlinkargs, data)


def test_write_data_longer_than_maxdata_is_rejected():
    with pytest.raises(XdrError):
        decode(writeargs, FH + u32(0, 0, 0) + xdr_string(b"d" * 8193))
    # A huge announced length with no data behind it fails before allocating.
    with pytest.raises(XdrError):
        decode(readokres, encode(fattr, sample_fattr()) + u32(0xFFFFFFF0))


def test_unknown_status_and_type_are_rejected():
    with pytest.raises(XdrError):
        decode(attrstat, u32(12345))
    bad_type = bytearray(encode(fattr, sample_fattr()))
    bad_type[0:4] = u32(9)
    with pytest.raises(XdrError):
        decode(fattr, bytes(bad_type))


def test_short_file_handle_is_rejected():
    with pytest.raises(XdrError):
        decode(nfs2.fhandle, FH[:31])
    with pytest.raises(XdrError):
        encode(nfs2.fhandle, FH[:31])


def test_trailing_bytes_are_rejected():
    with pytest.raises(XdrError):
        decode(nfs2.fhandle, FH + u32(0))


# --- properties ----------------------------------------------------------

u32s = st.integers(0, 0xFFFFFFFF)
fhs = st.binary(min_size=32, max_size=32)
names = st.binary(max_size=nfs2.NFS_MAXNAMLEN)
paths = st.binary(max_size=nfs2.NFS_MAXPATHLEN)
cookies = st.binary(min_size=4, max_size=4)
timevals = st.builds(timeval, u32s, u32s)
fattrs = st.builds(fattr, st.sampled_from(ftype), u32s, u32s, u32s, u32s, u32s, u32s, u32s, u32s,
                   u32s, u32s, timevals, timevals, timevals)
sattrs = st.builds(sattr, u32s, u32s, u32s, u32s, timevals, timevals)
dirops = st.builds(diropargs, fhs, names)
errors = st.sampled_from([s for s in nfsstat if s != nfsstat.NFS_OK])


def result(union, ok_body):
    return st.one_of(st.builds(union, st.just(nfsstat.NFS_OK), ok_body),
                     st.builds(union, errors))


VALUES = {
    nfs2.fhandle: fhs,
    sattrargs: st.builds(sattrargs, fhs, sattrs),
    diropargs: dirops,
    readargs: st.builds(readargs, fhs, u32s, u32s, u32s),
    writeargs: st.builds(writeargs, fhs, u32s, u32s, u32s, st.binary(max_size=nfs2.NFS_MAXDATA)),
    createargs: st.builds(createargs, dirops, sattrs),
    renameargs: st.builds(renameargs, dirops, dirops),
    linkargs: st.builds(linkargs, fhs, dirops),
    symlinkargs: st.builds(symlinkargs, dirops, paths, sattrs),
    readdirargs: st.builds(readdirargs, fhs, cookies, u32s),
    attrstat: result(attrstat, fattrs),
    diropres: result(diropres, st.builds(diropok, fhs, fattrs)),
    readlinkres: result(readlinkres, paths),
    readres: result(readres, st.builds(readokres, fattrs, st.binary(max_size=nfs2.NFS_MAXDATA))),
    readdirres: result(readdirres, st.builds(
        readdirok, st.lists(st.builds(entry, u32s, names, cookies), max_size=20), st.booleans())),
    statfsres: result(statfsres, st.builds(statfsokres, u32s, u32s, u32s, u32s, u32s)),
}


@pytest.mark.parametrize("xdr_type", list(VALUES), ids=type_id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_property(xdr_type, data):
    value = data.draw(VALUES[xdr_type])
    assert decode(xdr_type, encode(xdr_type, value)) == value


@pytest.mark.parametrize("xdr_type", list(VALUES), ids=type_id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_truncation_property(xdr_type, data):
    encoded = encode(xdr_type, data.draw(VALUES[xdr_type]))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(XdrError):
        decode(xdr_type, encoded[:cut])


@pytest.mark.parametrize("xdr_type", [t for t, _ in nfs2.PROCEDURE_TYPES.values()
                                      if t is not nfs2.Void], ids=type_id)
@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_xdr_error(xdr_type, garbage):
    try:
        decode(xdr_type, garbage)
    except XdrError:
        pass
