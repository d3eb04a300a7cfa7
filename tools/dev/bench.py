"""Benchmarks (figures, not tests). `python3 -m tools.dev.bench meta --help`."""

import json
import multiprocessing
import os
import struct
import time

import click

from common import nfs3, rpc
from common.nfs3 import NFSPROC3
from common.xdr import Unpacker, XdrError, encode
from tools.dev import nfsclient
from tools.rpcclient import RpcClient

_xid = struct.Struct(">I")


class _Checker:
    """Validates replies: the xid must be one outstanding, the reply an accepted
    SUCCESS whose result decodes and says NFS3_OK. A reply whose bytes after the
    xid equal an earlier valid one decodes identically, so it is not decoded
    again: the load generator must cost less than the server it measures."""

    def __init__(self, res_type):
        self.res_type = res_type
        self.valid = set()

    def check(self, data):
        tail = bytes(data[4:])
        if tail in self.valid:
            return
        reply = rpc.decode_reply(data)
        if not reply.accepted or reply.stat != rpc.accept_stat.SUCCESS:
            raise RuntimeError(f"benchmark call refused: {reply!r}")
        u = Unpacker(reply.body)
        res = self.res_type.unpack(u)
        u.done()
        if res.disc != nfs3.nfsstat3.NFS3_OK:
            raise RuntimeError(f"benchmark call failed: {res.disc.name}")
        if len(self.valid) < 1024:
            self.valid.add(tail)


TRANSPORTS = ("udp", "tcp")


def _connect(proto, host, port):
    return RpcClient(host, port, proto, timeout=2.0)


def _rate(conn, template, res_type, seconds, window, first_xid=1):
    """Send calls (``template`` with its xid patched) with up to ``window``
    outstanding for ``seconds``; every reply is validated. Returns (ops, elapsed)."""
    call = bytearray(template)
    checker = _Checker(res_type)
    xid = first_xid
    outstanding = set()
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    while True:
        if len(outstanding) < window and time.monotonic() < deadline:
            while len(outstanding) < window:
                _xid.pack_into(call, 0, xid)
                conn.send(call)
                outstanding.add(xid)
                xid = (xid + 1) & 0xFFFFFFFF
        if not outstanding:
            break
        data = conn.receive()
        rxid = _xid.unpack_from(data)[0]
        if rxid not in outstanding:
            continue  # a late duplicate
        outstanding.discard(rxid)
        checker.check(data)
        done += 1
    return done, time.monotonic() - start


def _worker(proto, host, port, template, res_type, seconds, window, first_xid, barrier, out):
    conn = _connect(proto, host, port)
    barrier.wait()
    try:
        out.put(_rate(conn, template, res_type, seconds, window, first_xid))
    except Exception as e:  # reported by the parent, which exits non-zero
        out.put(e)
    finally:
        conn.close()


def _run(proto, host, port, template, res_type, seconds, window, procs):
    """(ops, elapsed) over ``procs`` client processes (1: this one)."""
    if procs == 1:
        conn = _connect(proto, host, port)
        try:
            return _rate(conn, template, res_type, seconds, window)
        finally:
            conn.close()
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(procs + 1)
    out = mp.Queue()
    workers = [mp.Process(target=_worker, daemon=True,
                          args=(proto, host, port, template, res_type, seconds, window,
                                1 + i * (1 << 28), barrier, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.monotonic()
    results = [out.get(timeout=seconds + 30) for _ in workers]
    elapsed = time.monotonic() - start
    for w in workers:
        w.join()
    for r in results:
        if isinstance(r, Exception):
            raise click.ClickException(f"client process failed: {r}")
    return sum(r[0] for r in results), elapsed


@click.group()
def main():
    """NFSP benchmarks: each prints its figures as JSON."""


_OPS = ("NULL", "GETATTR", "LOOKUP", "ACCESS")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2049, show_default=True)
@click.option("--export", required=True, help="Export path to mount.")
@click.option("--seconds", default=5.0, show_default=True)
@click.option("--op", "ops", multiple=True, type=click.Choice(_OPS), default=("GETATTR", "LOOKUP"),
              show_default=True, help="Procedures to measure (repeatable).")
@click.option("--window", "windows", multiple=True, type=int, default=(1, 16), show_default=True,
              help="Requests outstanding at once per client process (repeatable).")
@click.option("--proto", type=click.Choice(TRANSPORTS), default="udp",
              show_default=True)
@click.option("--procs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Client processes sending at once (so that the client is not the limit).")
@click.option("--server-pid", type=int, default=None,
              help="nfspd's pid, to report its CPU time per call (the figure that does not "
                   "depend on how much CPU the client takes: ops/s on one core = 1e6 / it).")
def meta(host, port, export, seconds, ops, windows, proto, procs, server_pid):
    """NULL, GETATTR, LOOKUP and ACCESS rates of one export, over UDP or TCP."""
    c, root = nfsclient.connect(host, export, port=port)
    try:
        c.lookup(root, b"bench-file")
    except nfsclient.NfsError:
        c.create(root, b"bench-file")
    cred = c.rpc.cred
    calls = {
        "NULL": (NFSPROC3.NULL, b"", _NullRes),
        "GETATTR": (NFSPROC3.GETATTR, encode(nfs3.GETATTR3args, nfs3.GETATTR3args(root)),
                    nfs3.GETATTR3res),
        "LOOKUP": (NFSPROC3.LOOKUP, encode(nfs3.LOOKUP3args, nfs3.LOOKUP3args(
            nfs3.diropargs3(root, b"bench-file"))), nfs3.LOOKUP3res),
        "ACCESS": (NFSPROC3.ACCESS, encode(nfs3.ACCESS3args, nfs3.ACCESS3args(root, 0x3F)),
                   nfs3.ACCESS3res),
    }
    for name in ops:
        proc, args, res_type = calls[name]
        template = rpc.encode_call(0, nfs3.NFS_PROGRAM, 3, proc, args, cred)
        for window in windows:
            user0, sys0 = _proc_cpu(server_pid)
            try:
                n, elapsed = _run(proto, host, port, template, res_type, seconds, window, procs)
            except (OSError, RuntimeError, XdrError) as e:
                raise click.ClickException(f"{name}: {e}")
            user1, sys1 = _proc_cpu(server_pid)
            row = {"op": name, "proto": proto, "window": window, "procs": procs, "ops": n,
                   "seconds": round(elapsed, 3), "ops_per_s": round(n / elapsed)}
            if server_pid and n:
                cpu = user1 - user0 + sys1 - sys0
                row["server_cpu_us_per_op"] = round(cpu / n * 1e6, 1)
                row["server_sys_us_per_op"] = round((sys1 - sys0) / n * 1e6, 1)
                row["server_cpu_share"] = round(cpu / elapsed, 2)
            click.echo(json.dumps(row))


class _NullRes:
    """NULL's result is void: a valid reply has an empty body."""

    class _Ok:
        disc = nfs3.nfsstat3.NFS3_OK

    @classmethod
    def unpack(cls, u):
        return cls._Ok


def _proc_cpu(pid):
    """(user, system) CPU seconds of a process, all its threads."""
    if not pid:
        return 0.0, 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


if __name__ == "__main__":
    main()
