"""tools/dev/loadgen: its pure pieces, and the real thing (as a process) against
a real NFSP cluster (nfspd + iods) in the test's namespace."""

import json
import math
import os
import random
import socket
import subprocess
import sys
import time
import types

import click
import pytest
import trio
import trio.testing

from common import nfs3, rpc
from common.xdr import encode
from tools.dev import REPO
from tools.dev import loadgen
from tools.dev.loadgen import PATTERN, PATTERN_PERIOD, Histogram, Pattern

# -- pure pieces ------------------------------------------------------------------


def test_the_pattern_depends_on_the_name_and_the_offset_only():
    other = Pattern()
    shift = PATTERN.shift("loadgen/data")
    assert PATTERN.data(shift, 12345, 32768) == other.data(shift, 12345, 32768)
    assert PATTERN.data(shift, 0, 4096) != PATTERN.data(PATTERN.shift("loadgen/data.1"), 0, 4096)
    # A stripe served from another offset differs unless the offsets are a
    # period apart, which no power-of-two stripe or transfer size is.
    assert all(PATTERN.data(shift, 0, 4096) != PATTERN.data(shift, 1 << b, 4096)
               for b in range(12, 31))
    assert PATTERN.data(shift, 7, 100) == PATTERN.data(shift, 7 + PATTERN_PERIOD, 100)
    assert all(PATTERN_PERIOD % d for d in range(2, int(math.isqrt(PATTERN_PERIOD)) + 1))


def test_a_local_pattern_file_is_what_the_loadgen_expects(tmp_path):
    path = tmp_path / "f"
    PATTERN.write_local(str(path), "loadgen/f", 3 * (1 << 20) + 5)
    data = path.read_bytes()
    shift = PATTERN.shift("loadgen/f")
    assert len(data) == 3 * (1 << 20) + 5
    for off in (0, 1 << 20, len(data) - 5000):
        assert data[off:off + 5000] == PATTERN.data(shift, off, min(5000, len(data) - off))


def test_histogram_quantiles_are_within_one_percent():
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-6, 1.5) for _ in range(20000))
    h = Histogram()
    for v in values:
        h.add(v)
    for q in (0.5, 0.9, 0.99):
        exact = values[math.ceil(q * len(values)) - 1]
        assert exact <= h.quantile(q) <= exact * 1.01
    assert h.quantile(1.0) == max(values) and h.n == len(values)
    assert len(h.counts) == Histogram.SIZE  # fixed, however many samples


def test_sizes_and_operation_weights_parse_or_say_why():
    assert loadgen.parse_size("64M") == 64 << 20
    assert loadgen.parse_size("8KiB") == 8192
    assert loadgen.parse_size("1g") == 1 << 30
    assert loadgen.parse_ops("getattr=3,lookup", loadgen.META_OPS) == \
        {"getattr": 3.0, "lookup": 1.0}
    with pytest.raises(click.BadParameter, match="'read'"):
        loadgen.parse_ops("read=1", loadgen.META_OPS)
    with pytest.raises(click.BadParameter, match="positive"):
        loadgen.parse_ops("getattr=0", loadgen.META_OPS)


# -- xid matching, against a responder that misbehaves on purpose ----------------


async def _misbehaving_server(sock, answers):
    """Answers each call twice, and once with an xid nobody asked for."""
    for _ in range(answers):
        data, peer = await sock.recvfrom(65536)
        call = rpc.decode_call(data)
        body = encode(nfs3.GETATTR3res, nfs3.GETATTR3res(nfs3.nfsstat3.NFS3ERR_STALE))
        reply = rpc.reply_success(call.xid, body)
        await sock.sendto(reply, peer)
        await sock.sendto(reply, peer)
    await sock.sendto(rpc.reply_success(0xDEADBEEF ^ call.xid, body), peer)


def test_a_sequence_of_calls_is_not_counted_as_a_call_of_its_own():
    """A server's CPU per call is its CPU over the report's calls: a
    MKDIR+RMDIR pair is two calls, as a CREATE+REMOVE pair is."""
    cfg = types.SimpleNamespace(workload="meta", proto="tcp", server="s", clients=1,
                                client_base=0, window=1)
    client = types.SimpleNamespace(cid=0, stats=loadgen.Stats(), rsize=None, wsize=None)
    for pair, calls in (("create_remove", ("create", "remove")),
                        ("mkdir_rmdir", ("mkdir", "rmdir"))):
        for _ in range(5):
            for call in calls:
                client.stats.done(call, 0.001)
            client.stats.done(pair, 0.002)
    r = loadgen.summarize(cfg, [client], 1.0, 0.1)
    assert r["calls"] == 20
    assert r["per_op"]["mkdir_rmdir"]["count"] == r["per_op"]["create_remove"]["count"] == 5


def _channel_run():
    async def main():
        server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind(("127.0.0.1", 0))
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.connect(server.getsockname())
        stats = loadgen.Stats()

        async def connect():
            return client
        chan = loadgen.Channel(connect, "udp", None, stats, 4, 1.0, 2, 1 << 20)
        await chan.open()
        c = loadgen.Client(0, chan, b"root", stats, 4096, 4096)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chan.receive_loop)
            nursery.start_soon(_misbehaving_server, server, 3)
            for _ in range(3):
                with pytest.raises(loadgen.CallFailed):
                    await c.getattr(b"fh")
            with trio.fail_after(5):
                while not stats.errors.get("stray reply") or stats.duplicates < 3:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return stats
    return trio.run(main)


@pytest.mark.netns
def test_replies_are_matched_by_xid_and_strays_counted(ns):
    stats = ns.inside(_channel_run)
    assert stats.errors["getattr NFS3ERR_STALE"] == 3   # the NFS status is checked too
    assert stats.duplicates == 3                         # second answers to finished calls
    assert stats.errors["stray reply"] == 1


def _cancelled_send_run():
    """A WRITE given up while its record is half sent, then a GETATTR on the
    same TCP connection: the procedures of the records the server reads."""
    async def main():
        near, far = socket.socketpair()
        server = trio.SocketStream(trio.socket.from_stdlib_socket(far))
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(near))

        async def connect():
            return stream
        chan = loadgen.Channel(connect, "tcp", None, loadgen.Stats(), 4, 1.0, 0, 1 << 20)
        await chan.open()
        big = b"x" * (8 << 20)   # far more than the socket buffers hold
        async with trio.open_nursery() as nursery:
            give_up = trio.CancelScope()
            nursery.start_soon(_call_in, give_up, chan, nfs3.NFSPROC3.WRITE, big)
            await trio.testing.wait_all_tasks_blocked()   # stuck in the send
            give_up.cancel()
            nursery.start_soon(_call_in, trio.CancelScope(), chan, nfs3.NFSPROC3.GETATTR, b"fh")
            reader, procs = rpc.RecordReader(16 << 20), []
            with trio.move_on_after(10):
                while len(procs) < 2:
                    procs += [rpc.decode_call(r).proc for r in reader.feed(
                        await server.receive_some(1 << 20))]
            nursery.cancel_scope.cancel()
        return procs
    return trio.run(main)


async def _call_in(scope, chan, proc, args):
    with scope:
        await chan.call(proc, args)


def test_a_call_given_up_mid_send_does_not_corrupt_the_connection():
    assert _cancelled_send_run() == [nfs3.NFSPROC3.WRITE, nfs3.NFSPROC3.GETATTR]


# -- the real loadgen against a real cluster ---------------------------------------


def run_loadgen(ns, export, *args, expect=0):
    argv = [sys.executable, "-m", "tools.dev.loadgen", "--server", "127.0.0.1", "--export", export,
            "--json", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=REPO)
    r = ns.run(argv, timeout=300, env=env)
    assert r.returncode == expect, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else r


@pytest.fixture
def cl(cluster):  # noqa: F811 (the fixture imported above)
    return cluster(n_iods=3, stripe_unit=65536)


@pytest.mark.netns
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_per_client_files_are_each_read_whole_and_checked(cl, proto):
    size = 3 * (1 << 20) + 12345    # not a multiple of the stripe or the transfer size
    r = run_loadgen(cl.ns, cl.export, "--workload", "seqread", "--proto", proto, "--clients", 3,
                    "--per-client", "--file-size", size, "--duration", 0, "--window", 4)
    assert r["error_count"] == 0, r["error_samples"]
    assert r["bytes_read"] == 3 * size
    assert r["ops"] == 3 * math.ceil(size / r["rsize"])
    assert r["rsize"] == (32768 if proto == "udp" else 1 << 20)
    assert [c["bytes"] for c in r["per_client"]] == [size] * 3
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]


@pytest.mark.netns
def test_data_that_is_not_the_pattern_is_counted_and_fails_the_run(cl):
    client, root = cl.connect(3, "udp")
    d = cl.ns.inside(client.ok, nfs3.NFSPROC3.MKDIR, nfs3.MKDIR3args(
        nfs3.diropargs3(root, b"lg"), nfs3.sattr3.unchanged().replace(mode=0o755))).obj
    fh = cl.ns.inside(client.create, d, b"data")
    cl.ns.inside(client.write_all, fh, b"\0" * (256 << 10))
    r = run_loadgen(cl.ns, cl.export, "--workload", "seqread", "--dir", "lg", "--no-prepare",
                    "--duration", 0, expect=1)
    assert r["errors"] == {"read data": 8}     # every 32 KiB READ
    assert r["bytes_read"] == 0


@pytest.mark.netns
def test_written_data_reads_back_through_the_iods(cl):
    w = run_loadgen(cl.ns, cl.export, "--workload", "seqwrite", "--file", "w", "--file-size", "5M",
                    "--duration", 0)
    assert w["error_count"] == 0 and w["bytes_written"] == 5 << 20
    assert w["per_op"]["commit"]["count"] == 1
    for workload in ("rewrite", "seqread"):
        r = run_loadgen(cl.ns, cl.export, "--workload", workload, "--file", "w",
                        "--file-size", "5M", "--no-prepare", "--duration", 0)
        assert r["error_count"] == 0 and r["bytes_read"] == 5 << 20, r
    r = run_loadgen(cl.ns, cl.export, "--workload", "randread", "--file", "w", "--no-prepare",
                    "--duration", 1)
    assert r["error_count"] == 0 and r["ops"] > 0
    # A seek is a READ and maybe a WRITE: the last ones may have read when the time ran out.
    assert r["ops"] * 8192 <= r["bytes_read"] <= (r["ops"] + r["window"]) * 8192


@pytest.mark.netns
def test_metadata_mix_checks_every_kind_of_call(cl):
    r = run_loadgen(cl.ns, cl.export, "--workload", "meta", "--dir-entries", 300, "--clients", 2,
                    "--duration", 3)
    assert r["error_count"] == 0, r["error_samples"]
    kinds = {"getattr", "lookup", "create", "remove", "create_remove", "readdirplus"}
    assert kinds <= set(r["per_op"])
    client, root = cl.connect(3, "udp")
    scratch = cl.ns.inside(client.walk, root, "loadgen/scratch")
    assert set(cl.ns.inside(client.listdir, scratch)) <= {b".", b".."}  # every CREATE removed


@pytest.mark.netns
def test_mixed_and_small_file_workloads(cl):
    r = run_loadgen(cl.ns, cl.export, "--workload", "mixed", "--clients", 4, "--dir-entries", 100,
                    "--file-size", "2M", "--duration", 2)
    assert r["error_count"] == 0, r["error_samples"]
    assert r["bytes_read"] > 0 and r["bytes_written"] > 0
    s = run_loadgen(cl.ns, cl.export, "--workload", "smallfiles", "--files", 30, "--clients", 2,
                    "--duration", 0)
    assert s["error_count"] == 0 and s["ops"] == 60
    assert s["bytes_read"] == 2 * sum(loadgen.small_file_sizes(30))


@pytest.mark.netns
def test_no_server_is_one_line_and_exit_status_2(ns):
    r = run_loadgen(ns, "/nowhere", "--timeout", 0.2, "--retries", 1, expect=2)
    assert isinstance(r, subprocess.CompletedProcess)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr


@pytest.mark.netns
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_server_restart_is_ridden_out(cl, proto):
    """As a hard mount does: UDP calls are retransmitted until the server is
    back, a TCP connection is made again and its calls sent again."""
    run_loadgen(cl.ns, cl.export, "--workload", "seqread", "--file-size", "4M", "--prepare-only")
    argv = [sys.executable, "-m", "tools.dev.loadgen", "--server", "127.0.0.1", "--export",
            cl.export, "--json", "--proto", proto, "--workload", "seqread", "--file-size", "4M",
            "--passes", 0, "--duration", 10, "--no-prepare"]
    p = cl.ns.popen(list(map(str, argv)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=dict(os.environ, PYTHONPATH=REPO))
    try:
        time.sleep(3)  # reading by then: the file was prepared beforehand
        cl.nfspd.restart()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()
    r = json.loads(out.decode().splitlines()[-1])
    assert r["error_count"] == 0 and r["bytes_read"] > 0
    if proto == "tcp":
        assert r["reconnects"] >= 1
    else:
        assert r["retransmits"] >= 1
