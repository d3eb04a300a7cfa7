"""Portmapper v2 and rpcbind v3/v4 XDR (RFC 1833), universal addresses and the
Linux sockaddr layout of UADDR2TADDR."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import portmap as pm
from common.xdr import XdrError, decode, encode


def u32(*vs):
    return b"".join(v.to_bytes(4, "big") for v in vs)


def test_numbers_are_the_rfcs():
    assert (pm.PMAP_PROGRAM, pm.PMAP_PORT, pm.IPPROTO_TCP, pm.IPPROTO_UDP) == (100000, 111, 6, 17)
    assert pm.PMAPPROC.PMAPPROC_CALLIT == 5 and pm.RPCBPROC.RPCBPROC_GETSTAT == 12
    assert pm.RPCBPROC.RPCBPROC_BCAST == pm.RPCBPROC.RPCBPROC_CALLIT == 5


def test_mapping_and_pmaplist_layout():
    mp = pm.mapping(100003, 3, pm.IPPROTO_TCP, 2049)
    assert encode(pm.mapping, mp) == u32(100003, 3, 6, 2049)
    assert encode(pm.pmaplist, [mp]) == u32(1, 100003, 3, 6, 2049, 0)


def test_rpcb_layout():
    r = pm.rpcb(100005, 3, b"udp", b"0.0.0.0.78.80", b"superuser")
    assert encode(pm.rpcb, r) == (u32(100005, 3, 3) + b"udp\0" + u32(13) + b"0.0.0.0.78.80\0\0\0" +
                                  u32(9) + b"superuser\0\0\0")
    assert decode(pm.rpcblist_ptr, encode(pm.rpcblist_ptr, [r, r])) == [r, r]


def test_rpcb_strings_are_bounded():
    with pytest.raises(XdrError):
        decode(pm.rpcb, u32(1, 1, 256) + b"x" * 256 + u32(0, 0))


def test_rpcb_stat_byvers_is_three_fixed_records_of_13_counters():
    stat = pm.rpcb_stat([0] * 13, 1, 2, [pm.rpcbs_addrlist(100003, 3, 4, 5, b"udp")], [])
    wire = encode(pm.rpcb_stat_byvers, [stat] * 3)
    # info, setinfo+unsetinfo, [follows, 4 numbers, "udp"], end, rmtinfo end
    assert len(wire) == 3 * (13 * 4 + 8 + (4 + 16 + 8) + 4 + 4)
    assert decode(pm.rpcb_stat_byvers, wire) == [stat] * 3
    with pytest.raises(XdrError):
        encode(pm.rpcb_stat_byvers, [stat] * 2)


@pytest.mark.parametrize("ip, port, uaddr", [
    ("10.0.0.1", 2049, "10.0.0.1.8.1"),
    ("0.0.0.0", 111, "0.0.0.0.0.111"),
    ("::", 111, "::.0.111"),
    ("2001:db8::1", 65535, "2001:db8::1.255.255"),
])
def test_universal_addresses(ip, port, uaddr):
    assert pm.uaddr_from(ip, port) == uaddr
    assert pm.parse_uaddr(uaddr) == (ip, port)
    assert pm.parse_uaddr(uaddr.encode()) == (ip, port)


@pytest.mark.parametrize("bad", ["", "10.0.0.1", "10.0.0.1.8", "10.0.0.1.256.1", "host.8.1",
                                 "10.0.0.1.8.-1", "10.0.0.1.8.\u0661", "1.2.3.4.5.6.7",
                                 b"\xff.1.2"])
def test_malformed_universal_addresses_raise_uaddr_error(bad):
    with pytest.raises(pm.UaddrError):
        pm.parse_uaddr(bad)


def test_uaddr_from_rejects_bad_input():
    with pytest.raises(pm.UaddrError):
        pm.uaddr_from("10.0.0.1", 70000)
    with pytest.raises(pm.UaddrError):
        pm.uaddr_from("nothost", 1)


def test_taddr_is_a_linux_sockaddr_in_as_rpcbind_sends_it():
    # Bytes as Debian's rpcbind answered UADDR2TADDR("127.0.0.1.0.111") on x86.
    want = bytes.fromhex("0200006f7f0000010000000000000000")
    import sys
    if sys.byteorder == "little":
        assert pm.taddr_from_uaddr("127.0.0.1.0.111") == want
    assert pm.uaddr_from_taddr(pm.taddr_from_uaddr("127.0.0.1.0.111")) == "127.0.0.1.0.111"
    assert pm.uaddr_from_taddr(pm.taddr_from_uaddr("fe80::1.8.1")) == "fe80::1.8.1"
    with pytest.raises(pm.UaddrError):
        pm.uaddr_from_taddr(b"\0" * 10)


u32s = st.integers(0, 2**32 - 1)
i32s = st.integers(-2**31, 2**31 - 1)
strs = st.binary(max_size=pm.RPCB_MAXSTR)
values = st.one_of(
    st.tuples(st.just(pm.pmaplist),
              st.lists(st.builds(pm.mapping, u32s, u32s, u32s, u32s), max_size=4)),
    st.tuples(st.just(pm.rpcblist_ptr), st.lists(st.builds(pm.rpcb, u32s, u32s, strs, strs, strs),
                                                 max_size=3)),
    st.tuples(st.just(pm.call_args),
              st.builds(pm.call_args, u32s, u32s, u32s, st.binary(max_size=40))),
    st.tuples(st.just(pm.rpcb_entry_list_ptr), st.lists(
        st.builds(pm.rpcb_entry, strs, strs, u32s, strs, strs), max_size=3)),
    st.tuples(st.just(pm.netbuf), st.builds(pm.netbuf, u32s, st.binary(max_size=28))),
    st.tuples(st.just(pm.rpcb_stat_byvers), st.lists(st.builds(
        pm.rpcb_stat, st.lists(i32s, min_size=13, max_size=13), i32s, i32s,
        st.lists(st.builds(pm.rpcbs_addrlist, u32s, u32s, i32s, i32s, strs), max_size=2),
        st.lists(st.builds(pm.rpcbs_rmtcalllist, u32s, u32s, u32s, i32s, i32s, i32s, strs),
                 max_size=2)),
        min_size=3, max_size=3)),
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


@given(st.binary(max_size=300))
def test_garbage_decodes_or_raises_xdr_error_only(blob):
    for t in (pm.mapping, pm.pmaplist, pm.rpcb, pm.rpcblist_ptr, pm.netbuf, pm.rpcb_stat_byvers,
              pm.rpcb_entry_list_ptr, pm.call_args):
        try:
            decode(t, blob)
        except XdrError:
            pass


@given(st.text(max_size=40) | st.binary(max_size=40))
def test_parse_uaddr_only_raises_uaddr_error(s):
    try:
        pm.parse_uaddr(s)
    except pm.UaddrError:
        pass
