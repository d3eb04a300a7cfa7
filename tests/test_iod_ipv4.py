"""iod/ipv4.py: UDP checksum, IP headers and fragments, checked against
scapy's own computations (an independent implementation), and the IP ID
slots."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from iod import ipv4

SRC, DST = "10.1.2.3", "192.168.7.9"
S, D = ipv4.pack_ip(SRC), ipv4.pack_ip(DST)


def scapy_udp_checksum(payload, sport=2049, dport=871, src=SRC, dst=DST):
    """What scapy puts in the UDP checksum field for this datagram."""
    pkt = IP(bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)))
    return pkt[UDP].chksum


def reassemble(packets):
    """The datagram carried by ``fragments`` output, checking the offsets
    join up and only the last fragment lacks MF."""
    out = bytearray()
    for i, (header, body) in enumerate(packets):
        ip = IP(bytes(header) + bytes(body))
        assert ip.frag * 8 == len(out)
        assert bool(ip.flags.MF) == (i < len(packets) - 1)
        out += bytes(ip.payload)
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 100, 1471, 1472, 1473, 8192, 8193,
                                  32768 + 131, ipv4.MAX_UDP_PAYLOAD])
def test_udp_checksum_matches_scapy(size):
    payload = os.urandom(size)
    dgram = ipv4.datagram(S, 2049, D, 871, [payload])
    assert int.from_bytes(dgram[6:8], "big") == scapy_udp_checksum(payload)
    assert bytes(dgram[8:]) == payload
    assert int.from_bytes(dgram[4:6], "big") == 8 + size


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 65535), st.integers(1, 65535))
def test_udp_checksum_matches_scapy_property(payload, sport, dport):
    dgram = ipv4.datagram(S, sport, D, dport, [payload])
    assert int.from_bytes(dgram[6:8], "big") == scapy_udp_checksum(payload, sport, dport)


def test_checksum_that_sums_to_zero_is_sent_as_ffff():
    # Find a payload whose checksum computes to 0: RFC 768 sends it as 0xFFFF.
    base = ipv4.datagram(S, 1, D, 2, [b"\0\0"])
    csum = int.from_bytes(base[6:8], "big")
    # Adding csum into the (zero) payload word makes the total sum 0xFFFF.
    dgram = ipv4.datagram(S, 1, D, 2, [csum.to_bytes(2, "big")])
    assert dgram[6:8] == b"\xff\xff"
    assert scapy_udp_checksum(csum.to_bytes(2, "big"), 1, 2) == 0xFFFF


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_ones_sum_agrees_with_scapy_checksum(data):
    assert ipv4.checksum(data) == scapy_checksum(data)


@settings(max_examples=60, deadline=None)
@given(st.integers(400, 70000), st.integers(0, 255), st.randoms(use_true_random=False))
def test_long_buffers_sum_like_scapy(size, fill, rnd):
    # long enough for ones_sum's folding; mostly one byte value, so that
    # sums of 0 and 0xFFFF and long carries come up
    data = bytearray([fill]) * size
    for _ in range(rnd.randrange(4)):
        data[rnd.randrange(size)] = rnd.randrange(256)
    assert ipv4.checksum(bytes(data)) == scapy_checksum(bytes(data))


def test_parts_are_concatenated():
    whole = ipv4.datagram(S, 5, D, 6, [b"head", b"data" * 100, b"\0\0"])
    assert whole == ipv4.datagram(S, 5, D, 6, [b"head" + b"data" * 100 + b"\0\0"])


def test_oversized_payload_is_refused():
    with pytest.raises(ValueError):
        ipv4.datagram(S, 1, D, 2, [bytes(ipv4.MAX_UDP_PAYLOAD + 1)])


@pytest.mark.parametrize("mtu,size", [(1500, 100), (1500, 1472), (1500, 1473), (1500, 32768),
                                      (576, 8192), (9000, 32768), (65536, 65000), (68, 200)])
def test_fragments_fit_the_mtu_and_reassemble(mtu, size):
    payload = os.urandom(size)
    dgram = ipv4.datagram(S, 2049, D, 871, [payload])
    packets = ipv4.fragments(S, D, 4242, dgram, mtu)
    step = ipv4.fragment_payload_size(mtu)
    assert len(packets) == -(-len(dgram) // step)
    for header, body in packets:
        ip = IP(bytes(header) + bytes(body))
        assert ip.len == len(header) + len(body) <= min(mtu, 65535)
        assert (ip.src, ip.dst, ip.id, ip.proto, ip.ttl) == (SRC, DST, 4242, 17, 64)
        assert not ip.flags.DF
        # scapy recomputes the header checksum when the field is deleted
        received = ip.chksum
        del ip.chksum
        assert IP(bytes(ip)).chksum == received
    assert reassemble(packets) == bytes(dgram)
    whole = IP(bytes(IP(src=SRC, dst=DST, proto=17) / Raw(reassemble(packets))))
    assert whole[UDP].load == payload
    received = whole[UDP].chksum
    del whole[UDP].chksum
    assert IP(bytes(whole))[UDP].chksum == received


def test_single_packet_when_it_fits():
    dgram = ipv4.datagram(S, 1, D, 2, [bytes(1472)])
    assert len(ipv4.fragments(S, D, 1, dgram, 1500)) == 1
    assert len(ipv4.fragments(S, D, 1, dgram + b"x", 1500)) == 2


def test_fragment_bounds():
    dgram = ipv4.datagram(S, 1, D, 2, [b"x"])
    with pytest.raises(ValueError):
        ipv4.fragments(S, D, 1, dgram, 67)
    with pytest.raises(ValueError):
        ipv4.fragments(S, D, 65536, dgram, 1500)


def test_pack_ip_refuses_what_is_not_a_dotted_quad():
    assert ipv4.pack_ip("127.0.0.1") == b"\x7f\0\0\1"
    for bad in ("1", "1.2.3", "::1", "256.1.1.1", "host", ""):
        with pytest.raises(ValueError):
            ipv4.pack_ip(bad)


def test_ip_id_slots_partition_the_space_without_zero():
    n = 5
    slots = [ipv4.IpIdSlot(i, n) for i in range(n)]
    seen = set()
    for s in slots:
        ids = set(range(s.low, s.high))
        assert not ids & seen
        seen |= ids
    assert seen == set(range(1, 65536))
    assert 0 not in slots[0]


def test_ip_id_slot_cycles_within_its_range():
    s = ipv4.IpIdSlot.parse("3/4")
    assert (s.low, s.high) == (49152, 65536)
    drawn = [s.next() for _ in range(len(s) + 3)]
    assert all(i in s for i in drawn)
    assert len(set(drawn[:len(s)])) == len(s)
    assert drawn[len(s):] == drawn[:3]


@pytest.mark.parametrize("text", ["", "1", "2/2", "-1/4", "a/b", "1/0", "0/5000", "1/2/3"])
def test_ip_id_slot_parse_errors(text):
    with pytest.raises(ValueError):
        ipv4.IpIdSlot.parse(text)
