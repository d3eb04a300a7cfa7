"""Benchmarks (figures, not tests). `python3 -m tools.bench meta --help`."""

import json
import os
import socket
import time

import click

from common import nfs3, rpc
from common.nfs3 import NFSPROC3
from common.xdr import Unpacker, encode
from tools import nfsclient


def _rate(sock, messages, res_type, seconds, window):
    """Send calls with up to ``window`` outstanding for ``seconds``; every
    reply is decoded and must be NFS3_OK. Returns (ops, elapsed)."""
    xid = 1
    outstanding = {}
    done = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    sock.settimeout(2.0)
    while True:
        now = time.monotonic()
        while len(outstanding) < window and now < deadline:
            msg = messages(xid)
            sock.send(msg)
            outstanding[xid] = msg
            xid += 1
        if not outstanding:
            break
        data = sock.recv(65536)
        reply = rpc.decode_reply(data)
        if outstanding.pop(reply.xid, None) is None:
            continue
        res = res_type.unpack(Unpacker(reply.body))
        if res.disc != nfs3.nfsstat3.NFS3_OK:
            raise RuntimeError(f"benchmark call failed: {res.disc.name}")
        done += 1
    return done, time.monotonic() - start


@click.group()
def main():
    """NFSP benchmarks: each prints its figures as JSON."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--export", required=True, help="Export path to mount.")
@click.option("--seconds", default=5.0, show_default=True)
@click.option("--window", "windows", multiple=True, type=int, default=(1, 16), show_default=True,
              help="Requests outstanding at once (repeatable).")
@click.option("--server-pid", type=int, default=None,
              help="nfspd's pid, to report its CPU time per call.")
def meta(host, export, seconds, windows, server_pid):
    """GETATTR and LOOKUP rate of one client over UDP."""
    c, root = nfsclient.connect(host, export)
    try:
        c.lookup(root, b"bench-file")
    except nfsclient.NfsError:
        c.create(root, b"bench-file")
    cred = c.rpc.cred
    getattr_args = encode(nfs3.GETATTR3args, nfs3.GETATTR3args(root))
    lookup_args = encode(nfs3.LOOKUP3args, nfs3.LOOKUP3args(nfs3.diropargs3(root, b"bench-file")))
    results = []
    for name, proc, args, res_type in (("GETATTR", NFSPROC3.GETATTR, getattr_args, nfs3.GETATTR3res),
                                       ("LOOKUP", NFSPROC3.LOOKUP, lookup_args, nfs3.LOOKUP3res)):
        for window in windows:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((host, 2049))
            cpu0 = _proc_cpu(server_pid)
            ops, elapsed = _rate(sock, lambda x: rpc.encode_call(x, 100003, 3, proc, args, cred),
                                 res_type, seconds, window)
            cpu = _proc_cpu(server_pid) - cpu0 if server_pid else None
            sock.close()
            row = {"op": name, "window": window, "ops": ops, "seconds": round(elapsed, 3),
                   "ops_per_s": round(ops / elapsed)}
            if cpu is not None:
                row["server_cpu_us_per_op"] = round(cpu / ops * 1e6, 1)
            results.append(row)
            click.echo(json.dumps(row))


def _proc_cpu(pid):
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


if __name__ == "__main__":
    main()

