"""The real iod as a process in a private network namespace, spoken to with
real frames over TCP and UDP; spoofed replies captured off the namespace's
loopback and checked with scapy."""

import errno
import os
import socket
import sys

import pytest
from scapy.layers.inet import IP, UDP

from common import iodproto
from common.iodproto import Keys, Message, Op
from common.runtime.datastore import DataStore
from tests.support.capture import Capture
from tools.dev import REPO

pytestmark = pytest.mark.netns

METASERVER = ("127.0.0.9", 2049)      # the spoofed source: not an address any socket has
HEAD = b"RPC+NFS reply head".ljust(116, b".")   # what the metaserver pre-encodes


def udp_socket(timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def set_lo_mtu(ns, mtu):
    ns.run(["ip", "link", "set", "lo", "mtu", str(mtu)], check=True)


def expected_read(data_at, offset, count):
    """What a datafile holding {offset: bytes} reads as over [offset, +count)."""
    buf = bytearray(count)
    for at, data in data_at.items():
        for i, b in enumerate(data):
            if offset <= at + i < offset + count:
                buf[at + i - offset] = b
    return bytes(buf)


def spoofed_packets(capture, source_ip, datagram_length):
    """Capture the IP packets of one spoofed datagram of ``datagram_length``
    bytes (UDP header included) from source_ip."""
    def from_source(raw):
        ip = IP(raw)
        return ip.src == source_ip and ip.proto == 17

    def complete(found):
        return sum(len(IP(p).payload) for p in found) >= datagram_length
    return [IP(p) for p in capture.take(from_source, complete)]


def check_fragments(packets, mtu):
    """Header checksums valid, sizes within the MTU, one ID, offsets that join
    up; returns (ID, the reassembled UDP datagram as scapy parsed it)."""
    ids = {p.id for p in packets}
    assert len(ids) == 1, ids
    packets = sorted(packets, key=lambda p: p.frag)
    payload = b""
    for i, p in enumerate(packets):
        assert p.len <= mtu
        assert p.frag * 8 == len(payload)
        assert bool(p.flags.MF) == (i < len(packets) - 1)
        received = p.chksum
        del p.chksum
        assert IP(bytes(p)).chksum == received, "bad IP header checksum"
        payload += bytes(p.payload)
    first = packets[0]
    whole = IP(bytes(IP(src=first.src, dst=first.dst, proto=17, id=first.id) / payload))
    received = whole[UDP].chksum
    assert received != 0, "UDP checksum missing"
    del whole[UDP].chksum
    assert IP(bytes(whole))[UDP].chksum == received, "bad UDP checksum"
    return ids.pop(), whole


# -- every operation, over TCP --------------------------------------------------

def test_every_operation_over_tcp(iods):
    iod = iods()
    with iod.client("tcp") as c:
        pong = c.call(Op.PING)
        assert pong.op == Op.PONG and pong.version and len(pong.verifier) == 8
        assert pong.total >= pong.free > 0 and pong.uptime >= 0

        w = c.call(Op.WRITE, ino=42, seed=7, offset=10, data=b"0123456789", stable=False)
        assert (w.op, w.status, w.verifier) == (Op.REPLY, 0, pong.verifier)
        assert c.call(Op.READ, ino=42, seed=7, offset=0, count=16).data == bytes(10) + b"012345"
        # past the datafile's end and absent files read as zeros, count bytes long
        assert c.call(Op.READ, ino=42, seed=7, offset=15, count=10).data == b"56789" + bytes(5)
        assert c.call(Op.READ, ino=42, seed=8, offset=0, count=4).data == bytes(4)
        assert c.call(Op.COMMIT, ino=42, seed=7).verifier == pong.verifier

        # shrink then grow: the cut bytes come back as zeros, never as old data
        assert c.call(Op.TRUNCATE, ino=42, seed=7, size=12).status == 0
        c.call(Op.WRITE, ino=42, seed=7, offset=18, data=b"Z", stable=True)
        assert c.call(Op.READ, ino=42, seed=7, offset=10, count=9).data == b"01" + bytes(6) + b"Z"
        # truncating a file this iod holds nothing of creates nothing
        assert c.call(Op.TRUNCATE, ino=43, seed=1, size=1 << 20).status == 0

        c.call(Op.WRITE, ino=99, seed=1, offset=0, data=b"x", stable=True)
        assert c.call(Op.LIST).files == [(42, 7), (99, 1)]
        purge = c.call(Op.PURGE, files=[(42, 7), (500, 5)])    # absent ones are fine
        assert purge.status == 0
        assert c.call(Op.LIST).files == [(99, 1)]
        assert c.call(Op.READ, ino=42, seed=7, offset=10, count=2).data == bytes(2)
        assert c.call(Op.PURGE, files=[(42, 7)]).status == 0    # idempotent
    for ino, seed in ((42, 7), (43, 1)):           # purged; never created
        assert not os.path.exists(os.path.join(iod.data_dir, f"{ino:02x}", "00",
                                               f"{ino:016x}.{seed:016x}"))


def test_frames_back_to_back_are_all_answered_by_id(iods):
    iod = iods()
    with iod.client("tcp") as c:
        sent = {}
        for i in range(150):
            data = bytes([i]) * (i + 1)
            sent[c.send(Op.WRITE, ino=i, seed=1, offset=0, data=data, stable=False)] = (
                "write", i)
        for i in range(150):
            sent[c.send(Op.READ, ino=i, seed=1, offset=0, count=i + 1)] = ("read", i)
            sent[c.send(Op.PING)] = ("ping", i)
        answered = {}
        while len(answered) < len(sent):
            msg = c.receive()
            assert msg.id in sent and msg.id not in answered
            answered[msg.id] = msg
    for msg_id, (kind, i) in sent.items():
        msg = answered[msg_id]
        if kind == "ping":
            assert msg.op == Op.PONG
        elif kind == "write":
            assert msg.status == 0
    # READs may overtake the WRITEs they follow: check the data afterwards
    with iod.client("tcp") as c:
        for i in range(150):
            got = c.call(Op.READ, ino=i, seed=1, offset=0, count=i + 1)
            assert got.data == bytes([i]) * (i + 1)


def test_one_mib_read_and_write_relayed_over_tcp(iods):
    iod = iods()
    data = os.urandom(iodproto.MAX_DATA)
    with iod.client("tcp", timeout=30) as c:
        assert c.call(Op.WRITE, ino=1, seed=2, offset=1 << 32, data=data, stable=True).status == 0
        got = c.call(Op.READ, ino=1, seed=2, offset=1 << 32, count=len(data))
        assert got.status == 0 and got.data == data
        tail = c.call(Op.READ, ino=1, seed=2, offset=(1 << 32) + len(data) - 100, count=1 << 20)
        assert tail.data == data[-100:] + bytes((1 << 20) - 100)
        too_big = c.call(Op.READ, ino=1, seed=2, offset=0, count=iodproto.MAX_DATA + 1)
        assert too_big.status == errno.EINVAL


# -- UDP ------------------------------------------------------------------------

def test_udp_serves_read_write_ping_and_nothing_else(iods):
    iod = iods()
    with iod.client("udp") as c:
        assert c.call(Op.PING).op == Op.PONG
        assert c.call(Op.WRITE, ino=5, seed=5, offset=3, data=b"abc", stable=True).status == 0
        assert c.call(Op.READ, ino=5, seed=5, offset=0, count=8).data == b"\0\0\0abc\0\0"
        too_big = c.call(Op.READ, ino=5, seed=5, offset=0, count=65500)
        assert too_big.status == errno.EMSGSIZE
        c.send(Op.COMMIT, ino=5, seed=5)          # TCP only: dropped, not answered
        c.send(Op.PURGE, files=[(5, 5)])
        assert c.call(Op.PING).op == Op.PONG      # answers come in order: nothing for those
    iod.counters_now(want={"dropped_not_over_udp": 2})
    with iod.client("tcp") as c:
        assert c.call(Op.LIST).files == [(5, 5)]  # the PURGE was not done


# -- spoofed replies -----------------------------------------------------------

def test_spoofed_read_reply_fragments_checksums_and_source(iods, ns):
    iod = iods(slot="2/4")
    # The iod learnt lo's MTU (65536) at start: shrinking it now also checks
    # that a send refused for its size makes the iod look the MTU up again.
    set_lo_mtu(ns, 1500)
    data = os.urandom(20000)
    with iod.client("tcp") as c:
        c.call(Op.WRITE, ino=77, seed=3, offset=4096, data=data, stable=False)
    capture = ns.inside(Capture)
    client = ns.inside(udp_socket)
    client_address = client.getsockname()
    count = 32768 + 3          # a hole before the data, zeros past its end, XDR padding
    try:
        with iod.client("udp") as requester:
            requester.send(Op.READ, ino=77, seed=3, offset=0, count=count,
                           client=client.getsockname(), source=METASERVER, head=HEAD)
            payload, source = client.recvfrom(65536)
            expected = HEAD + expected_read({4096: data}, 0, count) + bytes(1)
            assert source == METASERVER
            assert payload == expected
            packets = spoofed_packets(capture, METASERVER[0], 8 + len(expected))
    finally:
        capture.close()
        client.close()
    assert len(packets) == 23                      # ceil((8 + 32888) / 1480)
    ident, whole = check_fragments(packets, 1500)
    assert 32768 <= ident < 49152                  # slot 2 of 4
    assert (whole.src, whole[UDP].sport) == METASERVER
    assert (whole.dst, whole[UDP].dport) == client_address
    assert bytes(whole[UDP].payload) == expected
    counters = iod.counters_now(want={"spoofed_datagrams": 1})
    assert counters["spoofed_packets"] == 23


def test_spoofed_write_reply(iods, ns):
    iod = iods()
    client = ns.inside(udp_socket)
    reply = b"complete NFS WRITE reply" * 3
    try:
        with iod.client("udp") as requester:
            requester.send(Op.WRITE, ino=8, seed=8, offset=100, data=b"payload", stable=True,
                           client=client.getsockname(), source=METASERVER, reply=reply)
            got, source = client.recvfrom(65536)
    finally:
        client.close()
    assert (got, source) == (reply, METASERVER)
    with iod.client("tcp") as c:
        assert c.call(Op.READ, ino=8, seed=8, offset=100, count=7).data == b"payload"


def test_two_iods_spoofing_the_same_source_use_disjoint_ip_ids(iods, ns):
    set_lo_mtu(ns, 1500)
    first, second = iods(slot="0/2"), iods(slot="1/2")
    capture = ns.inside(Capture)
    client = ns.inside(udp_socket)
    ids = {}
    try:
        for iod in (first, second):
            with iod.client("tcp") as c:
                c.call(Op.WRITE, ino=1, seed=1, offset=0, data=os.urandom(8192), stable=False)
            ids[iod.slot] = []
            with iod.client("udp") as requester:
                for _ in range(8):
                    requester.send(Op.READ, ino=1, seed=1, offset=0, count=8192,
                                   client=client.getsockname(), source=METASERVER, head=HEAD)
                    payload, source = client.recvfrom(65536)
                    assert source == METASERVER and len(payload) == len(HEAD) + 8192
                    packets = spoofed_packets(capture, METASERVER[0], 8 + len(payload))
                    assert len(packets) == 6
                    ids[iod.slot].append(check_fragments(packets, 1500)[0])
    finally:
        capture.close()
        client.close()
    assert all(1 <= i < 32768 for i in ids["0/2"])
    assert all(32768 <= i < 65536 for i in ids["1/2"])
    assert len(set(ids["0/2"]) | set(ids["1/2"])) == 16


# -- robustness -------------------------------------------------------------------

def test_forged_frames_are_dropped_counted_and_the_iod_keeps_serving(iods, ns):
    iod = iods()
    good = iodproto.encode(Message(Op.PING, 1), iod.keys)
    other_key = Keys.single(os.urandom(32))
    flipped = bytearray(good)
    flipped[20] ^= 1
    with iod.client("udp") as c:
        c.send_frame(os.urandom(100))                                      # not a frame
        c.send_frame(iodproto.encode(Message(Op.PING, 2), other_key))      # wrong key
        c.send_frame(bytes(flipped))                                       # altered
        c.send_frame(good[:-1])                                            # truncated
        c.send_frame(good + b"x")                                          # trailing junk
        assert c.call(Op.PING).op == Op.PONG
    with iod.client("tcp") as c:
        c.send_frame(iodproto.encode(Message(Op.READ, 3, ino=1, seed=1, offset=0, count=1),
                                     other_key))
        c.send_frame(iodproto.encode(iodproto.reply(Message(Op.PING, 4)), iod.keys))
        assert c.call(Op.PING).op == Op.PONG       # same connection, still served
    with iod.client("tcp") as c:
        c.send_frame(b"JUNK" + bytes(60))          # not our protocol: connection closed
        assert c.sock.recv(100) == b""
    counters = iod.counters_now(want={"dropped_bad_mac": 3, "dropped_malformed": 3,
                                      "dropped_unexpected_op": 1, "dropped_bad_stream": 1})
    assert counters.get("internal_errors") is None
    with iod.client("udp") as c:
        assert c.call(Op.PING).op == Op.PONG
    # one log line for the storm, the rest is counted
    assert iod.log_text().count("dropping a frame") == 1


def test_disk_full_answers_enospc_and_keeps_what_was_written(iods, ns, tmp_path):
    data_dir = str(tmp_path / "small")
    os.makedirs(data_dir)
    ns.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", data_dir], check=True)
    iod = iods(data_dir=data_dir, extra_args=["--init"])    # a fresh disk: a new store
    client = ns.inside(udp_socket)
    try:
        with iod.client("tcp") as c:
            kept = c.call(Op.WRITE, ino=1, seed=1, offset=0, data=b"keep me", stable=True)
            assert kept.status == 0
            full = c.call(Op.WRITE, ino=2, seed=2, offset=0, data=bytes(1 << 20), stable=True)
            assert full.status == errno.ENOSPC and full.message
        with iod.client("udp") as requester:
            # A spoofed WRITE that fails is answered to the requester, not spoofed.
            answer = requester.call(Op.WRITE, ino=3, seed=3, offset=0, data=os.urandom(30000),
                                    stable=True, client=client.getsockname(),
                                    source=METASERVER, reply=b"WRITE OK")
            assert answer.status == errno.ENOSPC
            requester.send(Op.READ, ino=1, seed=1, offset=0, count=7, client=client.getsockname(),
                           source=METASERVER, head=b"")
            # The first thing the client gets is the READ's reply: no WRITE reply came.
            assert client.recvfrom(65536) == (b"keep me" + bytes(1), METASERVER)
    finally:
        client.close()
    iod.counters_now(want={"error_enospc": 2})
    assert iod.stop() == 0


def test_runs_as_nobody_after_start(iods):
    iod = iods()
    with iod.client("tcp") as c:
        c.call(Op.WRITE, ino=0x1234, seed=9, offset=0, data=b"x", stable=True)
    status = dict(line.split(":", 1) for line in
                  open(f"/proc/{iod.pid}/status").read().splitlines())
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].strip() == ""
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    datafile = os.path.join(iod.data_dir, "34", "12", f"{0x1234:016x}.{9:016x}")
    for path in (iod.data_dir, datafile):
        assert os.stat(path).st_uid == 65534
    # the directories above the data dir stay root's and private (pytest's tmp)
    assert os.stat(os.path.dirname(os.path.dirname(iod.data_dir))).st_uid == 0


def test_list_pages_through_many_datafiles(iods, tmp_path):
    data_dir = str(tmp_path / "many")
    store = DataStore(data_dir)              # files made before the iod's first start
    # four directories of ~2500 files: pages end in the middle of one
    pairs = {((j << 16) | (j % 4), j % 3) for j in range(1, 10006)}
    for ino, seed in pairs:
        path = store.path(ino, seed)         # empty datafiles, made the quick way
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    store.close()
    iod = iods(data_dir=data_dir, extra_args=["--init"])    # unmarked datafiles: adopted
    listed, cursor, pages = [], None, 0
    with iod.client("tcp", timeout=60) as c:
        while True:
            answer = c.call(Op.LIST, cursor=cursor)
            assert answer.status == 0
            listed += answer.files
            pages += 1
            cursor = answer.cursor
            if cursor is None:
                break
        assert c.call(Op.LIST, cursor=b"not a cursor").status == errno.EINVAL
    assert pages == 2 and len(listed) == len(pairs) and set(listed) == pairs


def test_spoofed_pong_needs_udp(iods):
    iod = iods()
    with iod.client("tcp") as c:
        answer = c.call(Op.PING, stamp=True, spoof_from=METASERVER)
        assert answer.op == Op.REPLY and answer.status == errno.EINVAL


def test_sigterm_stops_it_cleanly(iods):
    iod = iods()
    with iod.client("tcp") as c:
        c.call(Op.PING)
    assert iod.stop() == 0
    text = iod.log_text()
    assert "SIGTERM: stopping" in text and "iod stopped" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("problem", ["no key", "no user", "port taken"])
def test_start_up_errors_are_one_clear_line(ns, tmp_path, problem):
    from tools.dev.daemons import make_key
    key = str(tmp_path / "key")
    make_key(key)
    argv = [sys.executable, "-m", "iod.cli", "--data-dir", str(tmp_path / "d"), "--key", key,
            "--listen", "127.0.0.1", "--port", "2050"]
    blocker = None
    if problem == "no key":
        argv[argv.index(key)] = str(tmp_path / "missing.key")
    elif problem == "no user":
        argv += ["--user", "no-such-user-here"]
    else:
        blocker = ns.inside(lambda: socket.create_server(("127.0.0.1", 2050)))
    try:
        r = ns.run(argv, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    finally:
        if blocker:
            blocker.close()
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert {"no key": "no such key file", "no user": "no such user",
            "port taken": "cannot listen"}[problem] in r.stderr


def test_udp_answers_leave_from_the_address_asked(iods, ns):
    iod = iods(extra_args=["--listen", "0.0.0.0"])

    def ping_via(address):
        s = udp_socket()
        try:
            s.sendto(iodproto.plain_ping(11, iod.keys), (address, iod.port))
            data, source = s.recvfrom(65536)
            return iodproto.decode(data, iod.keys).op, source
        finally:
            s.close()
    for address in ("127.0.0.1", "127.0.0.5"):
        assert ns.inside(ping_via, address) == (Op.PONG, (address, iod.port))
