"""The iod's defences, against real iod processes (and on the testbed, from
another host): replay protection, forged frames, no reflection, privileged
ports, key rotation without a failed request, clock skew, the metrics
endpoint. Every refused frame must change nothing on disk and show in the
iod's counters under its reason."""

import os
import signal
import socket
import sys
import time
import urllib.request

import pytest
import trio
from scapy.layers.inet import IP, UDP

from common import iodproto, keyfile
from common.iodproto import Keys, Message, Op, Stamp
from common.runtime.datastore import DataStore
from tests.support.capture import Capture
from tests.test_iod_daemon import METASERVER, udp_socket
from tools.dev import REPO
from tools.dev.daemons import Iod, Nfspd, make_key
from tools.dev.iodclient import IodClient
from tools.dev.netns import wait_until

pytestmark = pytest.mark.netns

OLD_KEY, NEW_KEY = "aa" * 32, "bb" * 32


def datafile(data_dir, ino, seed):
    store = DataStore(data_dir)
    try:
        return store.path(ino, seed)
    finally:
        store.close()


def exists(iod, ino, seed):
    return os.path.exists(datafile(iod.data_dir, ino, seed))


def frame(keys, op, stamp, **fields):
    return iodproto.encode(Message(op, int.from_bytes(os.urandom(4), "big"), stamp, **fields),
                           keys)


def call_raw(c, raw):
    """Send ``raw`` (a frame c's keys verify) and return its answer."""
    want = iodproto.decode(raw, c.keys).id
    c.send_frame(raw)
    while True:
        msg = c.receive()
        if msg.id == want:
            return msg


def answer_to(c, raw):
    """Send ``raw`` on client c's connection, then a PING, and return the
    answers that came before the PONG: [] for a dropped frame. (Over TCP an
    answer may overtake another: the tests confirm each drop with the iod's
    counters, and the data on disk.)"""
    c.send_frame(raw)
    ping = c.send(Op.PING)
    got = []
    while True:
        msg = c.receive()
        if msg.id == ping:
            return got
        got.append(msg)


# -- replay protection -------------------------------------------------------------------

def test_replayed_write_truncate_and_purge_change_nothing(iods):
    iod = iods()
    seq = iodproto.Sequencer()
    keys = iod.keys
    with iod.client("tcp") as c:
        # The "captured" frames: what a legitimate sender sent once.
        old_write = frame(keys, Op.WRITE, seq.stamp(time.time()), ino=1, seed=1, offset=0,
                          data=b"old data", stable=True)
        assert call_raw(c, old_write).status == 0
        assert c.call(Op.WRITE, ino=1, seed=1, offset=0, data=b"NEW DATA", stable=True).status == 0
        truncate = frame(keys, Op.TRUNCATE, seq.stamp(time.time()), ino=1, seed=1, size=3)
        assert call_raw(c, truncate).status == 0
        assert c.call(Op.WRITE, ino=1, seed=1, offset=3, data=b" DATA", stable=True).status == 0
        c.call(Op.WRITE, ino=2, seed=2, offset=0, data=b"doomed", stable=True)
        purge = frame(keys, Op.PURGE, seq.stamp(time.time()), files=[(2, 2)])
        assert call_raw(c, purge).status == 0
        assert not exists(iod, 2, 2)
        c.call(Op.WRITE, ino=2, seed=2, offset=0, data=b"reborn", stable=True)
    # Replayed verbatim, on new connections and over UDP: never answered...
    for transport in ("tcp", "udp"):
        with iod.client(transport) as c:
            for raw in (old_write, truncate, purge):
                if transport == "udp" and raw is not old_write:
                    continue     # TRUNCATE and PURGE are TCP only anyway
                assert answer_to(c, raw) == []
    # ...counted once each, and decided on before these reads.
    iod.counters_now(want={"dropped_replay": 4})
    with iod.client("tcp") as c:
        assert c.call(Op.READ, ino=1, seed=1, offset=0, count=16).data == b"NEW DATA" + bytes(8)
        assert c.call(Op.READ, ino=2, seed=2, offset=0, count=6).data == b"reborn"
    assert exists(iod, 2, 2)


def test_stale_unstamped_and_pre_restart_frames_are_refused(iods):
    iod = iods(extra_args=["--max-clock-skew", "30"])
    seq = iodproto.Sequencer()
    write = dict(ino=7, seed=7, offset=0, stable=True)
    with iod.client("tcp") as c:
        for skew in (-31, 31):
            stale = frame(iod.keys, Op.WRITE, seq.stamp(time.time() + skew), data=b"stale",
                          **write)
            assert answer_to(c, stale) == []
        c.send(Op.WRITE, stamp=False, data=b"unstamped", **write)
        assert c.call(Op.PING).op == Op.PONG
        # within the bound: fine
        ok = frame(iod.keys, Op.WRITE, seq.stamp(time.time() + 25), data=b"fresh", **write)
        assert call_raw(c, ok).status == 0
    iod.counters_now(want={"dropped_stale": 2, "dropped_unstamped": 1})
    assert "more than 30 s: clocks out of sync, or a replay" in iod.log_text()

    # A restarted iod has forgotten what it saw: it refuses everything
    # stamped before it started, and takes the same sender's new frames.
    captured = frame(iod.keys, Op.WRITE, seq.stamp(time.time()), data=b"captured", **write)
    with iod.client("tcp") as c:
        assert call_raw(c, captured).status == 0
        c.call(Op.WRITE, ino=7, seed=7, offset=0, data=b"newest!!", stable=True)
    iod.restart()
    with iod.client("tcp") as c:
        assert answer_to(c, captured) == []
        later = frame(iod.keys, Op.READ, seq.stamp(time.time()), ino=7, seed=7, offset=0,
                      count=8)
        assert call_raw(c, later).data == b"newest!!"
    iod.counters_now(want={"dropped_replay": 1})


# -- forged and replayed frames from another host of the testbed -------------------------

@pytest.fixture
def testbed(tmp_path):
    from tools.dev import netns as nslib
    from tools.dev import testbed as tblib
    if not nslib.available():
        pytest.skip("needs root with nsenter (network namespaces)")
    tb = tblib.Testbed(f"sec{os.getpid()}", n_iods=1, n_clients=1,
                       workdir=str(tmp_path / "bed"))
    try:
        yield tb.up()
    finally:
        tb.down()


def iod0_counters(tb, want):
    """iod0's counters (SIGUSR1 summary in its log) once they show ``want``."""
    pid = tb.status()["daemons"]["iod0"]["pid"]
    seen = {}

    def fresh():
        os.kill(pid, signal.SIGUSR1)
        lines = [line for line in tb.log_text("iod0").splitlines() if "counters:" in line]
        fields = lines[-1].split("counters:", 1)[1].split() if lines else []
        seen.update(c=dict((k, int(v)) for k, v in (f.split("=", 1) for f in fields if "=" in f)))
        return all(seen["c"].get(k) == v for k, v in want.items())
    wait_until(fresh, 15, what=f"iod0 counters {want}", interval=0.2)
    return seen["c"]


def sniff_frames(capture, keys, dst, proto, op, count=1):
    """Frames of ``op`` sent to ``dst``:2050 over ``proto`` (17 UDP, 6 TCP),
    as the attacker's capture sees them; decoded to tell which op they carry."""
    found = []

    def carries(raw):
        ip = IP(raw)
        if ip.dst != dst or ip.proto != proto or ip.payload.dport != iodproto.DEFAULT_PORT:
            return False
        payload = bytes(ip.payload.payload)
        if not payload.startswith(iodproto.MAGIC):
            return False
        for f in iodproto.FrameReader().feed(payload):
            if iodproto.decode(f, keys).op == op:
                found.append((f, (ip.src, ip.payload.sport)))
                return True
        return False
    capture.take(carries, lambda got: len(got) >= count, timeout=30)
    return found


def send_spoofed_udp(src, dst, payload):
    """One datagram to dst with a forged source (the attacker poses as the
    metaserver); built by scapy, sent from a raw socket of this host."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        packet = IP(src=src[0], dst=dst[0], ttl=64) / UDP(sport=src[1], dport=dst[1]) / payload
        s.sendto(bytes(packet), (dst[0], 0))
    finally:
        s.close()


def tcp_send(dst, data, keys=None, then_ping=None):
    """Frames to dst over a new connection; with then_ping (keys given),
    also a PING, returning the answers that came before its PONG."""
    with socket.create_connection(dst, timeout=10) as s:
        s.sendall(data)
        if then_ping is None:
            return None
        s.sendall(iodproto.encode(Message(Op.PING, then_ping), keys))
        reader, got = iodproto.FrameReader(), []
        while True:
            chunk = s.recv(1 << 16)
            assert chunk, "the iod closed the connection"
            for f in reader.feed(chunk):
                msg = iodproto.decode(f, keys)
                if msg.id == then_ping:
                    return got
                got.append(msg)


def test_forged_and_replayed_frames_from_another_host_change_nothing(testbed):
    from common import nfs3
    from common.runtime import metarecord
    from tools.dev import nfsclient
    tb = testbed
    iod_host, attacker = tb.iods[0], tb.clients[0]
    keys = keyfile.load(os.path.join(tb.workdir, "cluster.key"))
    iod_addr = (iod_host.ip, iodproto.DEFAULT_PORT)
    data_dir = os.path.join(tb.workdir, "iod0", "data")
    client, root = attacker.inside(nfsclient.connect, tb.ms.ip, tb.export, vers=3,
                                   transport="udp")

    # A UDP client's WRITE travels metaserver -> iod as one forwarded datagram:
    # the attacker captures it off the iod's link.
    capture = iod_host.inside(Capture, "eth0")
    try:
        fh = attacker.inside(client.create, root, b"victim")
        attacker.inside(client.write, fh, 0, b"original" * 64)
        [(old_write, source)] = sniff_frames(capture, keys, iod_host.ip, 17, Op.WRITE)
    finally:
        capture.close()
    assert source[0] == tb.ms.ip
    attacker.inside(client.write, fh, 0, b"CURRENT!" * 64)
    meta_path = os.path.join(tb.export, "victim")
    ino, seed = os.stat(meta_path).st_ino, metarecord.of_path(meta_path).seed
    path = datafile(data_dir, ino, seed)
    before = open(path, "rb").read()
    assert before == b"CURRENT!" * 64

    # Replayed verbatim, from the metaserver's own address and port.
    attacker.inside(send_spoofed_udp, source, iod_addr, old_write)
    # Forged: the right fields, the wrong key, over both transports.
    wrong = Keys.single(os.urandom(32))
    fresh = iodproto.Sequencer()
    forged_write = frame(wrong, Op.WRITE, fresh.stamp(time.time()), ino=ino, seed=seed,
                         offset=0, data=b"FORGED!!" * 64, stable=True)
    forged_purge = frame(wrong, Op.PURGE, fresh.stamp(time.time()), files=[(ino, seed)])
    attacker.inside(send_spoofed_udp, source, iod_addr, forged_write)
    assert attacker.inside(tcp_send, iod_addr, forged_write + forged_purge, keys, 99) == []
    iod0_counters(tb, {"dropped_replay": 1, "dropped_bad_mac": 3})
    assert open(path, "rb").read() == before
    assert attacker.inside(client.read, fh, 0, 512)[0] == before

    # unlinkd's PURGE of a removed file, captured on its TCP connection...
    capture = iod_host.inside(Capture, "eth0")
    try:
        attacker.inside(client.ok, nfs3.NFSPROC3.REMOVE,
                        nfs3.REMOVE3args(nfs3.diropargs3(root, b"victim")))
        [(old_purge, _)] = sniff_frames(capture, keys, iod_host.ip, 6, Op.PURGE)
    finally:
        capture.close()
    assert iodproto.decode(old_purge, keys).files == [(ino, seed)]
    wait_until(lambda: not os.path.exists(path), 30, what="the purge")
    # ...the same (ino, seed) holds data again (a legitimate sender wrote it)...
    with attacker.inside(IodClient, iod_host.ip, iodproto.DEFAULT_PORT, keys, "tcp") as c:
        assert c.call(Op.WRITE, ino=ino, seed=seed, offset=0, data=b"alive", stable=True) \
            .status == 0
    # ...and the captured PURGE, replayed, does not remove it.
    assert attacker.inside(tcp_send, iod_addr, old_purge, keys, 100) == []
    iod0_counters(tb, {"dropped_replay": 2, "dropped_bad_mac": 3})
    assert open(path, "rb").read() == b"alive"


# -- no reflection ------------------------------------------------------------------------

def iod_ping(ns, *args, key=None):
    argv = [sys.executable, "-m", "tools.iod_ping", *args]
    if key:
        argv += ["--key", key]
    return ns.run(argv, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)


def test_spoofed_pong_only_for_fresh_authenticated_pings_to_allowed_requesters(iods, ns):
    allowed = iods()                                       # default --pong-allow: loopback
    closed = iods(extra_args=["--pong-allow", "10.0.0.0/8"])
    r = iod_ping(ns, f"127.0.0.1:{allowed.port}", f"127.0.0.1:{closed.port}",
                 "--spoof-from", "127.0.0.9:2049", key=allowed.key_path)
    assert r.returncode == 1
    assert f"127.0.0.1:{allowed.port}  rtt" in r.stdout
    assert "spoofed PONG from 127.0.0.9:2049: arrived" in r.stdout
    assert "refused (error 13:" in r.stdout
    assert "no spoofed PONG to 127.0.0.1: not in this iod's --pong-allow" in r.stdout
    closed.counters_now(want={"refused_spoof": 1})

    # A captured spoof PING replayed, and an unstamped or unsigned one: no
    # packet leaves with the spoofed source.
    capture = ns.inside(Capture)
    requester = ns.inside(udp_socket, 2.0)
    try:
        seq = iodproto.Sequencer()
        spoof = frame(allowed.keys, Op.PING, seq.stamp(time.time()), spoof_from=METASERVER)
        requester.sendto(spoof, ("127.0.0.1", allowed.port))
        assert requester.recvfrom(65536)[1] == METASERVER      # the first one is honoured
        requester.sendto(spoof, ("127.0.0.1", allowed.port))   # the replay is not
        requester.sendto(frame(allowed.keys, Op.PING, None, spoof_from=METASERVER),
                         ("127.0.0.1", allowed.port))
        requester.sendto(frame(None, Op.PING, None, spoof_from=METASERVER,
                               pad=bytes(iodproto.PLAIN_PING_SIZE)), ("127.0.0.1", allowed.port))
        # the unsigned PING gets its rate-limited plain PONG, from the iod itself
        data, source = requester.recvfrom(65536)
        assert source == ("127.0.0.1", allowed.port)
        pong = iodproto.decode(data, None, unsigned_ok=True)
        assert pong.op == Op.PONG and not pong.authenticated
        allowed.counters_now(want={"dropped_replay": 1, "dropped_unstamped": 1,
                                   "refused_spoof": 1, "spoofed_datagrams": 2})
        spoofed = capture.take(lambda raw: IP(raw).src == METASERVER[0],
                               lambda got: True, timeout=1)
        assert spoofed == []
    finally:
        capture.close()
        requester.close()


def test_pings_without_a_fresh_stamp_get_rate_limited_plain_pongs(iods, ns):
    # One token, refilled every 100 s: exactly one answer, whatever the timing.
    iod = iods(extra_args=["--ping-rate", "0.01"])
    requester = ns.inside(udp_socket, 1.0)
    try:
        unsigned = iodproto.plain_ping(1, None)
        unstamped = iodproto.plain_ping(2, iod.keys)
        for _ in range(10):
            requester.sendto(unsigned, ("127.0.0.1", iod.port))
            requester.sendto(unstamped, ("127.0.0.1", iod.port))
        # Not padded: a PONG would be larger than the PING, none is sent.
        requester.sendto(iodproto.encode(Message(Op.PING, 3), None), ("127.0.0.1", iod.port))
        # Unsigned with a stamp: nobody without the key may make the iod
        # track a sender (it could evict the real ones).
        requester.sendto(iodproto.encode(Message(Op.PING, 4, Stamp(7, 1, time.time() + 59),
                                                 pad=bytes(256)), None),
                         ("127.0.0.1", iod.port))
        iod.counters_now(want={"dropped_rate_limited": 19, "dropped_short_ping": 1,
                               "dropped_bad_mac": 1})
        answers = []
        while True:
            try:
                answers.append(requester.recvfrom(65536))
            except TimeoutError:
                break
        assert len(answers) == 1 and answers[0][1] == ("127.0.0.1", iod.port)
        assert len(answers[0][0]) <= len(unsigned)          # no amplification
        # A stamped PING (an iod_ping with the key) is not limited.
        with iod.client("udp") as c:
            for _ in range(5):
                assert c.call(Op.PING, stamp=True).op == Op.PONG
    finally:
        requester.close()
    r = iod_ping(ns, f"127.0.0.1:{iod.port}", "--unauthenticated", "--timeout", "1")
    # The bucket is empty: even the key-less probe gets nothing now.
    assert r.returncode == 1 and "no answer" in r.stdout


def test_unauthenticated_iod_ping(iods, ns):
    iod = iods()
    r = iod_ping(ns, f"127.0.0.1:{iod.port}", "--unauthenticated")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rtt" in r.stdout and "(unauthenticated)" in r.stdout
    iod.counters_now(want={"ping_unauthenticated": 1})
    r = iod_ping(ns, f"127.0.0.1:{iod.port}", "--unauthenticated", "--spoof-from", "127.0.0.9")
    assert r.returncode == 2 and "needs the key" in r.stderr


# -- privileged ports ----------------------------------------------------------------------

def secure_iod(ns, workdir, key, port, **kw):
    """An Iod with --secure-port, probed for readiness from a reserved port
    (as root, the way the metaserver's and unlinkd's clients connect)."""
    from common.runtime.iodclient import IodConnection
    iod = Iod(ns, workdir, key, port=port, extra_args=["--secure-port"], **kw)

    async def ping():
        conn = await IodConnection.connect("127.0.0.1", port, iod.keys, timeout=2)
        await conn.aclose()
        return conn.pong.op == Op.PONG
    iod.answers = lambda: ns.inside(trio.run, ping)
    return iod


def test_secure_port(ns, tmp_path):
    key = str(tmp_path / "cluster.key")
    make_key(key)
    iod = secure_iod(ns, str(tmp_path / "iod"), key, 900)
    iod.start()
    try:
        # From ordinary ports: a TCP connection is closed at once, a datagram dropped.
        def high_port_attempts():
            with socket.create_connection(("127.0.0.1", 900), timeout=10) as s:
                s.sendall(iodproto.encode(Message(Op.PING, 1), iod.keys))
                try:
                    assert s.recv(100) == b""
                except ConnectionResetError:   # closed with our PING unread
                    pass
            with udp_socket() as u:
                u.sendto(iodproto.encode(Message(Op.PING, 2), iod.keys), ("127.0.0.1", 900))
        ns.inside(high_port_attempts)
        iod.counters_now(want={"dropped_insecure_port": 2})
        # iod_ping (root) pings from a reserved port by itself.
        r = iod_ping(ns, "127.0.0.1:900", key=key)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "--secure-port: refusing a connection from 127.0.0.1:" in iod.log_text()
    finally:
        iod.stop()
    # A port others may bind makes no sense with it.
    r = ns.run([sys.executable, "-m", "iod.cli", "--data-dir", str(tmp_path / "d2"), "--key",
                key, "--listen", "127.0.0.1", "--port", "2050", "--secure-port"],
               env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert r.returncode == 1 and "--secure-port needs --port below 1024" in r.stderr
    assert "Traceback" not in r.stderr


def test_cluster_over_secure_ports(ns, tmp_path):
    """nfspd and its unlinkd reach iods that take only privileged ports:
    relayed (TCP) and forwarded (UDP) data, and purges."""
    from common import nfs3
    from tools.dev import nfsclient
    key = str(tmp_path / "cluster.key")
    make_key(key)
    iods_ = [secure_iod(ns, str(tmp_path / f"iod{i}"), key, 900 + i, slot=f"{i}/2")
             for i in range(2)]
    conf = tmp_path / "iods.conf"
    conf.write_text("".join(f"127.0.0.1:{iod.port}\n" for iod in iods_))
    nfspd = Nfspd(ns, str(tmp_path / "nfspd"), portmap="embedded",
                  extra_args=["--iods", str(conf), "--key", key, "--stripe-unit", "65536"])
    try:
        for iod in iods_:
            iod.start()
        nfspd.start()
        data = os.urandom(300000)
        for transport in ("udp", "tcp"):
            client, root = ns.inside(nfsclient.connect, "127.0.0.1", nfspd.export, vers=3,
                                     transport=transport)
            name = f"f-{transport}".encode()
            fh = ns.inside(client.create, root, name)
            ns.inside(client.write_all, fh, data)
            assert ns.inside(client.read_all, fh) == data
        counters = [iod.counters_now() for iod in iods_]
        assert all(c.get("write", 0) > 0 and c.get("read", 0) > 0 for c in counters), counters
        assert any(c.get("spoofed_datagrams", 0) > 0 for c in counters)   # UDP: forwarded
        assert not any(c.get("dropped_insecure_port") for c in counters)
        ns.inside(client.ok, nfs3.NFSPROC3.REMOVE,
                  nfs3.REMOVE3args(nfs3.diropargs3(root, b"f-tcp")))
        for iod in iods_:
            iod.counters_now(want={"purge": 1})
    finally:
        nfspd.stop()
        for iod in iods_:
            iod.stop()


# -- key rotation --------------------------------------------------------------------------

def write_key(path, lines):
    # In place, as the iods' --key help says: they re-read the descriptor.
    with open(path, "r+") as f:
        f.truncate(0)
        f.write("".join(f"{kid}:{hexkey}\n" for kid, hexkey in lines))


def test_key_rotation_without_a_failed_request(ns, tmp_path):
    """Three steps, every daemon SIGHUPed in turn (nfspd's data path told as
    its SIGHUP would): add the new key, sign with it, drop the old one. A
    stream of relayed writes and reads and unlinkd's purges run throughout:
    not one fails, and no iod ever drops a frame."""
    from nfspd import layouts
    from nfspd.iodpath import IodDataPath
    from common.metafile import Metafile
    from nfspd.purgequeue import open_purge_queue
    key = str(tmp_path / "cluster.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    write_key(key, [(0, OLD_KEY)])
    daemons = [Iod(ns, str(tmp_path / f"iod{i}"), key, port=2050 + i, slot=f"{i}/2")
               for i in range(2)]
    try:
        for d in daemons:
            d.start()
    except BaseException:
        for d in daemons:
            d.stop()
        raise
    conf = tmp_path / "iods.conf"
    conf.write_text("".join(f"127.0.0.1:{d.port}\n" for d in daemons))
    state = str(tmp_path / "state")
    os.makedirs(state)
    queue = open_purge_queue(state)
    unlinkd_log = open(tmp_path / "unlinkd.log", "ab")
    unlinkd = ns.popen([sys.executable, "-m", "unlinkd.cli", "--journal", queue.directory,
                        "--iods", str(conf), "--key", key, "--batch-delay", "0",
                        "--log-level", "debug"],
                       stdout=unlinkd_log, stderr=unlinkd_log,
                       env=dict(os.environ, PYTHONPATH=REPO))

    wait_until(lambda: "purging on 2 iods" in (tmp_path / "unlinkd.log").read_text(), 30,
               what="unlinkd running", abort=lambda: unlinkd.poll() is not None and "exited")

    def unlinkd_pid():
        with open(f"/proc/{unlinkd.pid}/task/{unlinkd.pid}/children") as f:
            children = f.read().split()
        return int(children[0]) if children else unlinkd.pid

    def reloads(path):
        with open(path, errors="replace") as f:
            return f.read().count("cluster key reloaded")

    steps = [[(0, OLD_KEY), (1, NEW_KEY)], [(1, NEW_KEY), (0, OLD_KEY)], [(1, NEW_KEY)]]
    done = {"io": 0, "purged": 0}
    found, _ = layouts.open_layouts(state, [("127.0.0.1", d.port) for d in daemons])

    async def main():
        dp = IodDataPath(found, keyfile.load(key), 65536, startup_wait=10)
        with trio.fail_after(180):
            await run(dp)
        return dp

    async def run(dp):
        async with trio.open_nursery() as nursery:
            await nursery.start(dp.run)
            meta = Metafile(seed=12345, size=4 << 20, layout_gen=found.current)
            rotating = trio.Event()

            async def workload():
                i = 0
                while not rotating.is_set() or i < 20:
                    payload = os.urandom(100000)
                    offset = (i * 100000) % (3 << 20)
                    await dp.write(meta, 77, offset, payload, stable=True)
                    assert bytes(await dp.read(meta, 77, offset, len(payload))) == payload
                    i += 1
                done["io"] = i

            async def wait_reloaded(path, n):
                with trio.fail_after(20):
                    while reloads(path) < n:
                        await trio.sleep(0.05)

            async def rotate():
                for n, lines in enumerate(steps, 1):
                    write_key(key, lines)
                    # An order where the signing key changes before every
                    # receiver has it would fail; the steps make any order safe
                    # but one: a frame an iod's I/O thread signed just before
                    # its reload may still be on its way (under load, a
                    # thread can sit for a while between signing and
                    # sending), so nfspd drops the old key last, as an admin
                    # does who waits between the steps.
                    last = n == len(steps)
                    if not last:
                        dp.keys.update(keyfile.load(key))
                    os.kill(unlinkd_pid(), signal.SIGHUP)
                    await wait_reloaded(tmp_path / "unlinkd.log", n)
                    for d in daemons:
                        os.kill(d.pid, signal.SIGHUP)
                        await wait_reloaded(d.log_path, n)
                    if last:
                        dp.keys.update(keyfile.load(key))
                    # purges signed by unlinkd with the key of this step
                    for k in range(3):
                        ino = 1000 * n + k
                        for d in daemons:
                            # (already in the namespace's thread: no ns.inside)
                            with IodClient("127.0.0.1", d.port, dp.keys) as c:
                                c.call(Op.WRITE, ino=ino, seed=1, offset=0, data=b"x",
                                       stable=True)
                        queue(ino, 1)
                    with trio.fail_after(30):
                        while any(exists(d, 1000 * n + k, 1) for d in daemons
                                  for k in range(3)):
                            await trio.sleep(0.05)
                    done["purged"] += 3
                rotating.set()

            nursery.start_soon(workload)
            await rotate()
            while done["io"] == 0:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    try:
        dp = ns.inside(trio.run, main)
    finally:
        from tools.dev.netns import stop
        stop(unlinkd)
        unlinkd_log.close()
        queue.close()
        counters = [d.counters_now() for d in daemons]
        for d in daemons:
            d.stop()
    assert done["io"] >= 20 and done["purged"] == 9
    assert dp.keys.current_id == 1 and set(dp.keys.by_id) == {1}
    for c in counters:
        assert not any(k.startswith("dropped_") for k in c), c
    # Only the new key is accepted now.
    old_only = Keys.single(bytes.fromhex(OLD_KEY))
    assert iodproto.decode(iodproto.encode(Message(Op.PING, 1), Keys.single(
        bytes.fromhex(NEW_KEY), 1)), keyfile.load(key)).op == Op.PING
    with pytest.raises(iodproto.IodProtoError):
        iodproto.decode(iodproto.encode(Message(Op.PING, 1), old_only), keyfile.load(key))


def test_a_replaced_key_file_is_refused_on_sighup_and_the_old_keys_kept(ns, tmp_path):
    import shutil
    import tempfile
    # As /etc/nfsp: a directory everyone may search, a key only root reads.
    etc = tempfile.mkdtemp(prefix="nfsp-etc-")
    os.chmod(etc, 0o755)
    key = os.path.join(etc, "cluster.key")
    make_key(key)
    iod = Iod(ns, str(tmp_path / "iod"), key).start()
    try:
        _replace_key_and_sighup(iod, etc)
    finally:
        iod.stop()
        shutil.rmtree(etc)


def _replace_key_and_sighup(iod, etc):
    # The iod runs as nobody: the path cannot be opened any more, and a new
    # file behind it is out of reach of the descriptor kept from the start.
    new = os.path.join(etc, "new.key")
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"1:{NEW_KEY}\n".encode())
    os.close(fd)
    os.replace(new, iod.key_path)
    os.kill(iod.pid, signal.SIGHUP)
    wait_until(lambda: "cluster key not reloaded" in iod.log_text(), 10, what="the refusal")
    assert "was replaced by another file" in iod.log_text()
    with iod.client("tcp") as c:     # still the keys it started with
        assert c.call(Op.WRITE, ino=1, seed=1, offset=0, data=b"x", stable=True).status == 0


# -- clock skew --------------------------------------------------------------------------

def test_a_metaserver_clock_an_hour_off_still_works(iods, ns, tmp_path, monkeypatch):
    """nfspd's links stamp in the iod's time (offset from PONGs): a wrong
    clock on the metaserver costs nothing. A sender without that correction
    is refused (stale), and counted."""
    from nfspd import iodlink, layouts
    from nfspd.iodpath import IodDataPath
    from common.metafile import Metafile

    class Skewed:
        @staticmethod
        def time():
            return time.time() + 3600
    monkeypatch.setattr(iodlink, "time", Skewed)
    iod = iods()
    state = str(tmp_path / "state")
    os.makedirs(state)
    found, _ = layouts.open_layouts(state, [("127.0.0.1", iod.port)])
    result = {}

    async def main():
        dp = IodDataPath(found, iod.keys, 65536, startup_wait=10)
        async with trio.open_nursery() as nursery:
            await nursery.start(dp.run)
            meta = Metafile(seed=5, size=1 << 20, layout_gen=found.current)
            await dp.write(meta, 9, 0, b"on time", stable=True)
            result["read"] = bytes(await dp.read(meta, 9, 0, 7))
            result["offset"] = dp.links[0].clock_offset
            await dp.truncate(meta, 9, 2)
            nursery.cancel_scope.cancel()
    ns.inside(trio.run, main)
    assert result["read"] == b"on time"
    assert -3601 < result["offset"] < -3599
    assert iod.counters_now(want={"write": 1, "truncate": 1}).get("dropped_stale") is None
    with iod.client("tcp") as c:
        c.sequencer.offset = 3600
        c.send(Op.WRITE, ino=9, seed=5, offset=0, data=b"late", stable=True)
        assert c.call(Op.PING).op == Op.PONG
    iod.counters_now(want={"dropped_stale": 1})


# -- metrics -----------------------------------------------------------------------------

def scrape(ns, port):
    def get():
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    return ns.inside(get)


def sample(text, line_start):
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in:\n{text}")


def test_iod_metrics_endpoint(iods, ns):
    iod = iods(extra_args=["--metrics", "127.0.0.1:9110"])
    with iod.client("tcp") as c:
        c.call(Op.WRITE, ino=1, seed=1, offset=0, data=b"x" * 5000, stable=True)
        c.call(Op.READ, ino=1, seed=1, offset=0, count=3000)
        c.send_frame(iodproto.encode(Message(Op.PING, 5), Keys.single(os.urandom(32))))
        c.send(Op.WRITE, stamp=False, ino=1, seed=1, offset=0, data=b"y", stable=True)
        assert c.call(Op.PING).op == Op.PONG
    iod.counters_now(want={"dropped_bad_mac": 1, "dropped_unstamped": 1})
    status, ctype, text = scrape(ns, 9110)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert sample(text, 'nfsp_iod_requests_total{op="write"}') == 1
    assert sample(text, 'nfsp_iod_requests_total{op="read"}') == 1
    assert sample(text, 'nfsp_iod_requests_total{op="ping"}') >= 2
    assert sample(text, "nfsp_iod_written_bytes_total") == 5000
    assert sample(text, "nfsp_iod_read_bytes_total") == 3000
    assert sample(text, 'nfsp_iod_dropped_total{reason="bad_mac"}') == 1
    assert sample(text, 'nfsp_iod_dropped_total{reason="unstamped"}') == 1
    assert sample(text, "nfsp_iod_queue_depth") == 0
    assert sample(text, "nfsp_iod_queue_capacity") == 1024
    assert sample(text, "nfsp_iod_free_bytes") > 0
    assert sample(text, "nfsp_iod_total_bytes") >= sample(text, "nfsp_iod_free_bytes")
    assert sample(text, "nfsp_iod_replay_senders") == 1
    assert "# TYPE nfsp_iod_dropped_total counter" in text
    assert "Prometheus metrics on http://127.0.0.1:9110/metrics" in iod.log_text()
