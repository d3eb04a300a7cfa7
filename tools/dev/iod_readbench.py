"""Measure a real iod's READ throughput over loopback (a benchmark, not a test).

Run it as root in a throwaway network namespace:

    unshare --net python3 -m tools.dev.iod_readbench [--mib 64] [--seconds 5]

It starts an iod process (python3 -m iod.cli) on a temporary data directory,
writes a file of --mib MiB into it over TCP, then for each case keeps a
window of requests outstanding for --seconds and reports MB/s of file data
delivered and the iod's CPU time (user + system, from /proc) per request:

- relay: 1 MiB READs over TCP with the data in the REPLY (what the metaserver
  does for TCP clients);
- pnfs: NFSv4.1 READs (SEQUENCE, PUTFH, READ) of --ds-kib KiB from the iod's
  pNFS data server (--ds-port), one session, 4 slots in flight: what a pNFS
  client's reads cost the iod (the data goes out with sendfile); and unstable
  WRITEs both ways (1 MiB relayed frames, --ds-kib NFSv4.1 to the data server).
  A Linux client sends the layout's stripe unit per call (nfspd's default
  64 KiB), so `--ds-kib 64 --no-relay --no-spoofed` shows the per-call cost;
- spoofed: 32 KiB (or 8 KiB) READs over UDP whose replies the iod sends from
  its raw socket, at loopback MTUs of 1500, 9000 and 65536, received by this
  process's UDP socket as a client would.

Loopback charges the receiving side's work (reassembly, copies) to the same
two CPUs, so these are lower bounds for what one iod does on a real network.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import click

from common import dsfh, keyfile, nfs4
from common.iodproto import Op
from common.nfs4 import nfs_opnum4 as O
from tools.dev import REPO
from tools.dev.iodclient import IodClient
from tools.dev.nfs4dsclient import (
    ANY_STATEID,
    CRED,
    DsClient,
    call_message,
    op,
    over_tcp,
)
from tools.rpcclient import RpcClient

PORT = 2050
DS_PORT = 2049
HEAD = bytes(120)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay(keys, size, seconds, window=4, count=1 << 20):
    c = IodClient("127.0.0.1", PORT, keys, timeout=30)
    offsets = range(0, size - count + 1, count)
    sent = done = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    while sent < window:
        c.send(Op.READ, ino=1, seed=1, offset=offsets[sent % len(offsets)], count=count)
        sent += 1
    while True:
        answer = c.receive()
        assert answer.status == 0 and len(answer.data) == count
        done += 1
        if time.monotonic() >= deadline:
            break
        c.send(Op.READ, ino=1, seed=1, offset=offsets[sent % len(offsets)], count=count)
        sent += 1
    elapsed = time.monotonic() - start
    for _ in range(sent - done):
        c.receive()
    c.close()
    return done, done * count, elapsed


def _recv_exactly(sock, view):
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("data server closed the connection")
        got += n


def relay_write(keys, size, seconds, window=4, count=1 << 20):
    """1 MiB unstable WRITE frames over TCP, as the metaserver relays them."""
    c = IodClient("127.0.0.1", PORT, keys, timeout=30)
    block = os.urandom(count)
    offsets = range(0, size - count + 1, count)
    sent = done = 0
    start = time.monotonic()
    deadline = start + seconds
    for _ in range(window):
        c.send(Op.WRITE, ino=2, seed=1, offset=offsets[sent % len(offsets)], data=block,
               stable=False)
        sent += 1
    while True:
        assert c.receive().status == 0
        done += 1
        if time.monotonic() >= deadline:
            break
        c.send(Op.WRITE, ino=2, seed=1, offset=offsets[sent % len(offsets)], data=block,
               stable=False)
        sent += 1
    elapsed = time.monotonic() - start
    for _ in range(sent - done):
        c.receive()
    c.close()
    return done, done * count, elapsed


def pnfs(keys, size, seconds, window=4, count=1 << 20, write=False):
    """READs from the data server; the replies are checked (RPC and COMPOUND
    status, length) and their data received into one buffer, as a kernel
    client would, without decoding it into objects."""
    conn = RpcClient("127.0.0.1", DS_PORT, "tcp", timeout=30, cred=CRED)
    c = DsClient(over_tcp(conn)).setup()
    fh = dsfh.mint(keys, ino=3 if write else 1, seed=1, layout_gen=1,
                   minted=int(time.time() * 1000), client="127.0.0.1", write=write, secure=False)
    block = os.urandom(count)
    sock = conn.sock
    sock.settimeout(None)
    offsets = range(0, size - count + 1, count)
    mark = bytearray(4)
    buf = bytearray(count + 4096)
    sent = done = 0

    def ask(slot):
        nonlocal sent
        offset = offsets[sent % len(offsets)]
        io = (op(O.OP_WRITE, nfs4.WRITE4args(ANY_STATEID, offset, nfs4.stable_how4.UNSTABLE4,
                                             block)) if write else
              op(O.OP_READ, nfs4.READ4args(ANY_STATEID, offset, count)))
        args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, [
            c.sequence_op(slot=slot), op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), io]))
        xid, message = call_message(args)
        sock.sendall(struct.pack(">I", 0x80000000 | len(message)) + message)
        sent += 1
        return xid
    slot_of = {ask(slot): slot for slot in range(window)}
    start = time.monotonic()
    deadline = start + seconds
    while True:
        _recv_exactly(sock, memoryview(mark))
        length = int.from_bytes(mark, "big") & 0x7FFFFFFF
        view = memoryview(buf)[:length]
        _recv_exactly(sock, view)
        xid, compound_status = struct.unpack_from(">I20xI", view)
        assert compound_status == 0 and (write or length >= count), (compound_status, length)
        done += 1
        slot = slot_of.pop(xid)
        if time.monotonic() >= deadline:
            break
        slot_of[ask(slot)] = slot
    elapsed = time.monotonic() - start
    for _ in range(sent - done):
        _recv_exactly(sock, memoryview(mark))
        _recv_exactly(sock, memoryview(buf)[:int.from_bytes(mark, "big") & 0x7FFFFFFF])
    conn.close()
    return done, done * count, elapsed


def spoofed(keys, size, seconds, count, window=16):
    """READs over UDP with this socket as the client; a lost reply (none
    should be, on loopback) is re-asked after 0.5 s, like an NFS client."""
    req = IodClient("127.0.0.1", PORT, keys, "udp")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    client.bind(("127.0.0.1", 0))
    client.settimeout(0.5)
    offsets = range(0, size - count + 1, count)
    n = 0
    lost = 0

    def ask():
        nonlocal n
        req.send(Op.READ, ino=1, seed=1, offset=offsets[n % len(offsets)], count=count,
                 client=client.getsockname(), source=("127.0.0.9", 2049), head=HEAD)
        n += 1
    for _ in range(window):
        ask()
    done = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            data, source = client.recvfrom(65536)
        except TimeoutError:
            lost += 1
            ask()
            continue
        assert len(data) == len(HEAD) + count and source == ("127.0.0.9", 2049)
        done += 1
        ask()
    elapsed = time.monotonic() - start
    req.close()
    client.close()
    return done, done * count, elapsed, lost


@click.command()
@click.option("--mib", default=64, show_default=True, help="Size of the file read.")
@click.option("--seconds", default=5.0, show_default=True, help="Duration of each case.")
@click.option("--threads", default=8, show_default=True, help="The iod's I/O threads.")
@click.option("--spoofed/--no-spoofed", "spoofed_too", default=True, show_default=True,
              help="Also the spoofed UDP cases.")
@click.option("--relay/--no-relay", "relay_too", default=True, show_default=True,
              help="Also the relayed (iod protocol) cases.")
@click.option("--ds-kib", default=1024, show_default=True,
              help="KiB of one data-server READ or WRITE (a Linux client sends the "
                   "layout's stripe unit, nfspd's default 64).")
def main(mib, seconds, threads, spoofed_too, relay_too, ds_kib):
    if os.geteuid() != 0:
        sys.exit("run as root in a namespace of its own: unshare --net python3 -m tools.dev.iod_readbench")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = tempfile.mkdtemp(prefix="iod-readbench-")
    keys = keyfile.generate(os.path.join(work, "key"))
    proc = subprocess.Popen([sys.executable, "-m", "iod.cli", "--data-dir", f"{work}/data",
                             "--key", f"{work}/key", "--listen", "127.0.0.1", "--port", str(PORT),
                             "--ds-port", str(DS_PORT), "--threads", str(threads),
                             "--log-level", "warning"],
                            env=dict(os.environ, PYTHONPATH=REPO))
    try:
        for _ in range(200):
            try:
                c = IodClient("127.0.0.1", PORT, keys, timeout=30)
                break
            except OSError:
                time.sleep(0.05)
        size = mib << 20
        block = os.urandom(1 << 20)
        for off in range(0, size, 1 << 20):
            c.send(Op.WRITE, ino=1, seed=1, offset=off, data=block, stable=False)
            assert c.receive().status == 0
        c.close()
        print(f"iod pid {proc.pid}, {threads} I/O threads, {mib} MiB file (in the page cache)")
        ds_count = ds_kib << 10
        for write in (False, True):
            if relay_too:
                cpu = cpu_seconds(proc.pid)
                n, nbytes, elapsed = (relay_write if write else relay)(keys, size, seconds)
                used = cpu_seconds(proc.pid) - cpu
                what = "unstable WRITEs" if write else "READs"
                print(f"relay   1 MiB {what} over TCP, 4 in flight: "
                      f"{nbytes / elapsed / 1e6:7.1f} MB/s, iod CPU {used / n * 1e6:.0f} us "
                      f"per call ({n} calls)")
            cpu = cpu_seconds(proc.pid)
            n, nbytes, elapsed = pnfs(keys, size, seconds, count=ds_count, write=write)
            used = cpu_seconds(proc.pid) - cpu
            what = "unstable NFSv4.1 WRITEs to" if write else "NFSv4.1 READs from"
            print(f"pnfs    {ds_kib} KiB {what} the data server, 4 slots in flight: "
                  f"{nbytes / elapsed / 1e6:7.1f} MB/s, iod CPU {used / n * 1e6:.0f} us per call "
                  f"({n} calls)")
        if not spoofed_too:
            return
        for mtu in (1500, 9000, 65536):
            subprocess.run(["ip", "link", "set", "lo", "mtu", str(mtu)], check=True)
            for count in (8192, 32768):
                cpu = cpu_seconds(proc.pid)
                n, nbytes, elapsed, lost = spoofed(keys, size, seconds, count)
                used = cpu_seconds(proc.pid) - cpu
                print(f"spoofed {count // 1024:2d} KiB READs over UDP, MTU {mtu:5d}, 16 in flight: "
                      f"{nbytes / elapsed / 1e6:7.1f} MB/s, iod CPU {used / n * 1e6:.0f} us per "
                      f"READ ({n} READs, {lost} re-asked)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
