"""ONC RPC v2 messages (RFC 5531) and record marking."""

import struct

import pytest
from hypothesis import given, strategies as st

from common import rpc
from common.rpc import accept_stat, auth_stat, reject_stat
from common.xdr import XdrError


def cred(**kw):
    args = dict(stamp=1, machinename=b"node1", uid=1000, gid=100, gids=[100, 10])
    args.update(kw)
    return rpc.AuthSys(**args)


def test_call_layout_byte_for_byte():
    wire = rpc.encode_call(0x11223344, 100003, 3, 1, b"ARGS", None)
    assert wire == bytes.fromhex(
        "11223344 00000000 00000002 000186a3 00000003 00000001"
        "00000000 00000000 00000000 00000000") + b"ARGS"


def test_decode_call_with_auth_sys():
    c = rpc.decode_call(rpc.encode_call(7, 100005, 3, 1, b"\0\0\0\0", cred()))
    assert (c.xid, c.prog, c.vers, c.proc) == (7, 100005, 3, 1)
    assert c.cred == cred()
    assert bytes(c.args) == b"\0\0\0\0"


def test_success_reply_layout_byte_for_byte():
    assert rpc.reply_success(9, b"BODY") == bytes.fromhex(
        "00000009 00000001 00000000 00000000 00000000 00000000") + b"BODY"


def test_prog_mismatch_carries_low_and_high():
    r = rpc.decode_reply(rpc.reply_prog_mismatch(3, 2, 3))
    assert r.accepted and r.stat == accept_stat.PROG_MISMATCH and r.mismatch == (2, 3)


def test_rpc_version_other_than_2_gets_rpc_mismatch():
    wire = bytearray(rpc.encode_call(5, 100003, 3, 0))
    wire[8:12] = struct.pack(">I", 3)
    with pytest.raises(rpc.RpcError) as e:
        rpc.decode_call(bytes(wire))
    r = rpc.decode_reply(e.value.reply)
    assert not r.accepted and r.stat == reject_stat.RPC_MISMATCH and r.mismatch == (2, 2)


@pytest.mark.parametrize("bad", [
    dict(gids=list(range(17))),
    dict(machinename=b"m" * 256),
])
def test_out_of_spec_auth_sys_gets_auth_badcred(bad):
    body = cred(**bad).encode()
    wire = (struct.pack(">IIIIII", 5, 0, 2, 100003, 3, 0) + struct.pack(">II", 1, len(body)) + body
            + struct.pack(">II", 0, 0))
    with pytest.raises(rpc.RpcError) as e:
        rpc.decode_call(wire)
    r = rpc.decode_reply(e.value.reply)
    assert r.stat == reject_stat.AUTH_ERROR and r.auth == auth_stat.AUTH_BADCRED


def test_unknown_auth_flavor_gets_auth_badcred():
    wire = struct.pack(">IIIIII", 5, 0, 2, 100003, 3, 0) + struct.pack(">II", 6, 0) + struct.pack(">II", 0, 0)
    with pytest.raises(rpc.RpcError) as e:
        rpc.decode_call(wire)
    assert rpc.decode_reply(e.value.reply).auth == auth_stat.AUTH_BADCRED


@pytest.mark.parametrize("wire", [b"", b"\0" * 23, struct.pack(">IIIIII", 1, 1, 2, 1, 1, 1)])
def test_short_messages_and_replies_are_dropped(wire):
    with pytest.raises(rpc.RpcError) as e:
        rpc.decode_call(wire)
    assert e.value.reply is None


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_rpc_error(blob):
    try:
        rpc.decode_call(blob)
    except rpc.RpcError:
        pass


@given(st.builds(rpc.AuthSys, st.integers(0, 2**32 - 1), st.binary(max_size=255),
                 st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                 st.lists(st.integers(0, 2**32 - 1), max_size=16)))
def test_auth_sys_round_trip(c):
    assert rpc.AuthSys.decode(c.encode()) == c


def test_record_marking_reassembles_multi_fragment_records():
    r = rpc.RecordReader(1000)
    stream = struct.pack(">I", 3) + b"abc" + struct.pack(">I", 0x80000002) + b"de" + rpc.encode_record(b"xyz")
    out = []
    for i in range(len(stream)):  # byte by byte: the worst case for a stream parser
        out += r.feed(stream[i:i + 1])
    assert out == [b"abcde", b"xyz"]
    assert r.pending() == 0


def test_record_over_the_bound_is_refused_from_its_header_alone():
    r = rpc.RecordReader(1 << 20)
    with pytest.raises(rpc.RecordTooLarge):
        r.feed(struct.pack(">I", 0x80000000 | (2 << 30) - 1))


def test_fragments_adding_up_over_the_bound_are_refused():
    r = rpc.RecordReader(10)
    r.feed(struct.pack(">I", 8) + b"x" * 8)
    with pytest.raises(rpc.RecordTooLarge):
        r.feed(struct.pack(">I", 0x80000008))


def test_decode_reply_rejects_non_replies():
    with pytest.raises(XdrError):
        rpc.decode_reply(rpc.encode_call(1, 2, 3, 4))


@pytest.mark.parametrize("wire", [
    "00000007 00000001 00000000 00000000 00000000 00000063",  # accepted, accept_stat 99
    "00000007 00000001 00000001 00000005",                    # denied, reject_stat 5
    "00000007 00000001 00000001 00000001 00000063",           # AUTH_ERROR, auth_stat 99
])
def test_replies_with_unknown_status_values_are_xdr_errors(wire):
    # Found by the fuzzer: the IntEnum constructors raised a plain ValueError.
    with pytest.raises(XdrError):
        rpc.decode_reply(bytes.fromhex(wire))


@given(st.binary(max_size=64))
def test_decode_reply_only_ever_raises_xdr_error(blob):
    try:
        rpc.decode_reply(blob)
    except XdrError:
        pass


def test_endless_empty_fragments_hold_nothing():
    # Found by the fuzzer: each empty non-final fragment used to add a list entry.
    r = rpc.RecordReader(1 << 20)
    for _ in range(10000):
        assert r.feed(b"\0\0\0\0") == []
    assert r.pending() == 0 and len(r._record) == 0
    assert r.feed(rpc.encode_record(b"ok")) == [b"ok"]
