"""Throughput of the data path and the metaserver's CPU cost per request
(figures, not pass/fail; prints JSON lines).

    sudo python3 -m tools.dev.bench_datapath [--iods 1,4] [--mib 128] [--transports tcp]

One client, sequential I/O on one file, requests pipelined the way a kernel
client keeps several RPCs in flight (``WINDOW``), transfer sizes as nfspd's
FSINFO advertises them (UDP: 32 KiB, TCP: 1 MiB). Every reply's xid and
status are checked, and the data read back is compared with what was
written. The metaserver's CPU time is the run time of every nfspd thread
over the run (/proc/PID/task/*/schedstat, in nanoseconds; clock ticks of
/proc/PID/stat where that is missing or a thread came or went), divided by
the number of requests or MiB (and the iods' together, per MiB read).
Everything runs on one machine (the iods, nfspd and the client share its
cores and its loopback), so these are the metaserver's costs more than what
a cluster would reach.
"""

import argparse
import json
import os
import socket
import tempfile
import time

from common import nfs3, rpc
from common.nfs3 import NFSPROC3, stable_how
from common.xdr import Unpacker, encode
from tools.dev import nfsclient
from tools.dev.cluster import Cluster
from tools.dev.daemons import Nfspd
from tools.dev.netns import Namespace
from tools.rpcclient import RpcClient

FILE_MIB = 128
WINDOW = 16


def cpu_seconds(pid):
    """CPU time of ``pid`` so far, as a snapshot for cpu_used."""
    threads = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[tid] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        threads = None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return threads, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(before, after):
    """Seconds of CPU between two cpu_seconds snapshots: nanoseconds from
    every thread's schedstat (the clock ticks of /proc/PID/stat are 10 ms,
    too coarse for a few thousand calls of tens of microseconds), unless a
    thread came or went in between (a thread that exits takes its schedstat
    with it: trio's idle worker threads do), then the process's ticks."""
    (t0, ticks0), (t1, ticks1) = before, after
    if t0 is not None and t1 is not None and t0.keys() == t1.keys():
        return sum(t1[k] - t0[k] for k in t0) / 1e9
    return ticks1 - ticks0


class Pipeline:
    """Raw RPC calls with up to ``window`` outstanding, over UDP or TCP.

    Over TCP a reply is received with recv_into straight into a buffer of its
    record's size (the kernel's copy only): the client shares the machine's
    cores with the servers it measures, and must cost them as little as it
    can (RpcClient's record reassembly costs more than nfspd's relay of a
    MiB). Compare releases with the same client: run this file from one
    tree against the other's daemons."""

    def __init__(self, transport, cred):
        self.rpc = RpcClient("127.0.0.1", 2049, transport, timeout=5, cred=cred)
        self.rpc.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.xid = 1000
        self._mark = bytearray(4)

    def receive(self):
        if self.rpc.transport != "tcp":
            return self.rpc.receive()
        sock, parts, last = self.rpc.sock, [], False
        while not last:
            _recv_exactly(sock, memoryview(self._mark))
            mark = int.from_bytes(self._mark, "big")
            last = bool(mark & rpc.LAST_FRAGMENT)
            part = bytearray(mark & ~rpc.LAST_FRAGMENT)
            _recv_exactly(sock, memoryview(part))
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def send(self, proc, args_type, args):
        self.xid += 1
        self.rpc.send(rpc.encode_call(self.xid, nfs3.NFS_PROGRAM, 3, proc,
                                      encode(args_type, args), self.rpc.cred))
        return self.xid

    def run(self, calls, res_type, check):
        """calls: iterator of (proc, args_type, args); check(xid_args, res)."""
        outstanding = {}
        calls = iter(calls)
        done = 0
        more = True
        while more or outstanding:
            while more and len(outstanding) < WINDOW:
                try:
                    proc, args_type, args = next(calls)
                except StopIteration:
                    more = False
                    break
                outstanding[self.send(proc, args_type, args)] = args
            if not outstanding:
                break
            reply = rpc.decode_reply(self.receive())
            args = outstanding.pop(reply.xid, None)
            if args is None:
                continue
            assert reply.accepted and reply.stat == rpc.accept_stat.SUCCESS
            check(args, res_type.unpack(Unpacker(reply.body)))
            done += 1
        return done


def _recv_exactly(sock, view):
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("server closed the connection")
        got += n


def measure(c, transport, io, data, fh, cred):
    pid = c.nfspd.pid
    size = len(data)
    pipe = c.ns.inside(Pipeline, transport, cred)

    def writes():
        for off in range(0, size, io):
            chunk = data[off:off + io]
            args = nfs3.WRITE3args(fh, off, len(chunk), stable_how.UNSTABLE, chunk)
            yield NFSPROC3.WRITE, nfs3.WRITE3args, args

    def write_ok(args, res):
        assert res.disc == nfs3.nfsstat3.NFS3_OK and res.body.count == args.count

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    n_writes = pipe.run(writes(), nfs3.WRITE3res, write_ok)
    pipe.run(iter([(NFSPROC3.COMMIT, nfs3.COMMIT3args, nfs3.COMMIT3args(fh, 0, 0))]),
             nfs3.COMMIT3res, lambda a, r: None)
    t1, cpu1 = time.perf_counter(), cpu_seconds(pid)

    got = {}

    def reads():
        for off in range(0, size, io):
            yield NFSPROC3.READ, nfs3.READ3args, nfs3.READ3args(fh, off, io)

    def read_ok(args, res):
        assert res.disc == nfs3.nfsstat3.NFS3_OK
        got[args.offset] = res.body.data

    iods = [iod.pid for iod in c.iods]
    iods0 = [cpu_seconds(p) for p in iods]
    cpu2, t2 = cpu_seconds(pid), time.perf_counter()
    n_reads = pipe.run(reads(), nfs3.READ3res, read_ok)
    t3, cpu3 = time.perf_counter(), cpu_seconds(pid)
    iods_read = sum(cpu_used(before, cpu_seconds(p)) for p, before in zip(iods, iods0))
    assert b"".join(got[k] for k in sorted(got)) == data
    mib = size / (1 << 20)
    return {"write_MBps": round(size / (t1 - t0) / 1e6, 1),
            "read_MBps": round(size / (t3 - t2) / 1e6, 1),
            "writes": n_writes, "reads": n_reads,
            "ms_cpu_per_write": round(cpu_used(cpu0, cpu1) / n_writes * 1e3, 3),
            "ms_cpu_per_read": round(cpu_used(cpu2, cpu3) / n_reads * 1e3, 3),
            "ms_cpu_per_MiB_written": round(cpu_used(cpu0, cpu1) / mib * 1e3, 2),
            "ms_cpu_per_MiB_read": round(cpu_used(cpu2, cpu3) / mib * 1e3, 2),
            "ms_iods_cpu_per_MiB_read": round(iods_read / mib * 1e3, 2)}


def sequential_throughput(ns, workdir, n_iods, transports=("udp", "tcp")):
    c = Cluster(ns, workdir, n_iods=n_iods, stripe_unit=65536,
                iod_args=["--log-level", "info"]).start()
    try:
        data = os.urandom(FILE_MIB << 20)
        for transport, io in (("udp", 32768), ("tcp", 1 << 20)):
            if transport not in transports:
                continue
            client, root = c.connect(3, transport)
            fh = client.create(root, f"bench-{transport}".encode())
            fsinfo = client.ok(NFSPROC3.FSINFO, nfs3.FSINFO3args(root))
            if not (fsinfo.rtmax == io and fsinfo.wtmax == io):
                raise RuntimeError(f"FSINFO advertises {fsinfo.rtmax}/{fsinfo.wtmax}, not {io}")
            figures = measure(c, transport, io, data, fh, client.rpc.cred)
            print(json.dumps({"iods": n_iods, "transport": transport, "io": io,
                              "file_MiB": FILE_MIB, "window": WINDOW, **figures}), flush=True)
    finally:
        c.stop()


def reference_costs(ns, workdir, n=8192):
    """The same metaserver's CPU per GETATTR (the floor of any call), per
    forwarded 32 KiB READ, and per 32 KiB READ served from the local store
    (nfspd without --iods: the data moves through the metaserver)."""
    data = os.urandom(32 << 20)
    out = {}
    c = Cluster(ns, os.path.join(workdir, "iods"), n_iods=1, stripe_unit=65536,
                iod_args=["--log-level", "info"], nfspd_args=["--log-level", "info"]).start()
    local = None
    try:
        for name in ("iods", "local"):
            if name == "iods":
                pid = c.nfspd.pid
                client, root = c.connect(3, "udp")
            else:
                c.stop()
                local = Nfspd(ns, os.path.join(workdir, "local"),
                              extra_args=["--log-level", "info"]).start()
                pid = local.pid
                client, root = ns.inside(nfsclient.connect, "127.0.0.1", local.export)
            fh = client.create(root, b"ref")
            pipe = ns.inside(Pipeline, "udp", client.rpc.cred)
            pipe.run(((NFSPROC3.WRITE, nfs3.WRITE3args,
                       nfs3.WRITE3args(fh, off, 32768, stable_how.UNSTABLE, data[off:off + 32768]))
                      for off in range(0, len(data), 32768)), nfs3.WRITE3res, lambda a, r: None)
            cpu0 = cpu_seconds(pid)
            pipe.run(((NFSPROC3.GETATTR, nfs3.GETATTR3args, nfs3.GETATTR3args(fh))
                      for _ in range(n)), nfs3.GETATTR3res, lambda a, r: None)
            cpu1 = cpu_seconds(pid)
            reads = ((NFSPROC3.READ, nfs3.READ3args,
                      nfs3.READ3args(fh, (i * 32768) % len(data), 32768)) for i in range(n))
            pipe.run(reads, nfs3.READ3res, lambda a, r: None)
            cpu2 = cpu_seconds(pid)
            out[f"{name}_us_cpu_per_getattr"] = round(cpu_used(cpu0, cpu1) / n * 1e6)
            out[f"{name}_us_cpu_per_read32k"] = round(cpu_used(cpu1, cpu2) / n * 1e6)
    finally:
        c.stop()
        if local is not None:
            local.stop()
    print(json.dumps(out), flush=True)


def main():
    global FILE_MIB, WINDOW
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iods", default="1,4", help="iod counts to measure, comma-separated")
    ap.add_argument("--mib", type=int, default=FILE_MIB, help="file size in MiB")
    ap.add_argument("--window", type=int, default=WINDOW, help="requests in flight")
    ap.add_argument("--transports", default="udp,tcp", help="transports to measure, "
                    "comma-separated")
    ap.add_argument("--no-reference", action="store_true", help="skip the per-call CPU costs")
    ap.add_argument("--calls", type=int, default=8192, help="calls per per-call CPU cost")
    a = ap.parse_args()
    FILE_MIB, WINDOW = a.mib, a.window
    with tempfile.TemporaryDirectory() as tmp, Namespace() as ns:
        for n in (int(x) for x in a.iods.split(",")):
            sequential_throughput(ns, os.path.join(tmp, f"seq{n}"), n,
                                  tuple(a.transports.split(",")))
        if not a.no_reference:
            reference_costs(ns, os.path.join(tmp, "ref"), a.calls)


if __name__ == "__main__":
    main()
