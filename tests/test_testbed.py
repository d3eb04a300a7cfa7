"""The netns cluster testbed (tools/dev/testbed.py): real namespaces, veths, a
bridge, tc, and the real daemons inside."""

import concurrent.futures
import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from tools.dev import netns as nslib
from tools.dev import testbed as tblib

pytestmark = pytest.mark.netns
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def name():
    if not nslib.available():
        pytest.skip("needs root with nsenter (network namespaces)")
    return f"tb{os.getpid()}"


@pytest.fixture
def bed(name, tmp_path):
    made = []

    def make(**kw):
        tb = tblib.Testbed(name, workdir=str(tmp_path / "bed"), **kw)
        made.append(tb)
        return tb
    yield make
    for tb in made:
        tb.down()


def _netns_list():
    return set(os.listdir(tblib.NETNS_DIR)) if os.path.isdir(tblib.NETNS_DIR) else set()


def _nfs_null(tb, host):
    from tools.rpcclient import RpcClient

    def call():
        with RpcClient(tb.ms.ip, 2049, "udp", timeout=3) as c:
            return c.call(100003, 3, 0).accepted
    return host.inside(call)


def test_hosts_on_one_lan_and_nothing_outside(bed):
    tb = bed(n_clients=2).up()
    assert {h.netns for h in tb.hosts} | {tb.bridge_netns} <= _netns_list()
    for h in tb.clients:
        assert _nfs_null(tb, h), f"{h} cannot reach the metaserver"
        addrs = h.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=True).stdout
        assert f"{h.ip}/16" in addrs
        for key in ("all", "default", "eth0"):
            assert h.run(["cat", f"/proc/sys/net/ipv4/conf/{key}/rp_filter"],
                         check=True).stdout.strip() == "0"
    # The test subnet exists only inside the testbed's namespaces.
    root = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    assert "10.77." not in root.stdout


def test_up_twice_changes_nothing_and_down_only_what_it_made(bed, name, tmp_path):
    from pyroute2 import netns
    tb = bed().up()
    pid = tb.status()["daemons"]["nfspd"]["pid"]
    again = tblib.Testbed(name, workdir=tb.workdir).up()
    assert again.status()["daemons"]["nfspd"]["pid"] == pid
    with pytest.raises(tblib.TestbedError, match="another shape"):
        tblib.Testbed(name, n_clients=3, workdir=tb.workdir).up()
    decoy = f"{name}-c9"  # looks like one of ours, was not made by this testbed
    netns.create(decoy)
    try:
        assert tb.down()
        assert not ({h.netns for h in tb.hosts} | {tb.bridge_netns}) & _netns_list()
        assert decoy in _netns_list()
        assert not os.path.exists(f"/proc/{pid}")
        assert tb.down() is False  # nothing left to do
    finally:
        netns.remove(decoy)


def test_dead_daemon_restarted_by_up(bed):
    tb = bed().up()
    tb.stop_daemon("nfspd")
    assert "nfspd" not in tb.status()["daemons"]
    tb.up()
    assert tb.status()["daemons"]["nfspd"]["alive"]
    assert _nfs_null(tb, tb.clients[0])


def _ip_udp(src, dst, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    # The kernel fills in the IP checksum (and the id when 0) of IP_HDRINCL packets.
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def test_spoofed_reply_from_another_host_is_accepted(bed):
    """What an iod does: a raw packet whose source is the metaserver's address,
    sent from the iod's own link, reaches the client as if from the metaserver."""
    tb = bed(n_clients=2).up(daemons=False)
    sender, client = tb.clients[1], tb.clients[0]
    rx = client.inside(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.inside(rx.bind, (client.ip, 5555))
        rx.settimeout(5)
        before = tb.counters()

        def send():
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
                raw.sendto(_ip_udp(tb.ms.ip, client.ip, 2049, 5555, b"spoofed" * 100),
                           (client.ip, 0))
        sender.inside(send)
        data, addr = rx.recvfrom(2048)
        after = tb.counters()
    finally:
        rx.close()
    assert data == b"spoofed" * 100 and addr == (tb.ms.ip, 2049)
    # The bytes went over the sender's link, not the metaserver's.
    assert after[sender.role]["tx_bytes"] - before[sender.role]["tx_bytes"] >= 728
    assert after["ms"]["rx_bytes"] - before["ms"]["rx_bytes"] < 700


def test_counters_follow_the_bytes(bed):
    tb = bed(n_clients=1).up(daemons=False)
    c = tb.clients[0]
    size = 1_000_000
    srv = tb.ms.inside(socket.create_server, (tb.ms.ip, 6000))
    srv.settimeout(5)

    def receive():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            got = 0
            while chunk := conn.recv(65536):
                got += len(chunk)
            return got
    try:
        before = tb.counters()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            received_payload = pool.submit(receive)

            def send():
                with socket.create_connection((tb.ms.ip, 6000), timeout=5) as s:
                    s.sendall(b"x" * size)
            c.inside(send)
            assert received_payload.result(timeout=10) == size
        after = tb.counters()
    finally:
        srv.close()
    sent = after["c0"]["tx_bytes"] - before["c0"]["tx_bytes"]
    received = after["ms"]["rx_bytes"] - before["ms"]["rx_bytes"]
    # The payload plus TCP/IP/Ethernet headers (well under 10% with 1448-byte segments).
    assert size < sent < size * 1.1, sent
    assert size < received < size * 1.1, received
    assert after["ms"]["tx_bytes"] - before["ms"]["tx_bytes"] < size * 0.1  # only ACKs back


def test_rate_limit_on_both_ends_of_every_link(bed):
    tb = bed(n_clients=1, rate="50mbit").up(daemons=False)
    out = tb.clients[0].run(["tc", "qdisc", "show", "dev", "eth0"], check=True).stdout
    assert "tbf" in out and "rate 50Mbit" in out, out
    out = subprocess.run(tb.bridge_argv(["tc", "qdisc", "show", "dev", "c0"]), capture_output=True,
                         text=True, check=True).stdout
    assert "tbf" in out and "rate 50Mbit" in out, out


def test_delay_and_loss_need_netem(bed):
    tb = bed(n_clients=1, rate="50mbit", delay="1ms", loss=0.5)
    try:
        tb.up(daemons=False)
    except tblib.TestbedError as e:
        # This machine's kernel has no sch_netem: the error must say so.
        assert "sch_netem" in str(e)
        return
    out = tb.clients[0].run(["tc", "qdisc", "show", "dev", "eth0"], check=True).stdout
    assert "netem" in out and "delay 1ms" in out and "loss 0.5%" in out and "tbf" in out, out


def test_iods_in_their_hosts_hold_the_data(bed):
    if not tblib.Testbed.iod_built():
        pytest.skip("iod not built yet (no iod/daemon.py)")
    from tools.dev import nfsclient
    tb = bed(n_iods=2, n_clients=1).up()
    st = tb.status()
    assert {"nfspd", "iod0", "iod1"} <= set(st["daemons"]) and \
        all(d["alive"] for d in st["daemons"].values()), st["daemons"]
    ms_argv = " ".join(tb._load_state()["daemons"]["nfspd"]["argv"])
    assert "--iods" in ms_argv

    def write():
        c, root = nfsclient.connect(tb.ms.ip, tb.export, vers=3, transport="tcp")
        try:
            fh = c.create(root, b"f")
            c.write_all(fh, b"z" * 200000)
            return c.read_all(fh)
        finally:
            c.rpc.close()
    assert tb.clients[0].inside(write) == b"z" * 200000
    # Stripes of 64 KiB alternate over both iods: each holds part of the file.
    for i in range(2):
        files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(tb.workdir, f"iod{i}"))
                 for f in fs]
        assert sum(os.path.getsize(f) for f in files) > 0, f"iod{i} holds none of the data"


def test_cli_up_status_down(name, tmp_path):
    workdir = str(tmp_path / "cli")
    base = [sys.executable, "-m", "tools.dev.testbed"]
    env = dict(os.environ, PYTHONPATH=REPO)

    def run(*args):
        return subprocess.run(base + list(args) + ["--name", name, "--workdir", workdir],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    try:
        for _ in range(2):  # safe to run twice
            r = run("up", "--clients", "1")
            assert r.returncode == 0, r.stderr
            assert "10.77.0.1" in r.stdout
        r = run("status", "--json")
        st = json.loads(r.stdout)
        assert st["up"] and st["daemons"]["nfspd"]["alive"] and "c0" in st["counters"]
    finally:
        r = run("down")
    assert r.returncode == 0 and "down" in r.stdout
    r = run("status")
    assert r.returncode == 1 and "down" in r.stdout


def test_a_testbed_that_cannot_come_up_in_a_with_is_taken_down_again(name, tmp_path):
    tb = tblib.Testbed(name, workdir=str(tmp_path / "bed"), nfspd_args=["--no-such-option"])
    with pytest.raises(tblib.TestbedError), tb:
        pass  # not reached: nfspd does not start with an unknown option
    assert not ({h.netns for h in tb.hosts} | {tb.bridge_netns}) & _netns_list()
    assert tb.down() is False  # nothing recorded is left
