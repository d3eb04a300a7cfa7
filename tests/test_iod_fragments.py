"""What a client's kernel does with the iods' fragments: the behaviour of
net.ipv4.ipfrag_max_dist that iod/spoof.py documents, shown on the running
kernel (loopback of a private namespace, where the sysctl is per namespace).

Every iod spoofs the same source (the metaserver), and Linux counts
fragments per source address: a half-assembled datagram is thrown away when
ipfrag_max_dist or more fragments from its source arrived since its previous
fragment. Fragments from other sources and unfragmented packets do not count.
"""

import socket

import pytest

from iod import ipv4

pytestmark = pytest.mark.netns

SPOOFED = "127.0.0.9"
OTHER = "127.0.0.10"


def reasm_fails():
    # thread-self: /proc/net shows the namespace of the process's main thread
    with open("/proc/thread-self/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Ip:")]
    return int(lines[1][lines[0].index("ReasmFails")])


def interleave(foreign, foreign_source=SPOOFED, fragmented=True):
    """Send datagram A (3 fragments, from SPOOFED) with ``foreign`` other
    packets between its first and second fragment, then an unfragmented
    marker. Returns (whether A arrived, ReasmFails increase). Runs inside the
    namespace (on loopback each send is processed before sendmsg returns, so
    the marker arriving first means A is lost, not late)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst = ipv4.pack_ip("127.0.0.1")
    before = reasm_fails()

    def send(src_ip, ident, payload, mtu=1500):
        src = ipv4.pack_ip(src_ip)
        dgram = ipv4.datagram(src, 2049, dst, port, [payload])
        packets = ipv4.fragments(src, dst, ident, dgram, mtu)
        return [lambda h=h, b=b: raw.sendmsg([h, b], [], 0, ("127.0.0.1", 0))
                for h, b in packets]
    try:
        a = send(SPOOFED, 7, b"A" * 3000)
        assert len(a) == 3
        a[0]()
        for i in range(foreign):
            if fragmented:
                # the first fragment of a datagram whose rest never comes
                send(foreign_source, 1000 + i, b"f" * 2000)[0]()
            else:
                send(foreign_source, 1000 + i, b"u" * 100)[0]()
        if not fragmented:
            # those were whole datagrams: drain them
            for _ in range(foreign):
                assert receiver.recv(65536) == b"u" * 100
        a[1]()
        a[2]()
        send(SPOOFED, 9, b"marker")[0]()
        first = receiver.recv(65536)
        assert first in (b"A" * 3000, b"marker")
        return first == b"A" * 3000, reasm_fails() - before
    finally:
        raw.close()
        receiver.close()


def max_dist(ns):
    return int(ns.run(["sysctl", "-n", "net.ipv4.ipfrag_max_dist"], check=True).stdout)


def test_default_is_64(ns):
    assert max_dist(ns) == 64


def test_fewer_than_max_dist_foreign_fragments_are_fine(ns):
    arrived, fails = ns.inside(interleave, max_dist(ns) - 1)
    assert arrived and fails == 0


def test_max_dist_foreign_fragments_from_the_same_source_lose_the_datagram(ns):
    arrived, fails = ns.inside(interleave, max_dist(ns))
    assert not arrived and fails >= 1


def test_fragments_from_other_sources_do_not_count(ns):
    arrived, _ = ns.inside(interleave, 200, OTHER)
    assert arrived


def test_unfragmented_packets_do_not_count(ns):
    arrived, _ = ns.inside(interleave, 200, SPOOFED, False)
    assert arrived


def test_raising_the_limit_on_the_client_helps(ns):
    ns.run(["sysctl", "-w", "net.ipv4.ipfrag_max_dist=1024"], check=True)
    arrived, fails = ns.inside(interleave, 200)
    assert arrived and fails == 0
