"""MOUNT v1/v3 XDR (RFC 1094 appendix A, RFC 1813 section 5): byte layouts and
round trips; truncated or oversized input only ever raises XdrError."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import mount as m
from common.xdr import XdrError, decode, encode


def u32(*vs):
    return b"".join(v.to_bytes(4, "big") for v in vs)


def test_program_numbers_and_limits_are_the_rfcs():
    assert m.MOUNT_PROGRAM == 100005
    assert (m.MNTPATHLEN, m.MNTNAMLEN, m.FHSIZE, m.FHSIZE3) == (1024, 255, 32, 64)
    assert [p.value for p in m.MOUNTPROC3] == [0, 1, 2, 3, 4, 5]
    assert m.mountstat3.MNT3ERR_SERVERFAULT == 10006 and m.mountstat3.MNT3ERR_ACCES == 13


def test_dirpath_is_a_counted_padded_string_with_the_1024_byte_limit():
    assert encode(m.dirpath, b"/srv") == u32(4) + b"/srv"
    assert encode(m.dirpath, b"/a") == u32(2) + b"/a\0\0"
    with pytest.raises(XdrError):
        encode(m.dirpath, b"/" * 1025)
    with pytest.raises(XdrError):
        decode(m.dirpath, u32(1025) + b"/" * 1028)


def test_v1_fhstatus_ok_carries_exactly_32_bytes_and_errors_carry_nothing():
    fh = bytes(range(32))
    assert encode(m.fhstatus, m.fhstatus(0, fh)) == u32(0) + fh
    assert encode(m.fhstatus, m.fhstatus(13)) == u32(13)
    assert decode(m.fhstatus, u32(2)) == m.fhstatus(2)
    with pytest.raises(XdrError):
        encode(m.fhstatus, m.fhstatus(0, b"short"))


def test_mountres3_ok_layout():
    res = m.mountres3(m.mountstat3.MNT3_OK, m.mountres3_ok(b"\x01" * 8, [1]))
    assert encode(m.mountres3, res) == u32(0, 8) + b"\x01" * 8 + u32(1, 1)
    assert encode(m.mountres3, m.mountres3(m.mountstat3.MNT3ERR_NOENT)) == u32(2)


def test_mountres3_rejects_unknown_status_and_handles_over_64_bytes():
    with pytest.raises(XdrError):
        decode(m.mountres3, u32(7))
    with pytest.raises(XdrError):
        decode(m.mountres3, u32(0, 65) + b"x" * 68 + u32(0))


def test_dump_and_export_lists_are_value_follows_chains():
    ml = [m.mountbody(b"c1", b"/a"), m.mountbody(b"c2", b"/b")]
    assert encode(m.mountlist, ml) == (u32(1, 2) + b"c1\0\0" + u32(2) + b"/a\0\0" +
                                       u32(1, 2) + b"c2\0\0" + u32(2) + b"/b\0\0" + u32(0))
    assert encode(m.mountlist, []) == u32(0)
    ex = [m.exportnode(b"/srv", [b"10.0.0.0/8", b"*.org"]), m.exportnode(b"/pub", [])]
    wire = encode(m.exports, ex)
    assert wire.startswith(u32(1, 4) + b"/srv" + u32(1, 10) + b"10.0.0.0/8\0\0")
    assert decode(m.exports, wire) == ex


names = st.binary(max_size=m.MNTNAMLEN)
paths = st.binary(max_size=m.MNTPATHLEN)
values = st.one_of(
    st.tuples(st.just(m.mountlist), st.lists(st.builds(m.mountbody, names, paths), max_size=4)),
    st.tuples(st.just(m.exports), st.lists(
        st.builds(m.exportnode, paths, st.lists(names, max_size=3)), max_size=4)),
    st.tuples(st.just(m.mountres3), st.builds(
        m.mountres3, st.just(m.mountstat3.MNT3_OK),
        st.builds(m.mountres3_ok, st.binary(max_size=64),
                  st.lists(st.integers(0, 2**31 - 1), max_size=4)))),
    st.tuples(st.just(m.mountres3), st.sampled_from(
        [m.mountres3(s) for s in m.mountstat3 if s != m.mountstat3.MNT3_OK])),
    st.tuples(st.just(m.fhstatus),
              st.builds(m.fhstatus, st.just(0), st.binary(min_size=32, max_size=32))),
    st.tuples(st.just(m.dirpath), paths),
)


@given(values)
def test_round_trip(tv):
    t, v = tv
    assert decode(t, encode(t, v)) == v


@given(values, st.data())
def test_every_truncation_is_an_xdr_error(tv, data):
    t, v = tv
    wire = encode(t, v)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(XdrError):
        decode(t, wire[:cut])


@given(st.binary(max_size=200))
def test_garbage_decodes_or_raises_xdr_error_only(blob):
    for t in (m.mountlist, m.exports, m.mountres3, m.fhstatus, m.dirpath):
        try:
            decode(t, blob)
        except XdrError:
            pass
