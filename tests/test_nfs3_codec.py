"""NFSv3 XDR (RFC 1813 sections 2 and 3): wire layout, bounds, and that hostile
input only ever raises XdrError."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import nfs3, xdr
from common.nfs3 import (
    NFSPROC3, PROCEDURES, createhow3, createmode3, diropargs3, entry3, fattr3, ftype3, mknoddata3,
    nfsstat3, nfstime3, sattr3, set_atime, set_mtime, specdata3, stable_how, time_how, wcc_attr,
    wcc_data,
)
from common.xdr import XdrError, decode, encode


def u32(*values):
    return b"".join(struct.pack(">I", v) for v in values)


def u64(*values):
    return b"".join(struct.pack(">Q", v) for v in values)


def xdr_string(b):
    return u32(len(b)) + b + b"\0" * (-len(b) % 4)


FH = bytes(range(1, 9))
FH2 = bytes(range(100, 132))
VERF = b"verifier"


def sample_fattr(**kw):
    values = dict(type=ftype3.NF3REG, mode=0o644, nlink=1, uid=1000, gid=100, size=12345,
                  used=16384, rdev=specdata3(0, 0), fsid=7, fileid=99, atime=nfstime3(1, 2),
                  mtime=nfstime3(3, 4), ctime=nfstime3(5, 6))
    values.update(kw)
    return fattr3(**values)


FATTR_WORDS = (u32(1, 0o644, 1, 1000, 100) + u64(12345, 16384) + u32(0, 0) + u64(7, 99)
               + u32(1, 2, 3, 4, 5, 6))
WCC = wcc_data(wcc_attr(10, nfstime3(1, 0), nfstime3(2, 0)), sample_fattr())
SATTR = sattr3(0o755, None, 100, 0, set_atime(time_how.SET_TO_SERVER_TIME),
               set_mtime(time_how.SET_TO_CLIENT_TIME, nfstime3(9, 10)))
WHERE = diropargs3(FH, b"name")

# One realistic value for the arguments of every procedure.
ARGS = {
    NFSPROC3.NULL: None,
    NFSPROC3.GETATTR: nfs3.GETATTR3args(FH),
    NFSPROC3.SETATTR: nfs3.SETATTR3args(FH, SATTR, nfstime3(5, 6)),
    NFSPROC3.LOOKUP: nfs3.LOOKUP3args(WHERE),
    NFSPROC3.ACCESS: nfs3.ACCESS3args(FH, nfs3.ACCESS3_READ | nfs3.ACCESS3_EXECUTE),
    NFSPROC3.READLINK: nfs3.READLINK3args(FH),
    NFSPROC3.READ: nfs3.READ3args(FH, 1 << 40, 65536),
    NFSPROC3.WRITE: nfs3.WRITE3args(FH, 3, 5, stable_how.DATA_SYNC, b"hello"),
    NFSPROC3.CREATE: nfs3.CREATE3args(WHERE, createhow3(createmode3.EXCLUSIVE, VERF)),
    NFSPROC3.MKDIR: nfs3.MKDIR3args(WHERE, sattr3.unchanged()),
    NFSPROC3.SYMLINK: nfs3.SYMLINK3args(WHERE, nfs3.symlinkdata3(SATTR, b"../x/y")),
    NFSPROC3.MKNOD: nfs3.MKNOD3args(WHERE, mknoddata3(
        ftype3.NF3CHR, nfs3.devicedata3(SATTR, specdata3(1, 3)))),
    NFSPROC3.REMOVE: nfs3.REMOVE3args(WHERE),
    NFSPROC3.RMDIR: nfs3.RMDIR3args(WHERE),
    NFSPROC3.RENAME: nfs3.RENAME3args(WHERE, diropargs3(FH2, b"other")),
    NFSPROC3.LINK: nfs3.LINK3args(FH2, WHERE),
    NFSPROC3.READDIR: nfs3.READDIR3args(FH, 5, VERF, 4096),
    NFSPROC3.READDIRPLUS: nfs3.READDIRPLUS3args(FH, 5, VERF, 1024, 8192),
    NFSPROC3.FSSTAT: nfs3.FSSTAT3args(FH),
    NFSPROC3.FSINFO: nfs3.FSINFO3args(FH),
    NFSPROC3.PATHCONF: nfs3.PATHCONF3args(FH),
    NFSPROC3.COMMIT: nfs3.COMMIT3args(FH, 0, 0),
}

OK = nfsstat3.NFS3_OK
RESULTS = [
    (nfs3.GETATTR3res, nfs3.GETATTR3res(OK, nfs3.GETATTR3resok(sample_fattr()))),
    (nfs3.GETATTR3res, nfs3.GETATTR3res(nfsstat3.NFS3ERR_STALE)),
    (nfs3.SETATTR3res, nfs3.SETATTR3res(nfsstat3.NFS3ERR_NOT_SYNC,
                                        nfs3.SETATTR3resfail(wcc_data(None, None)))),
    (nfs3.LOOKUP3res, nfs3.LOOKUP3res(OK, nfs3.LOOKUP3resok(FH2, sample_fattr(), None))),
    (nfs3.LOOKUP3res, nfs3.LOOKUP3res(nfsstat3.NFS3ERR_NOENT, nfs3.LOOKUP3resfail(sample_fattr()))),
    (nfs3.READ3res, nfs3.READ3res(OK, nfs3.READ3resok(sample_fattr(), 3, True, b"abc"))),
    (nfs3.WRITE3res, nfs3.WRITE3res(OK, nfs3.WRITE3resok(WCC, 5, stable_how.FILE_SYNC, VERF))),
    (nfs3.CREATE3res, nfs3.CREATE3res(OK, nfs3.CREATE3resok(FH2, sample_fattr(), WCC))),
    (nfs3.RENAME3res, nfs3.RENAME3res(nfsstat3.NFS3ERR_XDEV, nfs3.RENAME3resfail(WCC, WCC))),
    (nfs3.READDIR3res, nfs3.READDIR3res(OK, nfs3.READDIR3resok(None, VERF, nfs3.dirlist3(
        [entry3(1, b".", 1), entry3(2, b"..", 2)], True)))),
    (nfs3.READDIRPLUS3res, nfs3.READDIRPLUS3res(OK, nfs3.READDIRPLUS3resok(
        sample_fattr(), VERF, nfs3.dirlistplus3(
            [nfs3.entryplus3(3, b"f", 9, sample_fattr(), FH),
             nfs3.entryplus3(4, b"g", 10, None, None)],
            False)))),
    (nfs3.FSINFO3res, nfs3.FSINFO3res(OK, nfs3.FSINFO3resok(
        None, 1 << 20, 1 << 20, 4096, 1 << 20, 1 << 20, 4096, 65536, (1 << 63) - 1,
        nfstime3(0, 1), nfs3.FSF3_LINK | nfs3.FSF3_SYMLINK))),
    (nfs3.PATHCONF3res, nfs3.PATHCONF3res(OK, nfs3.PATHCONF3resok(
        None, 32000, 255, True, True, False, True))),
    (nfs3.COMMIT3res, nfs3.COMMIT3res(OK, nfs3.COMMIT3resok(WCC, VERF))),
]


def args_type(proc):
    return PROCEDURES[proc][1]


@pytest.mark.parametrize("proc", list(NFSPROC3), ids=lambda p: p.name)
def test_every_args_type_round_trips(proc):
    value = ARGS[proc]
    assert decode(args_type(proc), encode(args_type(proc), value)) == value


@pytest.mark.parametrize("xdr_type,value", RESULTS, ids=lambda v: getattr(v, "__name__", ""))
def test_results_round_trip(xdr_type, value):
    assert decode(xdr_type, encode(xdr_type, value)) == value


@pytest.mark.parametrize("proc", list(NFSPROC3)[1:], ids=lambda p: p.name)
def test_every_proper_prefix_of_args_is_rejected_with_xdr_error(proc):
    data = encode(args_type(proc), ARGS[proc])
    for n in range(len(data)):
        with pytest.raises(XdrError):
            decode(args_type(proc), data[:n])


def test_procedure_table_is_rfc_1813s():
    assert [p.value for p in NFSPROC3] == list(range(22))
    assert (NFSPROC3.READDIRPLUS, NFSPROC3.COMMIT, NFSPROC3.MKNOD) == (17, 21, 11)
    assert set(PROCEDURES) == set(NFSPROC3)
    for proc, (name, a, r) in PROCEDURES.items():
        assert name == proc.name
        if proc != NFSPROC3.NULL:
            assert a.__name__ == f"{name}3args" and r.__name__ == f"{name}3res"


def test_constants():
    assert (nfs3.NFS3_FHSIZE, nfs3.NFS3_COOKIEVERFSIZE, nfs3.NFS3_CREATEVERFSIZE,
            nfs3.NFS3_WRITEVERFSIZE) == (64, 8, 8, 8)
    assert [nfs3.ACCESS3_READ, nfs3.ACCESS3_LOOKUP, nfs3.ACCESS3_MODIFY, nfs3.ACCESS3_EXTEND,
            nfs3.ACCESS3_DELETE, nfs3.ACCESS3_EXECUTE] == [1, 2, 4, 8, 0x10, 0x20]
    assert [nfs3.FSF3_LINK, nfs3.FSF3_SYMLINK, nfs3.FSF3_HOMOGENEOUS, nfs3.FSF3_CANSETTIME] == \
        [1, 2, 8, 0x10]
    assert (time_how.SET_TO_CLIENT_TIME, stable_how.FILE_SYNC, createmode3.EXCLUSIVE) == (2, 2, 2)


# --- byte-for-byte against hand-assembled messages ------------------------


def test_getattr3res_layout():
    res = nfs3.GETATTR3res(OK, nfs3.GETATTR3resok(sample_fattr()))
    expected = bytes.fromhex(
        "00000000"                                  # status NFS3_OK
        "00000001" "000001a4" "00000001"            # NF3REG, 0644, nlink
        "000003e8" "00000064"                       # uid 1000, gid 100
        "0000000000003039" "0000000000004000"       # size 12345, used 16384
        "00000000" "00000000"                       # rdev
        "0000000000000007" "0000000000000063"       # fsid 7, fileid 99
        "00000001" "00000002" "00000003" "00000004" "00000005" "00000006")  # a/m/ctime
    assert encode(nfs3.GETATTR3res, res) == expected
    assert len(encode(fattr3, sample_fattr())) == 84
    assert decode(nfs3.GETATTR3res, expected) == res


def test_lookup3args_layout():
    # Unlike NFSv2's fixed 32 bytes, nfs_fh3 is length-prefixed.
    expected = bytes.fromhex("00000008" "0102030405060708" "00000005" "68656c6c6f000000")
    args = nfs3.LOOKUP3args(diropargs3(FH, b"hello"))
    assert encode(nfs3.LOOKUP3args, args) == expected
    assert decode(nfs3.LOOKUP3args, expected) == args


def test_error_result_carries_resfail_arm():
    # LOOKUP3resfail: post_op_attr dir_attributes; FALSE means no attributes follow.
    res = nfs3.LOOKUP3res(nfsstat3.NFS3ERR_NOENT, nfs3.LOOKUP3resfail(None))
    assert encode(nfs3.LOOKUP3res, res) == u32(2, 0)
    res = nfs3.LOOKUP3res(nfsstat3.NFS3ERR_NOENT, nfs3.LOOKUP3resfail(sample_fattr()))
    assert encode(nfs3.LOOKUP3res, res) == u32(2, 1) + FATTR_WORDS
    # GETATTR's failure arm is void: the status alone.
    assert encode(nfs3.GETATTR3res, nfs3.GETATTR3res(nfsstat3.NFS3ERR_BADHANDLE)) == u32(10001)


def test_sattr3_layout():
    # set_it/how discriminants precede each value; DONT_CHANGE and FALSE carry nothing.
    assert encode(sattr3, sattr3.unchanged()) == u32(0, 0, 0, 0, 0, 0)
    assert encode(sattr3, SATTR) == (u32(1, 0o755) + u32(0) + u32(1, 100) + u32(1) + u64(0)
                                     + u32(1) + u32(2, 9, 10))


def test_setattr3args_guard_layout():
    args = nfs3.SETATTR3args(FH, sattr3.unchanged(), nfstime3(5, 6))
    assert encode(nfs3.SETATTR3args, args) == xdr_string(FH) + u32(0, 0, 0, 0, 0, 0) + u32(1, 5, 6)
    args = nfs3.SETATTR3args(FH, sattr3.unchanged(), None)
    assert encode(nfs3.SETATTR3args, args).endswith(u32(0, 0, 0, 0, 0, 0, 0))


def test_wcc_data_layout():
    assert encode(wcc_data, WCC) == u32(1) + u64(10) + u32(1, 0, 2, 0) + u32(1) + FATTR_WORDS
    assert encode(wcc_data, wcc_data(None, None)) == u32(0, 0)


def test_write3args_layout():
    args = nfs3.WRITE3args(FH, 3, 5, stable_how.DATA_SYNC, b"hello")
    assert encode(nfs3.WRITE3args, args) == \
        xdr_string(FH) + u64(3) + u32(5, 1) + xdr_string(b"hello")


def test_create3args_layouts():
    excl = nfs3.CREATE3args(WHERE, createhow3(createmode3.EXCLUSIVE, VERF))
    assert encode(nfs3.CREATE3args, excl) == xdr_string(FH) + xdr_string(b"name") + u32(2) + VERF
    guarded = nfs3.CREATE3args(WHERE, createhow3(createmode3.GUARDED, sattr3.unchanged()))
    assert encode(nfs3.CREATE3args, guarded).endswith(u32(1, 0, 0, 0, 0, 0, 0))


def test_mknoddata3_arms():
    chr_ = mknoddata3(ftype3.NF3CHR, nfs3.devicedata3(sattr3.unchanged(), specdata3(1, 3)))
    assert encode(mknoddata3, chr_) == u32(4, 0, 0, 0, 0, 0, 0, 1, 3)
    fifo = mknoddata3(ftype3.NF3FIFO, sattr3.unchanged())
    assert encode(mknoddata3, fifo) == u32(7, 0, 0, 0, 0, 0, 0)
    # Other types have a void arm, so the server can decode and answer BADTYPE.
    assert decode(mknoddata3, u32(1)) == mknoddata3(ftype3.NF3REG, None)


def test_readdir3res_layout():
    res = nfs3.READDIR3res(OK, nfs3.READDIR3resok(None, VERF, nfs3.dirlist3(
        [entry3(10, b"a", 1), entry3(11, b"bcde", 2)], True)))
    expected = (u32(0) + u32(0) + VERF
                + u32(1) + u64(10) + xdr_string(b"a") + u64(1)
                + u32(1) + u64(11) + xdr_string(b"bcde") + u64(2)
                + u32(0)       # no next entry
                + u32(1))      # eof
    assert encode(nfs3.READDIR3res, res) == expected


def test_readdirplus_entry_layout():
    e = nfs3.entryplus3(3, b"f", 9, None, FH)
    assert encode(nfs3.entryplus3, e) == \
        u64(3) + xdr_string(b"f") + u64(9) + u32(0) + u32(1) + xdr_string(FH)


def test_rename3args_from_field():
    wire = xdr_string(FH) + xdr_string(b"a") + xdr_string(FH2) + xdr_string(b"b")
    args = decode(nfs3.RENAME3args, wire)
    assert args.from_ == diropargs3(FH, b"a") and args.to == diropargs3(FH2, b"b")


# --- bounds and invalid input -----------------------------------------------


def test_file_handle_longer_than_fhsize_is_rejected():
    assert decode(nfs3.GETATTR3args, xdr_string(b"h" * 64)).object == b"h" * 64
    with pytest.raises(XdrError):
        decode(nfs3.GETATTR3args, xdr_string(b"h" * 65))
    with pytest.raises(XdrError):
        encode(nfs3.GETATTR3args, nfs3.GETATTR3args(b"h" * 65))


def test_overlong_names_and_paths_are_rejected_without_allocating():
    with pytest.raises(XdrError):
        decode(nfs3.LOOKUP3args, xdr_string(FH) + xdr_string(b"n" * (nfs3.FILENAME3_MAX + 1)))
    # Names over NAME_MAX still decode: the service answers NFS3ERR_NAMETOOLONG.
    assert decode(nfs3.LOOKUP3args, xdr_string(FH) + xdr_string(b"n" * 300)).what.name == b"n" * 300
    # A huge announced WRITE payload with no bytes behind it fails up front.
    with pytest.raises(XdrError):
        decode(nfs3.WRITE3args, xdr_string(FH) + u64(0) + u32(0, 0) + u32(0xFFFFFFF0))


def test_unknown_discriminants_are_rejected():
    with pytest.raises(XdrError):
        decode(nfs3.GETATTR3res, u32(12345))
    with pytest.raises(XdrError):
        decode(createhow3, u32(3))
    with pytest.raises(XdrError):
        decode(set_atime, u32(3))
    with pytest.raises(XdrError):
        decode(mknoddata3, u32(8))
    with pytest.raises(XdrError):
        decode(nfs3.WRITE3args, xdr_string(FH) + u64(0) + u32(0, 3) + xdr_string(b""))
    with pytest.raises(XdrError):  # bool other than 0/1 in post_op_attr
        decode(nfs3.LOOKUP3resfail, u32(2))


def test_fattr3_with_unknown_ftype_is_rejected():
    for bad in (0, 8, 0xFFFFFFFF):
        with pytest.raises(XdrError):
            decode(fattr3, u32(bad) + FATTR_WORDS[4:])


def test_fattr3_out_of_range_field_raises_xdr_error_when_packing():
    with pytest.raises(XdrError):
        encode(fattr3, sample_fattr(uid=-1))
    with pytest.raises(XdrError):
        encode(fattr3, sample_fattr(atime=None))


def test_trailing_bytes_are_rejected():
    with pytest.raises(XdrError):
        decode(nfs3.GETATTR3args, xdr_string(FH) + u32(0))


# --- the fattr3 fast path ------------------------------------------------------


def generic_struct_pack(value):
    """fattr3 packed field by field, the way every other Struct is."""
    p = xdr.Packer()
    xdr._StructMeta.pack(fattr3, p, value)
    return p.get_buffer()


def test_fast_fattr3_pack_matches_the_generic_struct():
    # Its speed (about 10x the field-by-field packing) is a benchmark's business,
    # not a test's: tests must not depend on timing.
    value = sample_fattr(size=(1 << 64) - 1, rdev=specdata3(8, 1))
    assert encode(fattr3, value) == generic_struct_pack(value)


class ServerAttrs:
    """What a server keeps: times in nanoseconds, a mode with its type bits."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@given(st.integers(-(1 << 40) * 10**9, (1 << 40) * 10**9), st.integers(0, (1 << 64) - 1))
def test_fattr3_bytes_is_the_fattr3_of_a_servers_attributes(ns, big):
    a = ServerAttrs(type=2, mode=0o40755, nlink=3, uid=1, gid=2, size=big, used=4096,
                    rdev_major=0, rdev_minor=0, fsid=big, fileid=7,
                    atime_ns=ns, mtime_ns=ns + 1, ctime_ns=-ns)

    def time3(t):  # nfstime3 seconds are 32 bits: times outside 1970..2106 wrap
        return nfstime3((t // 10**9) & 0xFFFFFFFF, t % 10**9)
    expected = fattr3(ftype3.NF3DIR, 0o755, 3, 1, 2, big, 4096, specdata3(0, 0), big, 7,
                      time3(ns), time3(ns + 1), time3(-ns))
    assert nfs3.fattr3_bytes(a) == encode(fattr3, expected)


# --- properties ----------------------------------------------------------


_strategies = {}


def strategy(t):
    """Values of any XDR type of common.xdr, built from its declaration."""
    key = id(t)
    if key not in _strategies:
        _strategies[key] = _strategy(t)
    return _strategies[key]


def _strategy(t):
    if t is xdr.Bool:
        return st.booleans()
    if t is xdr.Void:
        return st.none()
    if isinstance(t, type(xdr.UInt32)):
        return st.integers(t.lo, t.hi)
    if isinstance(t, xdr.Enum):
        return st.sampled_from(list(t.enum_cls))
    if isinstance(t, xdr.FixedOpaque):
        return st.binary(min_size=t.n, max_size=t.n)
    if isinstance(t, xdr.Opaque):
        return st.binary(max_size=min(t.maxlen or 70, 70))
    if isinstance(t, xdr.Optional):
        return st.none() | strategy(t.elem)
    if isinstance(t, xdr.LinkedList):
        return st.lists(strategy(t.elem), max_size=3)
    if isinstance(t, type) and issubclass(t, xdr.Struct):
        return st.builds(t, *[strategy(ft) for _, ft in t._fields])
    if isinstance(t, type) and issubclass(t, xdr.Union):
        # One branch per distinct arm (a result union has two: resok and resfail).
        by_arm = {}
        for d in t.switch.enum_cls:
            arm = t.arms.get(d, t.default)
            if arm is not None:
                by_arm.setdefault(id(arm), (arm, []))[1].append(d)
        return st.one_of([st.builds(t, st.sampled_from(discs), strategy(arm))
                          for arm, discs in by_arm.values()])
    raise AssertionError(f"no strategy for {t!r}")


ALL_TYPES = [t for _, a, r in PROCEDURES.values() for t in (a, r) if t is not xdr.Void]


@pytest.mark.parametrize("xdr_type", ALL_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_round_trip_and_truncation(xdr_type, data):
    value = data.draw(strategy(xdr_type))
    wire = encode(xdr_type, value)
    assert len(wire) % 4 == 0
    assert decode(xdr_type, wire) == value
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(XdrError):
        decode(xdr_type, wire[:cut])


@pytest.mark.parametrize("xdr_type", ALL_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_property_garbage_raises_only_xdr_error(xdr_type, garbage):
    try:
        value = decode(xdr_type, garbage)
    except XdrError:
        return
    # Whatever decodes is a value the type can carry (padding is not checked, so
    # the bytes need not be canonical).
    assert decode(xdr_type, encode(xdr_type, value)) == value


@settings(max_examples=200)
@given(st.data())
def test_property_fast_fattr3_matches_generic(data):
    value = data.draw(strategy(fattr3))
    assert encode(fattr3, value) == generic_struct_pack(value)
    assert decode(fattr3, generic_struct_pack(value)) == value


_server_attrs = st.builds(
    ServerAttrs, type=st.integers(1, 7), mode=st.integers(0, 0o177777),
    nlink=st.integers(0, 0xFFFFFFFF), uid=st.integers(0, 0xFFFFFFFF),
    gid=st.integers(0, 0xFFFFFFFF), size=st.integers(0, (1 << 64) - 1),
    used=st.integers(0, (1 << 64) - 1), rdev_major=st.integers(0, 0xFFFFFFFF),
    rdev_minor=st.integers(0, 0xFFFFFFFF), fsid=st.integers(0, (1 << 64) - 1),
    fileid=st.integers(0, (1 << 64) - 1), atime_ns=st.integers(-(1 << 70), 1 << 70),
    mtime_ns=st.integers(-(1 << 70), 1 << 70), ctime_ns=st.integers(-(1 << 70), 1 << 70))


def _fattr3_of(a):
    def time3(t):
        return nfstime3((t // 10**9) & 0xFFFFFFFF, t % 10**9)
    return fattr3(ftype3(a.type), a.mode & 0o7777, a.nlink, a.uid, a.gid, a.size, a.used,
                  specdata3(a.rdev_major, a.rdev_minor), a.fsid, a.fileid,
                  time3(a.atime_ns), time3(a.mtime_ns), time3(a.ctime_ns))


@given(st.lists(st.tuples(st.integers(0, (1 << 64) - 1), st.binary(min_size=1, max_size=255),
                          st.integers(0, (1 << 64) - 1), st.none() | _server_attrs,
                          st.none() | st.binary(max_size=64)), max_size=4),
       st.booleans())
def test_hand_packed_dirlistplus3_is_what_the_codec_gives(rows, eof):
    # READDIRPLUS packs its entries one by one (entryplus3_bytes) with the
    # list's end after them: the same bytes as the generic LinkedList.
    wire = b"".join(nfs3.entryplus3_bytes(*row) for row in rows) + nfs3.dirlist_end(eof)
    entries = [nfs3.entryplus3(fileid, name, cookie, None if a is None else _fattr3_of(a), fh)
               for fileid, name, cookie, a, fh in rows]
    assert wire == encode(nfs3.dirlistplus3, nfs3.dirlistplus3(entries, eof))


@given(st.lists(st.tuples(st.integers(0, (1 << 64) - 1), st.binary(min_size=1, max_size=255),
                          st.integers(0, (1 << 64) - 1)), max_size=4), st.booleans())
def test_hand_packed_dirlist3_is_what_the_codec_gives(rows, eof):
    wire = b"".join(nfs3.entry3_bytes(*row) for row in rows) + nfs3.dirlist_end(eof)
    entries = [nfs3.entry3(*row) for row in rows]
    assert wire == encode(nfs3.dirlist3, nfs3.dirlist3(entries, eof))


def test_hand_packed_entries_refuse_what_the_codec_refuses():
    with pytest.raises(XdrError):
        nfs3.entryplus3_bytes(1, b"n", 2, None, bytes(65))
    with pytest.raises(XdrError):
        nfs3.entry3_bytes(1, b"n" * (nfs3.FILENAME3_MAX + 1), 2)
