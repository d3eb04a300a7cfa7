"""The pnfs benchmark's load generator: one process per client, streaming
1 MiB READs or WRITEs over TCP with several in flight, in one of three ways:

- ``pnfs``: NFSv4.1 to the metaserver (EXCHANGE_ID, CREATE_SESSION, OPEN,
  LAYOUTGET of a files layout, GETDEVICEINFO), then straight to the data
  servers (EXCHANGE_ID with EXCHGID4_FLAG_USE_PNFS_DS and a session each, as
  Linux does), each call cut where the layout's stripe ends (Linux's
  filelayout_pg_test does the same: one data server per RPC), COMMIT to every
  data server, LAYOUTCOMMIT to the metaserver;
- ``v41``: NFSv4.1 READ/WRITE/COMMIT to the server itself (a server without
  layouts: nfs-ganesha's VFS back end);
- ``v3``: NFSv3 READ/WRITE/COMMIT over TCP (NFSP's relay).

The same bytes are in flight per client whatever the way (``--inflight-mib``),
spread over its connections (one per data server with pNFS), each connection
in a thread of its own with preallocated buffers (replies land in one
bytearray by recv_into; a WRITE's data is sent from a view of the pattern,
never copied). File contents are tools/dev/loadgen's Pattern: every READ
reply is checked against it at its first, middle and last 64 bytes, so data
from the wrong offset, the wrong file or a hole is caught without comparing
every byte; every RPC, COMPOUND and NFS status is checked, WRITE counts too,
and COMMIT's verifier against the WRITEs' (per data server).

    python3 -m tools.dev.benchmarks.pnfsload MODE SERVER EXPORT NAME [options]

prints ``ready`` once connected and set up (not measured), then obeys lines
on stdin: ``write SECONDS`` (WRITE the file, then again from the start,
until SECONDS have passed and the file was written whole at least once; then
COMMIT), ``read SECONDS`` (READ it, round and round, for SECONDS), ``quit``;
each answered by one JSON line (bytes, wall-clock start and end, this
process's CPU seconds). The request and reply layouts are written here by
hand with struct (the codecs of common/ cost more CPU than the I/O they
describe); tests/test_pnfs_bench.py checks them against common/nfs4.py's
and common/nfs3.py's encoders.
"""

import json
import os
import resource
import select
import struct
import sys
import threading
import time

import click

from common import nfs3, nfs4, rpc, striping
from common.nfs4 import nfs_opnum4 as O
from common.portmap import parse_uaddr
from common.xdr import decode
from tools.dev.loadgen import PATTERN, PATTERN_PERIOD
from tools.dev.nfs4client import Nfs4Client, Nfs4Failed
from tools.dev.nfs4dsclient import DsClient, over_tcp
from tools.dev.nfsclient import connect as nfs3_connect
from tools.rpcclient import RpcClient

IO = 1 << 20
REPLY_ROOM = IO + 8192         # the largest reply: a 1 MiB READ and its headers
SAMPLE = 64                    # bytes of a READ reply compared at each of 3 places
UNSTABLE = 0
GRACE_WAIT = 120.0           # seconds; NFSP's grace period is its 90 s lease
RENEW_EVERY = 10.0           # seconds; leases are 60 s or more

_U32 = struct.Struct(">I")
_RM_XID = struct.Struct(">II")
_V4_HEAD = struct.Struct(">III" "I16sIIII")    # COMPOUND4args head, SEQUENCE4args
_V4_READ = struct.Struct(">II12sQI")
_V4_WRITE = struct.Struct(">II12sQII")
_V4_COMMIT = struct.Struct(">IQI")
_V3_READ = struct.Struct(">QI")
_V3_WRITE = struct.Struct(">QIII")
_V3_COMMIT = struct.Struct(">QI")
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")


class IoError(Exception):
    """A reply that failed a check: the run stops and reports it."""


def _opaque(data):
    return _U32.pack(len(data)) + data + _PADS[len(data) & 3]


class Caller:
    """RPC calls of one program over one TCP connection: each procedure's call
    header (AUTH_SYS credential included) is encoded once; only the xid changes."""

    def __init__(self, prog, vers, cred, procs):
        self.tails = {proc: rpc.encode_call(0, prog, vers, proc, b"", cred)[4:] for proc in procs}
        self.xid = int.from_bytes(os.urandom(4), "big")

    def head(self, proc, body_len):
        """(xid, record mark + RPC call header) for a body of ``body_len`` bytes."""
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        tail = self.tails[proc]
        return self.xid, _RM_XID.pack(0x80000000 | (4 + len(tail) + body_len), self.xid) + tail


def rpc_body_offset(buf, n):
    """(xid, offset of the result) of an accepted, successful RPC reply."""
    if n < 24:
        raise IoError(f"RPC reply of {n} bytes")
    xid, mtype, stat, _flavor, vlen = struct.unpack_from(">IIIII", buf, 0)
    if mtype != 1 or stat != 0:
        raise IoError(f"RPC reply xid {xid:#x}: type {mtype}, reply_stat {stat}")
    off = 20 + ((vlen + 3) & ~3)
    accept = _U32.unpack_from(buf, off)[0]
    if accept:
        raise IoError(f"RPC reply xid {xid:#x}: accept_stat {accept}")
    return xid, off + 4


# -- NFSv4.1 (RFC 8881): SEQUENCE, PUTFH and READ / WRITE / COMMIT ------------------


class V41:
    """Calls on one session (slots 0..window-1) for one file handle."""

    def __init__(self, cred, sessionid, fh, stateid, window, seqids=None):
        self.caller = Caller(nfs4.NFS4_PROGRAM, 4, cred, [1])
        self.sessionid, self.window = sessionid, window
        self.putfh = _U32.pack(O.OP_PUTFH) + _opaque(fh)
        self.stateid = (stateid.seqid, stateid.other)
        self.seqids = seqids if seqids is not None else [0] * window

    def _head(self, slot):
        self.seqids[slot] += 1
        return _V4_HEAD.pack(0, 1, 3, O.OP_SEQUENCE, self.sessionid, self.seqids[slot], slot,
                             self.window - 1, 0) + self.putfh

    def read(self, slot, offset, count):
        body = self._head(slot) + _V4_READ.pack(O.OP_READ, *self.stateid, offset, count)
        xid, head = self.caller.head(1, len(body))
        return xid, [head + body]

    def write(self, slot, offset, data):
        n = len(data)
        body = self._head(slot) + _V4_WRITE.pack(O.OP_WRITE, *self.stateid, offset, UNSTABLE, n)
        pad = _PADS[n & 3]
        xid, head = self.caller.head(1, len(body) + n + len(pad))
        return xid, [head + body, data, pad]

    def sequence(self, slot):
        """SEQUENCE alone: what renews a lease (RFC 8881 8.3)."""
        self.seqids[slot] += 1
        body = _V4_HEAD.pack(0, 1, 1, O.OP_SEQUENCE, self.sessionid, self.seqids[slot], slot,
                             self.window - 1, 0)
        xid, head = self.caller.head(1, len(body))
        return xid, [head + body]

    def commit(self, slot):
        body = self._head(slot) + _V4_COMMIT.pack(O.OP_COMMIT, 0, 0)
        xid, head = self.caller.head(1, len(body))
        return xid, [head + body]

    @staticmethod
    def result(buf, n):
        """(xid, offset of the last operation's resok): NFS4_OK throughout."""
        xid, p = rpc_body_offset(buf, n)
        status, taglen = struct.unpack_from(">II", buf, p)
        if status:
            res = nfs4.decode_compound_res(bytes(buf[p:n]))
            last = res.resarray[-1].disc.name if res.resarray else "-"
            raise IoError(f"COMPOUND xid {xid:#x}: {nfs4.nfsstat4(status).name} at {last}")
        p += 8 + ((taglen + 3) & ~3) + 4          # status, tag, numres
        p += 8 + 16 + 20                          # SEQUENCE4resok
        p += 8                                    # PUTFH
        return xid, p + 8                         # the last op's opnum and status

    def read_data(self, buf, n):
        """(xid, offset of the data, its length)."""
        xid, p = self.result(buf, n)
        _eof, count = struct.unpack_from(">II", buf, p)
        return xid, p + 8, count

    def write_result(self, buf, n):
        """(xid, count, write verifier)."""
        xid, p = self.result(buf, n)
        count, _committed = struct.unpack_from(">II", buf, p)
        return xid, count, bytes(buf[p + 8:p + 16])

    def commit_verifier(self, buf, n):
        xid, p = self.result(buf, n)
        return xid, bytes(buf[p:p + 8])


# -- NFSv3 (RFC 1813) ------------------------------------------------------------


class V3:
    """READ, WRITE and COMMIT of one file over one TCP connection."""

    def __init__(self, cred, fh, window):
        P = nfs3.NFSPROC3
        self.caller = Caller(nfs3.NFS_PROGRAM, 3, cred, [P.READ, P.WRITE, P.COMMIT])
        self.fh = _opaque(fh)
        self.window = window

    def _call(self, proc, body, parts=()):
        xid, head = self.caller.head(proc, len(body) + sum(len(p) for p in parts))
        return xid, [head + body, *parts]

    def read(self, slot, offset, count):
        return self._call(nfs3.NFSPROC3.READ, self.fh + _V3_READ.pack(offset, count))

    def write(self, slot, offset, data):
        n = len(data)
        return self._call(nfs3.NFSPROC3.WRITE, self.fh + _V3_WRITE.pack(offset, n, UNSTABLE, n),
                          (data, _PADS[n & 3]))

    def commit(self, slot):
        return self._call(nfs3.NFSPROC3.COMMIT, self.fh + _V3_COMMIT.pack(0, 0))

    @staticmethod
    def _status(buf, n, what):
        xid, p = rpc_body_offset(buf, n)
        status = _U32.unpack_from(buf, p)[0]
        if status:
            raise IoError(f"{what} xid {xid:#x}: {nfs3.nfsstat3(status).name}")
        return xid, p + 4

    @staticmethod
    def _skip_wcc(buf, p):
        if _U32.unpack_from(buf, p)[0]:
            p += 24                               # wcc_attr
        p += 4
        if _U32.unpack_from(buf, p)[0]:
            p += 84                               # fattr3
        return p + 4

    def read_data(self, buf, n):
        xid, p = self._status(buf, n, "READ")
        if _U32.unpack_from(buf, p)[0]:
            p += 84
        count, _eof, length = struct.unpack_from(">III", buf, p + 4)
        if length != count:
            raise IoError(f"READ xid {xid:#x}: count {count}, {length} bytes")
        return xid, p + 16, count

    def write_result(self, buf, n):
        xid, p = self._status(buf, n, "WRITE")
        p = self._skip_wcc(buf, p)
        count, _committed = struct.unpack_from(">II", buf, p)
        return xid, count, bytes(buf[p + 8:p + 16])

    def commit_verifier(self, buf, n):
        xid, p = self._status(buf, n, "COMMIT")
        p = self._skip_wcc(buf, p)
        return xid, bytes(buf[p:p + 8])


# -- one connection's calls -------------------------------------------------------


def send_parts(sock, parts):
    sent = sock.sendmsg(parts)
    total = sum(len(p) for p in parts)
    if sent < total:        # a blocking socket rarely stops short; send the rest
        sock.sendall(b"".join(bytes(p) for p in parts)[sent:])


class Stream:
    """The calls of one connection: ``jobs`` [(offset, length), ...] done in
    order, round and round, ``window`` in flight (slot numbers 0..window-1
    for NFSv4.1's session)."""

    def __init__(self, sock, proto, jobs, shift):
        self.sock, self.proto, self.jobs, self.shift = sock, proto, jobs, shift
        self.window = proto.window
        self.buf = bytearray(REPLY_ROOM)
        self.view = memoryview(self.buf)
        self.mark = memoryview(bytearray(4))
        self.pattern = memoryview(PATTERN._buf)
        self.bytes = 0
        self.verifiers = set()
        self.error = None

    def _recv_into(self, view, n):
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:n])
            if not k:
                raise IoError("the server closed the connection")
            got += k

    def receive(self):
        """The next reply, whole, at the start of self.buf; its length."""
        total = 0
        while True:
            self._recv_into(self.mark, 4)
            mark = int.from_bytes(self.mark, "big")
            n = mark & 0x7FFFFFFF
            if total + n > len(self.buf):
                raise IoError(f"a reply of over {total + n} bytes")
            self._recv_into(self.view[total:], n)
            total += n
            if mark & 0x80000000:
                return total

    def data(self, offset, length):
        start = (offset + self.shift) % PATTERN_PERIOD
        return self.pattern[start:start + length]

    def _check_read(self, offset, length, at, count):
        if count != length:
            raise IoError(f"READ at {offset}: {count} bytes of {length}")
        buf, want = self.buf, PATTERN._buf
        start = (offset + self.shift) % PATTERN_PERIOD
        for rel in (0, (count // 2) & ~63, count - SAMPLE):
            if buf[at + rel:at + rel + SAMPLE] != want[start + rel:start + rel + SAMPLE]:
                raise IoError(f"READ at {offset}: bytes {rel}.. differ from the pattern")

    def run(self, kind, until, whole_pass):
        """Calls until monotonic ``until`` (and, with ``whole_pass``, until
        every job was done once); errors are kept in self.error."""
        try:
            self._run(kind, until, whole_pass)
        except Exception as e:      # reported by the process, not lost in a thread
            self.error = f"{type(e).__name__}: {e}"

    def _run(self, kind, until, whole_pass):
        proto, jobs, sock = self.proto, self.jobs, self.sock
        free = list(range(self.window))
        pending = {}
        i = passes = 0
        stopping = False
        while True:
            while free and not stopping:
                if i == len(jobs):
                    i, passes = 0, passes + 1
                if (passes or not whole_pass) and time.monotonic() >= until:
                    stopping = True
                    break
                offset, length = jobs[i]
                i += 1
                slot = free.pop()
                if kind == "write":
                    xid, parts = proto.write(slot, offset, self.data(offset, length))
                else:
                    xid, parts = proto.read(slot, offset, length)
                send_parts(sock, parts)
                pending[xid] = (slot, offset, length)
            if not pending:
                return
            n = self.receive()
            if kind == "write":
                xid, count, verf = proto.write_result(self.buf, n)
            else:
                xid, at, count = proto.read_data(self.buf, n)
            try:
                slot, offset, length = pending.pop(xid)
            except KeyError:
                raise IoError(f"a reply to xid {xid:#x}, which no call has") from None
            if kind == "write":
                if count != length:
                    raise IoError(f"WRITE at {offset}: {count} of {length} bytes")
                self.verifiers.add(verf)
            else:
                self._check_read(offset, length, at, count)
            self.bytes += length
            free.append(slot)

    def renew(self):
        """A SEQUENCE alone (NFSv4.1), between phases."""
        xid, parts = self.proto.sequence(0)
        send_parts(self.sock, parts)
        got, p = rpc_body_offset(self.buf, self.receive())
        status = _U32.unpack_from(self.buf, p)[0]
        if got != xid or status:
            raise IoError(f"SEQUENCE: xid {got:#x}, status {status}")

    def commit(self):
        """COMMIT; IoError unless its verifier is every WRITE's."""
        xid, parts = self.proto.commit(0)
        send_parts(self.sock, parts)
        n = self.receive()
        got, verf = self.proto.commit_verifier(self.buf, n)
        if got != xid:
            raise IoError(f"COMMIT: a reply to xid {got:#x}")
        if self.verifiers - {verf}:
            raise IoError("COMMIT's verifier is not the WRITEs': the server restarted")
        self.verifiers.clear()


# -- the three ways to a file -------------------------------------------------------


def windows(inflight, sizes):
    """Calls in flight on each of the connections, so that ``inflight`` bytes
    are in flight in all (at least one call each)."""
    return [max(1, inflight // (len(sizes) * s)) for s in sizes]


class Client:
    """Setup (not measured) and the streams of one client of one file."""

    def __init__(self, mode, server, export, name, file_size, inflight, slots):
        self.mode, self.name, self.size = mode, name, file_size
        self.shift = PATTERN.shift(name)
        self.cred = RpcClient.default_cred(0, 0, [0])
        self.layout = None
        getattr(self, "_setup_" + mode)(server, export, inflight, slots)

    def _v41_session(self, server, export, slots):
        c = Nfs4Client(server, timeout=30)
        c.mount(maxrequestsize=REPLY_ROOM, maxresponsesize=REPLY_ROOM, maxrequests=slots)
        root = c.lookup_path(export)
        deadline = time.monotonic() + GRACE_WAIT
        while True:
            try:
                self.stateid, self.fh = c.open(root, self.name.encode())
                break
            except Nfs4Failed as e:   # a server restarted on old state: its grace period
                if e.status != nfs4.nfsstat4.NFS4ERR_GRACE or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self.mds = c
        return c

    def _setup_v41(self, server, export, inflight, slots):
        c = self._v41_session(server, export, slots)
        granted = c.session.csr_fore_chan_attrs.ca_maxrequests
        window = min(granted, windows(inflight, [IO])[0])
        seqids = [0] * window
        seqids[0] = c.seqid
        proto = V41(self.cred, c.sessionid, self.fh, self.stateid, window, seqids)
        jobs = [(off, min(IO, self.size - off)) for off in range(0, self.size, IO)]
        self.streams = [Stream(c.rpc.sock, proto, jobs, self.shift)]

    def _setup_pnfs(self, server, export, inflight, slots):
        c = self._v41_session(server, export, slots)
        lg = c.layoutget(self.fh, self.stateid)
        self.layout_stateid = lg.logr_stateid
        content = lg.logr_layout[0].lo_content
        layout = decode(nfs4.nfsv4_1_file_layout4, content.loc_body)
        unit = layout.nfl_util & nfs4.NFL4_UFLG_STRIPE_UNIT_SIZE_MASK
        device = decode(nfs4.nfsv4_1_file_layout_ds_addr4,
                        c.getdeviceinfo(layout.nfl_deviceid).da_addr_body)
        indices = device.nflda_stripe_indices
        # RFC 8881 13.4.1: the call for ``offset`` goes to data server
        # stripe_indices[(offset / unit + first_stripe_index) mod n]; the
        # handle is nfl_fh_list[0] for all of them (one entry: not per server).
        fh = layout.nfl_fh_list[0]
        self.ds_fh, self.unit = fh, unit
        addresses = [parse_uaddr(entry[0].na_r_addr) for entry in device.nflda_multipath_ds_list]
        io = min(IO, unit)
        jobs = {k: [] for k in range(len(addresses))}
        for off in range(0, self.size, IO):
            for piece in striping.split(off, min(IO, self.size - off), unit,
                                        layout.nfl_first_stripe_index, len(indices)):
                for sub in range(piece.offset, piece.offset + piece.length, io):
                    jobs[indices[piece.iod]].append(
                        (sub, min(io, piece.offset + piece.length - sub)))
        used = [k for k in jobs if jobs[k]]
        self.streams, self.ds = [], []
        for k, window in zip(used, windows(inflight, [io] * len(used))):
            conn = RpcClient(*addresses[k], "tcp", timeout=30, cred=self.cred,
                             reserved_port=True)
            ds = DsClient(over_tcp(conn), fore=nfs4.channel_attrs4(
                0, REPLY_ROOM, REPLY_ROOM, 8192, 8, slots, []))
            ds.exchange_id()
            granted = ds.create_session().csr_fore_chan_attrs.ca_maxrequests
            window = min(window, granted)
            proto = V41(self.cred, ds.sessionid, fh, self.stateid, window)
            self.ds.append((conn, ds))
            self.streams.append(Stream(conn.sock, proto, jobs[k], self.shift))
        self.layout = {"stripe_unit": unit, "data_servers": len(addresses),
                       "first_stripe_index": layout.nfl_first_stripe_index,
                       "windows": [s.window for s in self.streams]}

    def _setup_v3(self, server, export, inflight, slots):
        client, root = nfs3_connect(server, export, vers=3, transport="tcp", timeout=30)
        self.fh = client.create(root, self.name.encode())
        proto = V3(client.rpc.cred, self.fh, windows(inflight, [IO])[0])
        jobs = [(off, min(IO, self.size - off)) for off in range(0, self.size, IO)]
        self.streams = [Stream(client.rpc.sock, proto, jobs, self.shift)]
        self.v3 = client

    def renew(self):
        """Keep the leases (metaserver's and data servers') while idle."""
        if self.mode == "v3":
            return
        if self.mode == "pnfs":
            self.mds.ok()
        for s in self.streams:
            s.renew()
        if self.mode == "v41":
            self.mds.seqid = self.streams[0].proto.seqids[0]

    def phase(self, kind, seconds):
        """One measured phase: its report (a dict)."""
        for s in self.streams:
            s.bytes = 0
            s.sock.settimeout(None)
        ru0, t0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), time.time()
        until = t0 + seconds
        threads = [threading.Thread(target=s.run, args=(kind, until, kind == "write"))
                   for s in self.streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [s.error for s in self.streams if s.error]
        if kind == "write" and not errors:
            try:
                for s in self.streams:
                    s.commit()
                if self.mode == "pnfs":
                    self.mds.layoutcommit(self.fh, self.layout_stateid, self.size - 1)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        if self.mode == "v41":      # slot 0 of the session is shared with the setup calls
            self.mds.seqid = self.streams[0].proto.seqids[0]
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        moved = sum(s.bytes for s in self.streams)
        return {"kind": kind, "bytes": moved, "start": wall0, "end": wall0 + elapsed,
                "seconds": round(elapsed, 4), "MBps": round(moved / elapsed / 1e6, 1),
                "cpu_s": round(cpu, 4), "errors": errors}


@click.command()
@click.argument("mode", type=click.Choice(["pnfs", "v41", "v3"]))
@click.argument("server")
@click.argument("export")
@click.argument("name")
@click.option("--file-mib", default=32, show_default=True, type=click.IntRange(1))
@click.option("--inflight-mib", default=8, show_default=True, type=click.IntRange(1),
              help="Bytes in flight per client, in MiB, over all its connections.")
@click.option("--slots", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="Session slots asked of each NFSv4.1 server.")
def main(mode, server, export, name, file_mib, inflight_mib, slots):
    """One benchmark client (see the module's docstring)."""
    client = Client(mode, server, export, name, file_mib << 20, inflight_mib << 20, slots)
    print("ready " + json.dumps({"layout": client.layout}), flush=True)
    while True:
        # Idle while the other servers are measured: the leases are renewed.
        if not select.select([sys.stdin], [], [], RENEW_EVERY)[0]:
            client.renew()
            continue
        words = sys.stdin.readline().split()
        if not words or words[0] == "quit":
            break
        print(json.dumps(client.phase(words[0], float(words[1]))), flush=True)


if __name__ == "__main__":
    main()
