"""NFSv4.1/4.2 XDR (RFC 5662, RFC 7863, RFC 8276): wire layout checked against
the .x byte by byte, every operation's arguments and results round-tripping,
COMPOUND decoding as Linux nfsd answers it, fattr4 values, and hostile input
refused with XdrError without allocating by the hostile length."""

import struct
import tracemalloc

import pytest

from common import nfs4
from common.nfs4 import (
    COMPOUND4args, COMPOUND4res, EXCHANGE_ID4args, GETATTR4args, GETATTR4res, GETATTR4resok,
    OPEN4args, OPERATIONS, PUTFH4args, PUTFH4res, SEQUENCE4args, SEQUENCE4res, SEQUENCE4resok,
    client_owner4, createhow4, createmode4, fattr4, nfs_argop4, nfs_impl_id4, nfs_opnum4,
    nfs_resop4, nfsstat4, nfstime4, open_claim4, open_claim_type4, openflag4, opentype4,
    settime4, specdata4, state_owner4, state_protect4_a, state_protect_how4, stateid4, time_how4,
)
from common.xdr import Unpacker, XdrError, decode, encode
from tools.dev.fuzz.targets import samples

OP = nfs_opnum4


def u32(*values):
    return b"".join(struct.pack(">I", v) for v in values)


def u64(*values):
    return b"".join(struct.pack(">Q", v) for v in values)


def xdr_string(b):
    return u32(len(b)) + b + b"\0" * (-len(b) % 4)


SESSION = bytes(range(16))
FH = bytes(range(1, 29))  # 28 bytes: the length of a typical Linux handle, no padding
FH_ODD = b"\x07" * 29     # padding to 32
# What the Linux client asks GETATTR for after a LOOKUP (nfs4_fattr_bitmap):
# type change size fsid fileid | mode numlinks owner owner_group rawdev
# space_used time_access time_metadata time_modify mounted_on_fileid.
LINUX_GETATTR_MASK = [0x0010011A, 0x00B0A23A, 0]


# --- the status and operation numbers, as the .x spells them ---------------------------


def test_status_and_operation_numbers_are_the_xs():
    assert nfsstat4.NFS4ERR_BADXDR == 10036
    assert nfsstat4.NFS4ERR_OP_ILLEGAL == 10044
    assert nfsstat4.NFS4ERR_TOO_MANY_OPS == 10070
    assert nfsstat4.NFS4ERR_CLIENTID_BUSY == 10074  # 10073 is unused
    assert 10073 not in {s.value for s in nfsstat4}
    assert 19 not in {s.value for s in nfsstat4}   # NFSv3's NODEV, never reused
    assert nfsstat4.NFS4ERR_OFFLOAD_NO_REQS == 10094
    assert OP.OP_ACCESS == 3 and OP.OP_RELEASE_LOCKOWNER == 39
    assert OP.OP_BACKCHANNEL_CTL == 40 and OP.OP_RECLAIM_COMPLETE == 58
    assert OP.OP_ALLOCATE == 59 and OP.OP_CLONE == 71 and OP.OP_REMOVEXATTR == 75
    assert OP.OP_ILLEGAL == 10044


def test_every_operation_has_one_row():
    assert set(OPERATIONS) == set(nfs_opnum4)
    assert set(nfs_argop4.arms) == set(nfs_resop4.arms) == set(nfs_opnum4)


# --- byte-for-byte vectors, built from the RFC's layout ---------------------------------

SEQ_PUTFH_GETATTR = COMPOUND4args(b"", 2, [
    nfs_argop4(OP.OP_SEQUENCE, SEQUENCE4args(SESSION, 7, 0, 0, False)),
    nfs_argop4(OP.OP_PUTFH, PUTFH4args(FH)),
    nfs_argop4(OP.OP_GETATTR, GETATTR4args(LINUX_GETATTR_MASK)),
])
SEQ_PUTFH_GETATTR_BYTES = (
    xdr_string(b"") + u32(2) + u32(3)
    + u32(53) + SESSION + u32(7, 0, 0, 0)
    + u32(22) + u32(28) + FH
    + u32(9) + u32(3, 0x0010011A, 0x00B0A23A, 0))


def test_sequence_putfh_getattr_compound_as_the_linux_client_sends_it():
    assert nfs4.encode_compound(SEQ_PUTFH_GETATTR) == SEQ_PUTFH_GETATTR_BYTES
    assert nfs4.decode_compound(SEQ_PUTFH_GETATTR_BYTES) == SEQ_PUTFH_GETATTR
    # as the RPC layer hands it over: a view into the received record
    record = memoryview(b"\0" * 40 + SEQ_PUTFH_GETATTR_BYTES)
    assert nfs4.decode_compound(record[40:]) == SEQ_PUTFH_GETATTR
    assert decode(COMPOUND4args, SEQ_PUTFH_GETATTR_BYTES) == SEQ_PUTFH_GETATTR


def test_its_reply_layout():
    attrs = nfs4.encode_attrs({nfs4.FATTR4_TYPE: nfs4.nfs_ftype4.NF4DIR, nfs4.FATTR4_SIZE: 4096})
    res = COMPOUND4res(nfsstat4.NFS4_OK, b"", [
        nfs_resop4(OP.OP_SEQUENCE, SEQUENCE4res(
            nfsstat4.NFS4_OK, SEQUENCE4resok(SESSION, 7, 0, 63, 63, 0))),
        nfs_resop4(OP.OP_PUTFH, PUTFH4res(nfsstat4.NFS4_OK)),
        nfs_resop4(OP.OP_GETATTR, GETATTR4res(nfsstat4.NFS4_OK, GETATTR4resok(attrs))),
    ])
    expected = (u32(0) + xdr_string(b"") + u32(3)
                + u32(53, 0) + SESSION + u32(7, 0, 63, 63, 0)
                + u32(22, 0)
                + u32(9, 0) + u32(1, (1 << 1) | (1 << 4)) + u32(12) + u32(2) + u64(4096))
    assert nfs4.encode_compound_res(res) == expected
    assert nfs4.decode_compound_res(expected) == res
    parts = [nfs4.encode_resop(r) for r in res.resarray]
    assert nfs4.compound_res_bytes(res.status, res.tag, parts) == expected
    assert nfs4.compound_res_size(res.tag, parts) == len(expected)


EXCHANGE_ID = EXCHANGE_ID4args(
    client_owner4(b"\x5f\x00\x00\x01\x00\x00\x00\x02", b"Linux NFSv4.2 client.example"),
    nfs4.EXCHGID4_FLAG_SUPP_MOVED_REFER | nfs4.EXCHGID4_FLAG_BIND_PRINC_STATEID,
    state_protect4_a(state_protect_how4.SP4_NONE),
    [nfs_impl_id4(b"kernel.org", b"Linux 6.1.0 #1 SMP x86_64", nfstime4(0, 0))])


def test_exchange_id_layout():
    expected = (b"\x5f\x00\x00\x01\x00\x00\x00\x02" + xdr_string(b"Linux NFSv4.2 client.example")
                + u32(0x101) + u32(0)
                + u32(1) + xdr_string(b"kernel.org") + xdr_string(b"Linux 6.1.0 #1 SMP x86_64")
                + u64(0) + u32(0))
    assert encode(EXCHANGE_ID4args, EXCHANGE_ID) == expected
    assert decode(EXCHANGE_ID4args, expected) == EXCHANGE_ID
    wire = u32(42) + expected
    assert nfs4.decode_argop(Unpacker(wire), 1) == nfs_argop4(OP.OP_EXCHANGE_ID, EXCHANGE_ID)


def test_exchange_id_with_two_implementation_ids_is_refused():
    wire = bytearray(encode(EXCHANGE_ID4args, EXCHANGE_ID))
    at = wire.index(u32(1) + xdr_string(b"kernel.org"))
    wire[at:at + 4] = u32(2)
    with pytest.raises(XdrError):
        decode(EXCHANGE_ID4args, bytes(wire))


OPEN_GUARDED = OPEN4args(
    0, nfs4.OPEN4_SHARE_ACCESS_BOTH, nfs4.OPEN4_SHARE_DENY_NONE,
    state_owner4(0x1122334455667788, b"open id:\x00\x00\x00\x2a"),
    openflag4(opentype4.OPEN4_CREATE, createhow4(
        createmode4.GUARDED4, nfs4.encode_attrs({nfs4.FATTR4_MODE: 0o644}))),
    open_claim4(open_claim_type4.CLAIM_NULL, b"newfile"))


def test_open_claim_null_guarded_layout():
    expected = (u32(0, 3, 0) + u64(0x1122334455667788) + xdr_string(b"open id:\x00\x00\x00\x2a")
                + u32(1) + u32(1)                             # OPEN4_CREATE, GUARDED4
                + u32(2, 0, 1 << 1) + u32(4) + u32(0o644)     # fattr4 {mode}
                + u32(0) + xdr_string(b"newfile"))            # CLAIM_NULL
    assert encode(OPEN4args, OPEN_GUARDED) == expected
    assert decode(OPEN4args, expected) == OPEN_GUARDED
    how = OPEN_GUARDED.openhow.body
    assert nfs4.decode_attrs(how.body) == {nfs4.FATTR4_MODE: 0o644}


def test_open_without_create_has_no_createhow():
    args = OPEN_GUARDED.replace(openhow=openflag4(opentype4.OPEN4_NOCREATE),
                                claim=open_claim4(open_claim_type4.CLAIM_FH))
    wire = encode(OPEN4args, args)
    assert wire.endswith(u32(0) + u32(4))
    assert decode(OPEN4args, wire) == args


def test_stateid_is_a_seqid_and_twelve_bytes():
    s = stateid4(1, b"abcdefghijkl")
    assert encode(stateid4, s) == u32(1) + b"abcdefghijkl"
    with pytest.raises(XdrError):
        encode(stateid4, stateid4(1, b"short"))


# --- every operation's arguments and results round-trip --------------------------------


def _cases():
    for op, (args, res) in OPERATIONS.items():
        for kind, t in (("args", args), ("res", res)):
            yield pytest.param(t, id=f"{op.name}-{kind}")


@pytest.mark.parametrize("t", list(_cases()))
def test_round_trip_and_truncation(t):
    values = samples(t)
    assert values
    for v in values:
        wire = encode(t, v)
        assert decode(t, wire) == v
        assert encode(t, decode(t, wire)) == wire
        for cut in range(len(wire)):
            with pytest.raises(XdrError):
                decode(t, wire[:cut])


@pytest.mark.parametrize("op", list(nfs_opnum4), ids=lambda op: op.name)
def test_each_operation_alone_in_a_compound(op):
    args = OPERATIONS[op][0]
    for body in samples(args)[:6]:
        c = COMPOUND4args(b"tag", 2, [nfs_argop4(op, body)])
        got = nfs4.decode_compound(nfs4.encode_compound(c))
        if op is OP.OP_ILLEGAL:
            assert got.argarray == [nfs_argop4(OP.OP_ILLEGAL)]
        else:
            assert got == c


@pytest.mark.parametrize("op", list(nfs_opnum4), ids=lambda op: op.name)
def test_every_operation_can_be_answered_with_a_bare_error(op):
    r = nfs4.resop_error(op, nfsstat4.NFS4ERR_NOTSUPP)
    assert nfs4.resop_status(r) == nfsstat4.NFS4ERR_NOTSUPP
    wire = nfs4.encode_resop(r)
    extra = u32(0) if op is OP.OP_SETATTR else b""  # SETATTR4res: attrsset, empty
    assert wire == u32(op, nfsstat4.NFS4ERR_NOTSUPP) + extra
    assert decode(nfs_resop4, wire) == r


def test_an_error_that_carries_a_result_must_be_built_whole():
    with pytest.raises(ValueError):
        nfs4.resop_error(OP.OP_LOCK, nfsstat4.NFS4ERR_DENIED)


def test_resop_status_of_success():
    r = nfs_resop4(OP.OP_SEQUENCE, SEQUENCE4res(nfsstat4.NFS4_OK,
                                                  SEQUENCE4resok(SESSION, 1, 0, 0, 0, 0)))
    assert nfs4.resop_status(r) == nfsstat4.NFS4_OK
    assert nfs4.resop_status(nfs_resop4(OP.OP_PUTFH, PUTFH4res(nfsstat4.NFS4ERR_STALE))) \
        == nfsstat4.NFS4ERR_STALE


# --- COMPOUND decoding as Linux nfsd answers it ---------------------------------------


def _compound(minorversion, *ops_wire, count=None):
    n = len(ops_wire) if count is None else count
    return xdr_string(b"t") + u32(minorversion, n) + b"".join(ops_wire)


PUTROOTFH = u32(24)
SEQUENCE_WIRE = u32(53) + SESSION + u32(1, 0, 0, 0)


def test_bad_arguments_end_the_compound_at_that_operation():
    bad_putfh = u32(22) + u32(129) + b"\0" * 132   # longer than NFS4_FHSIZE
    got = nfs4.decode_compound(_compound(1, SEQUENCE_WIRE, bad_putfh, PUTROOTFH))
    assert [op.disc for op in got.argarray] == [OP.OP_SEQUENCE, OP.OP_PUTFH]
    assert nfs4.argop_status(got.argarray[0]) is None
    assert nfs4.argop_status(got.argarray[1]) == nfsstat4.NFS4ERR_BADXDR
    assert isinstance(got.argarray[1].body, XdrError)


def test_an_unknown_operation_is_op_illegal_and_ends_the_compound():
    for opnum in (0, 1, 2, 76, 9999, 10044, 0xFFFFFFFF):
        got = nfs4.decode_compound(_compound(2, PUTROOTFH, u32(opnum), PUTROOTFH))
        assert got.argarray == [nfs_argop4(OP.OP_PUTROOTFH), nfs_argop4(OP.OP_ILLEGAL)]
        assert nfs4.argop_status(got.argarray[1]) == nfsstat4.NFS4ERR_OP_ILLEGAL


def test_operations_of_a_later_minor_version_are_illegal():
    allocate = u32(59) + u32(0) + b"\0" * 12 + u64(0, 4096)
    assert nfs4.decode_compound(_compound(1, allocate)).argarray == [nfs_argop4(OP.OP_ILLEGAL)]
    got = nfs4.decode_compound(_compound(2, allocate))
    assert got.argarray[0].disc is OP.OP_ALLOCATE
    assert nfs4.decode_compound(_compound(0, SEQUENCE_WIRE)).argarray == [
        nfs_argop4(OP.OP_ILLEGAL)]


def test_v40_operations_still_decode_in_v41():
    renew = u32(30) + u64(0x42)
    got = nfs4.decode_compound(_compound(1, renew, PUTROOTFH))
    assert got.argarray == [nfs_argop4(OP.OP_RENEW, nfs4.RENEW4args(0x42)),
                            nfs_argop4(OP.OP_PUTROOTFH)]


def test_an_unknown_minor_version_decodes_no_operation():
    got = nfs4.decode_compound(_compound(3, PUTROOTFH))
    assert (got.tag, got.minorversion, got.argarray) == (b"t", 3, [])


def test_an_empty_compound():
    assert nfs4.decode_compound(_compound(1)) == COMPOUND4args(b"t", 1, [])


def test_a_missing_operation_number_is_garbage_args():
    with pytest.raises(XdrError):
        nfs4.decode_compound(_compound(1, PUTROOTFH, count=2))
    with pytest.raises(XdrError):
        nfs4.decode_compound(_compound(1, PUTROOTFH, b"\0\0", count=2))


def test_trailing_bytes_after_the_last_operation_are_ignored():
    got = nfs4.decode_compound(_compound(1, PUTROOTFH) + b"\0" * 8)
    assert got.argarray == [nfs_argop4(OP.OP_PUTROOTFH)]


def test_too_many_operations():
    n = nfs4.NFS4_COMPOUND_MAX_OPS
    assert nfs4.decode_compound(_compound(1, SEQUENCE_WIRE, *[PUTROOTFH] * (n - 1))).argarray[-1] \
        == nfs_argop4(OP.OP_PUTROOTFH)
    with pytest.raises(nfs4.CompoundTooLong) as e:
        nfs4.decode_compound(_compound(1, SEQUENCE_WIRE, *[PUTROOTFH] * n))
    assert e.value.opcount == n + 1
    assert [op.disc for op in e.value.compound.argarray] == [OP.OP_SEQUENCE]
    assert isinstance(e.value, XdrError)


def test_every_cut_of_a_compound_is_refused_or_ends_in_badxdr():
    wire = nfs4.encode_compound(COMPOUND4args(b"tag", 1, SEQ_PUTFH_GETATTR.argarray + [
        nfs_argop4(OP.OP_OPEN, OPEN_GUARDED)]))
    for cut in range(len(wire)):
        try:
            got = nfs4.decode_compound(wire[:cut])
        except XdrError:
            continue
        assert nfs4.argop_status(got.argarray[-1]) == nfsstat4.NFS4ERR_BADXDR, cut


# --- hostile lengths ----------------------------------------------------------------


def _peak(fn, *args):
    tracemalloc.start()
    try:
        with pytest.raises(XdrError):
            fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_operation_count_is_refused_without_allocating():
    wire = xdr_string(b"") + u32(1, 0xFFFFFFFF) + PUTROOTFH * 4
    assert _peak(nfs4.decode_compound, wire) < 64 << 10
    assert _peak(decode, COMPOUND4args, wire) < 64 << 10


def test_a_huge_bitmap_is_refused_without_allocating():
    wire = u32(0xFFFFFFFF) + u32(1, 2, 3)
    assert _peak(decode, GETATTR4args, wire) < 64 << 10
    # a count within the bound but beyond the input
    assert _peak(decode, GETATTR4args, u32(nfs4.NFS4_BITMAP4_MAX_WORDS) + u32(1)) < 64 << 10
    got = nfs4.decode_compound(_compound(1, u32(9) + u32(0xFFFFFFFF) + u32(1)))
    assert nfs4.argop_status(got.argarray[0]) == nfsstat4.NFS4ERR_BADXDR


def test_huge_opaque_lengths_are_refused_without_allocating():
    assert _peak(decode, nfs4.WRITE4args, u32(0) + b"\0" * 12 + u64(0) + u32(0)
                 + u32(0xFFFFFFF0) + b"data") < 64 << 10
    assert _peak(decode, fattr4, u32(1, 0x10) + u32(0xFFFFFFF0)) < 64 << 10
    assert _peak(nfs4.decode_compound, u32(0xFFFFFFF0) + b"tag") < 64 << 10


# --- fattr4 ---------------------------------------------------------------------------


def test_attribute_numbers_are_the_rfcs():
    assert (nfs4.FATTR4_SUPPORTED_ATTRS, nfs4.FATTR4_TYPE, nfs4.FATTR4_FILEHANDLE) == (0, 1, 19)
    assert (nfs4.FATTR4_MODE, nfs4.FATTR4_OWNER, nfs4.FATTR4_TIME_MODIFY_SET) == (33, 36, 54)
    assert (nfs4.FATTR4_FS_LAYOUT_TYPES, nfs4.FATTR4_LAYOUT_BLKSIZE) == (62, 65)
    assert nfs4.FATTR4_SUPPATTR_EXCLCREAT == 75
    assert (nfs4.FATTR4_CLONE_BLKSIZE, nfs4.FATTR4_CHANGE_ATTR_TYPE) == (77, 79)
    assert set(nfs4.FATTR4_TYPES) == set(range(81)) | {82}
    assert nfs4.FATTR4_TYPES[nfs4.FATTR4_TIME_ACCESS_SET] is settime4
    assert nfs4.FATTR4_TYPES[nfs4.FATTR4_OWNER] is nfs4.utf8str_mixed


def test_bitmap_and_attribute_sets():
    assert nfs4.bitmap4_to_attrs(LINUX_GETATTR_MASK) == [
        1, 3, 4, 8, 20, 33, 35, 36, 37, 41, 45, 47, 52, 53, 55]
    assert nfs4.attrs_to_bitmap4([1, 3, 4, 8, 20, 33, 35, 36, 37, 41, 45, 47, 52, 53, 55]) \
        == LINUX_GETATTR_MASK[:2]  # the shortest: no trailing zero word
    assert nfs4.attrs_to_bitmap4([]) == []
    assert nfs4.bitmap4_to_attrs([0, 0, 1 << 31]) == [95]
    with pytest.raises(XdrError):
        nfs4.attrs_to_bitmap4([nfs4.FATTR4_MAX + 1])


SAMPLE_ATTRS = {
    nfs4.FATTR4_SUPPORTED_ATTRS: [0xFFFFFFFF, 0x00FFFFFF],
    nfs4.FATTR4_TYPE: nfs4.nfs_ftype4.NF4REG,
    nfs4.FATTR4_CHANGE: 1 << 40,
    nfs4.FATTR4_SIZE: 12345,
    nfs4.FATTR4_FSID: nfs4.fsid4(1, 2),
    nfs4.FATTR4_LEASE_TIME: 90,
    nfs4.FATTR4_RDATTR_ERROR: nfsstat4.NFS4ERR_ACCESS,
    nfs4.FATTR4_FILEHANDLE: FH_ODD,
    nfs4.FATTR4_FILEID: 99,
    nfs4.FATTR4_MODE: 0o755,
    nfs4.FATTR4_NUMLINKS: 2,
    nfs4.FATTR4_OWNER: b"1000",
    nfs4.FATTR4_OWNER_GROUP: b"staff@example.org",
    nfs4.FATTR4_RAWDEV: specdata4(8, 1),
    nfs4.FATTR4_TIME_ACCESS_SET: settime4(time_how4.SET_TO_SERVER_TIME4),
    nfs4.FATTR4_TIME_METADATA: nfstime4(-1, 999999999),
    nfs4.FATTR4_TIME_MODIFY_SET: settime4(time_how4.SET_TO_CLIENT_TIME4, nfstime4(5, 6)),
    nfs4.FATTR4_FS_LAYOUT_TYPES: [nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES],
    nfs4.FATTR4_LAYOUT_BLKSIZE: 1 << 20,
    nfs4.FATTR4_SUPPATTR_EXCLCREAT: [0x12, 0x30000],
    nfs4.FATTR4_CHANGE_ATTR_TYPE: nfs4.change_attr_type4.NFS4_CHANGE_TYPE_IS_VERSION_COUNTER,
}


def test_attributes_encode_in_ascending_order():
    f = nfs4.encode_attrs({nfs4.FATTR4_MODE: 0o600, nfs4.FATTR4_SIZE: 7})
    assert f == fattr4([1 << 4, 1 << 1], u64(7) + u32(0o600))
    assert nfs4.decode_attrs(f) == {nfs4.FATTR4_SIZE: 7, nfs4.FATTR4_MODE: 0o600}


def test_attributes_round_trip():
    f = nfs4.encode_attrs(SAMPLE_ATTRS)
    assert nfs4.bitmap4_to_attrs(f.attrmask) == sorted(SAMPLE_ATTRS)
    assert nfs4.decode_attrs(decode(fattr4, encode(fattr4, f))) == SAMPLE_ATTRS


@pytest.mark.parametrize("attr", sorted(nfs4.FATTR4_TYPES))
def test_every_attribute_round_trips(attr):
    for v in samples(nfs4.FATTR4_TYPES[attr]):
        f = nfs4.encode_attrs({attr: v})
        assert nfs4.decode_attrs(f) == {attr: v}
        for cut in range(len(f.attr_vals)):
            with pytest.raises(XdrError):
                nfs4.decode_attrs(fattr4(f.attrmask, f.attr_vals[:cut]))


def test_an_unknown_attribute_is_named():
    with pytest.raises(nfs4.UnknownAttribute) as e:
        nfs4.decode_attrs(fattr4([1 << 4, 0, 1 << 17], u64(1) + u32(0)))
    assert e.value.attr == 81
    assert isinstance(e.value, XdrError)
    with pytest.raises(nfs4.UnknownAttribute):
        nfs4.encode_attrs({81: 0})


def test_trailing_attribute_bytes_are_refused():
    with pytest.raises(XdrError):
        nfs4.decode_attrs(fattr4([1 << 4], u64(1) + u32(0)))
    with pytest.raises(XdrError):
        nfs4.decode_attrs(fattr4([], u32(0)))


def test_an_empty_fattr4():
    assert nfs4.decode_attrs(fattr4([], b"")) == {}
    assert nfs4.encode_attrs({}) == fattr4([], b"")


# --- values the RFCs extend decode, for the operation's own error ---------------------


def test_an_unknown_layout_type_decodes_for_unknown_layouttype():
    wire = (u32(0, 99, 1) + u64(0, nfs4.NFS4_UINT64_MAX, 4096)
            + u32(1) + b"\0" * 12 + u32(4096))
    got = decode(nfs4.LAYOUTGET4args, wire)
    assert got.loga_layout_type == 99 and got.loga_iomode is nfs4.layoutiomode4.LAYOUTIOMODE4_READ
    assert encode(nfs4.LAYOUTGET4args, got) == wire
    known = decode(nfs4.LAYOUTGET4args, u32(0, 1) + wire[8:])
    assert known.loga_layout_type is nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES


def test_an_unknown_file_type_in_create_decodes_for_badtype():
    wire = u32(0) + xdr_string(b"x") + u32(0, 0)  # type 0, name, empty fattr4
    got = decode(nfs4.CREATE4args, wire)
    assert got.objtype == nfs4.createtype4(0) and got.objname == b"x"
    assert decode(nfs4.CREATE4args, u32(2) + wire[4:]).objtype == \
        nfs4.createtype4(nfs4.nfs_ftype4.NF4DIR)
    assert decode(nfs4.createtype4, u32(5) + xdr_string(b"target")) == \
        nfs4.createtype4(nfs4.nfs_ftype4.NF4LNK, b"target")


# --- the fast decoders of the common operations' arguments ---------------------------

def _generic_argop(data, minorversion=1):
    """decode_argop as it is without the fast decoders."""
    saved = nfs4._FAST_ARGS
    nfs4._FAST_ARGS = {}
    try:
        u = Unpacker(data)
        return nfs4.decode_argop(u, minorversion), u.pos
    finally:
        nfs4._FAST_ARGS = saved


def _same_argop(a, b):
    """Equal argops; for an XdrError body (its own identity), the same kind of refusal."""
    if isinstance(a.body, XdrError) or isinstance(b.body, XdrError):
        return a.disc == b.disc and type(a.body) is type(b.body)
    return a == b and type(a.body) is type(b.body) and all(
        type(getattr(a.body, f)) is type(getattr(b.body, f)) for f, _ in a.body._fields)


FAST_CASES = [
    nfs_argop4(OP.OP_SEQUENCE, SEQUENCE4args(SESSION, 7, 0, 63, True)),
    nfs_argop4(OP.OP_SEQUENCE, SEQUENCE4args(SESSION, 2**32 - 1, 3, 0, False)),
    nfs_argop4(OP.OP_PUTFH, PUTFH4args(FH)),
    nfs_argop4(OP.OP_PUTFH, PUTFH4args(FH_ODD)),
    nfs_argop4(OP.OP_PUTFH, PUTFH4args(b"")),
    nfs_argop4(OP.OP_PUTFH, PUTFH4args(b"\xff" * nfs4.NFS4_FHSIZE)),
    nfs_argop4(OP.OP_GETATTR, GETATTR4args(LINUX_GETATTR_MASK)),
    nfs_argop4(OP.OP_GETATTR, GETATTR4args([])),
    nfs_argop4(OP.OP_GETATTR, GETATTR4args([0xFFFFFFFF] * nfs4.NFS4_BITMAP4_MAX_WORDS)),
    nfs_argop4(OP.OP_ACCESS, nfs4.ACCESS4args(0x3F)),
    nfs_argop4(OP.OP_LOOKUP, nfs4.LOOKUP4args(b"a")),
    nfs_argop4(OP.OP_LOOKUP, nfs4.LOOKUP4args(b"name.txt")),
]


@pytest.mark.parametrize("argop", FAST_CASES, ids=lambda a: a.disc.name)
def test_the_fast_decoders_give_what_the_generic_one_gives(argop):
    data = encode(nfs_argop4, argop)
    u = Unpacker(data + b"tail")
    assert _same_argop(nfs4.decode_argop(u, 1), argop)
    assert u.pos == len(data)
    assert (nfs4.decode_argop(Unpacker(data + b"tail"), 1), len(data)) == \
        _generic_argop(data + b"tail")


@pytest.mark.parametrize("argop", FAST_CASES, ids=lambda a: a.disc.name)
def test_the_fast_decoders_refuse_malformed_arguments_as_the_generic_one(argop):
    # Every cut, and every byte of the arguments set to 0xff or 0x02 (lengths
    # beyond their bound, a bool neither 0 nor 1).
    data = encode(nfs_argop4, argop)
    variants = [data[:n] for n in range(4, len(data))]
    for i in range(4, len(data)):
        for value in (0xFF, 0x02):
            variants.append(data[:i] + bytes([value]) + data[i + 1:])
    for v in variants:
        u = Unpacker(v)
        fast = nfs4.decode_argop(u, 1)
        generic, pos = _generic_argop(v)
        assert _same_argop(fast, generic), v
        if not isinstance(generic.body, XdrError):
            assert u.pos == pos


def test_sequence_is_illegal_in_v40_even_with_its_fast_decoder():
    data = encode(nfs_argop4, FAST_CASES[0])
    assert nfs4.decode_argop(Unpacker(data), 0).disc == OP.OP_ILLEGAL


def test_a_packed_sequence_result_is_the_codecs():
    for fields in [(SESSION, 7, 0, 63, 63, 0), (SESSION, 2**32 - 1, 5, 9, 8, 0x1FF)]:
        assert nfs4.sequence4resok_bytes(*fields) == encode(SEQUENCE4resok,
                                                            SEQUENCE4resok(*fields))
    with pytest.raises(XdrError):
        nfs4.sequence4resok_bytes(SESSION[:15], 1, 0, 0, 0, 0)
    with pytest.raises(XdrError):
        nfs4.sequence4resok_bytes(SESSION, 2**32, 0, 0, 0, 0)


@pytest.mark.parametrize("tag", [b"", b"t", b"four", b"seven!!"])
def test_a_joined_compound_reply_is_the_codecs(tag):
    results = [nfs_resop4(OP.OP_SEQUENCE, SEQUENCE4res(nfsstat4.NFS4_OK,
                                                      SEQUENCE4resok(SESSION, 1, 0, 0, 0, 0))),
               nfs_resop4(OP.OP_PUTFH, PUTFH4res(nfsstat4.NFS4ERR_STALE))]
    encoded = [nfs4.encode_resop(r) for r in results]
    for status in (nfsstat4.NFS4_OK, nfsstat4.NFS4ERR_STALE):
        assert nfs4.compound_res_bytes(status, tag, encoded) == \
            nfs4.encode_compound_res(COMPOUND4res(status, tag, results))
    assert nfs4.compound_res_bytes(nfsstat4.NFS4_OK, tag, []) == \
        nfs4.encode_compound_res(COMPOUND4res(nfsstat4.NFS4_OK, tag, []))


@pytest.mark.parametrize("fh", [b"", FH, FH_ODD, b"\xff" * nfs4.NFS4_FHSIZE])
def test_a_packed_getfh_result_is_the_codecs(fh):
    assert nfs4.getfh4resok_bytes(fh) == encode(nfs4.GETFH4resok, nfs4.GETFH4resok(fh))


def test_a_packed_getfh_result_refuses_an_overlong_handle():
    with pytest.raises(XdrError):
        nfs4.getfh4resok_bytes(bytes(nfs4.NFS4_FHSIZE + 1))


def _decoded_or_refused(data):
    try:
        args = nfs4.decode_compound(data)
    except XdrError as e:
        return type(e)
    return (args.tag, args.minorversion,
            [(a.disc, type(a.body) if isinstance(a.body, XdrError) else a.body)
             for a in args.argarray])


def test_a_compound_of_the_fast_operations_decodes_as_without_them_whatever_its_damage():
    data = nfs4.encode_compound(COMPOUND4args(b"tag", 1, FAST_CASES[:4] + FAST_CASES[6:]))
    variants = [data[:n] for n in range(len(data))]
    for i in range(len(data)):
        for value in (0xFF, 0x02, 0x00):
            variants.append(data[:i] + bytes([value]) + data[i + 1:])
    saved = nfs4._FAST_ARGS
    for v in variants:
        fast = _decoded_or_refused(v)
        nfs4._FAST_ARGS = {}
        try:
            generic = _decoded_or_refused(v)
        finally:
            nfs4._FAST_ARGS = saved
        assert fast == generic, v


@pytest.mark.parametrize("attrset", [[], [0x10], [0, 2], [0xFFFFFFFF] * nfs4.NFS4_BITMAP4_MAX_WORDS])
@pytest.mark.parametrize("atomic", [False, True])
def test_a_packed_open_result_is_the_codecs(attrset, atomic):
    sid = stateid4(7, b"o" * 12)
    cinfo = nfs4.change_info4(atomic, 2**64 - 1, 5)
    generic = nfs4.OPEN4resok(sid, cinfo, 0x24, attrset, nfs4.open_delegation4(
        nfs4.open_delegation_type4.OPEN_DELEGATE_NONE))
    assert nfs4.open4resok_bytes(sid, cinfo, 0x24, attrset) == encode(nfs4.OPEN4resok, generic)


def test_a_packed_open_or_close_result_refuses_what_the_codec_refuses():
    cinfo = nfs4.change_info4(False, 0, 0)
    with pytest.raises(XdrError):
        nfs4.open4resok_bytes(stateid4(1, b"short"), cinfo, 0, [])
    with pytest.raises(XdrError):
        nfs4.open4resok_bytes(stateid4(1, bytes(12)), cinfo, 0, [0] * 17)
    with pytest.raises(XdrError):
        nfs4.open4resok_bytes(stateid4(2**32, bytes(12)), cinfo, 0, [])
    with pytest.raises(XdrError):
        nfs4.stateid4_bytes(stateid4(1, bytes(11)))


def test_a_packed_stateid_is_the_codecs():
    sid = stateid4(2**32 - 1, bytes(range(12)))
    assert nfs4.stateid4_bytes(sid) == encode(stateid4, sid)
