"""NFSv3 load generator: N logical clients in one trio process, each with its
own socket (UDP or TCP) and up to ``--window`` calls outstanding.

    python3 -m tools.dev.loadgen --server 10.77.0.1 --export /srv/x --proto udp \\
        --clients 4 --window 8 --workload seqread --duration 20 --json

Every reply is checked: the RPC status, the xid (a reply nobody waits for and
that answers no retransmission is a "stray"), the NFS status, and the result
itself: a READ's data against the pattern the file was written with, its
count and eof flag; a WRITE's count and verifier; READDIRPLUS's entry count.
A failed check is counted, never fatal: the run reports ``errors`` by kind and
exits 1 when there were any.

File contents are a pattern computed from the file's name (`Pattern`), so a
writer and a reader in other processes, or a file written straight into an
exported directory, agree without exchanging anything, and a stripe served
from the wrong offset or the wrong file is caught: the pattern's period is a
prime, which no stripe unit or transfer size divides.

Memory stays bounded however long a run lasts (issue 8's soak runs 64
clients for 10 minutes): latencies go to fixed-size log histograms, per-client
state is proportional to the window, and files are rewritten, not grown.
"""

import collections
import contextlib
import itertools
import json
import math
import os
import random
import resource
import socket
import sys
import time
import zlib

import click
import trio

from common import nfs3, rpc
from common.nfs3 import NFSPROC3, nfsstat3, stable_how
from common.runtime.resvport import bind_reserved
from common.xdr import Unpacker, XdrError, encode
from tools.dev.nfsclient import NfsError, mount_export
from tools.rpcclient import RpcCallError, RpcTimeout

NFS_PROGRAM = nfs3.NFS_PROGRAM
PATTERN_PERIOD = 1048573   # a prime just under 1 MiB
MAX_IO = 1 << 20           # the largest transfer a server may offer that we use
UDP_MAX_IO = 32768         # what Linux uses over UDP whatever the server offers
RTO_MAX = 10.0
TCP_TIMEOUT = 60.0
JUKEBOX_DELAY = 1.0   # Linux waits 5 s; a load generator need not idle that long
JUKEBOX_WAIT = 120.0
WORKLOADS = ("seqread", "seqwrite", "rewrite", "randread", "meta", "mixed", "smallfiles")
META_OPS = ("getattr", "lookup", "create_remove", "readdirplus", "mkdir_rmdir", "rename")
# Timed whole, but made of calls that are counted each on their own (a seek:
# a READ and maybe a WRITE; a file: its CREATE, WRITEs, READs...): not calls
# themselves, or a server's CPU per call would come out a third too low.
SEQUENCES = frozenset({"seek", "file", "create_remove", "mkdir_rmdir"})
DEFAULT_OPS = {
    "meta": "getattr=1,lookup=1,create_remove=1,readdirplus=1",
    "mixed": "read=4,write=2,getattr=2,lookup=2,create_remove=1,readdirplus=1",
}


class Pattern:
    """The contents every loadgen file has: byte ``o`` of file ``name`` is
    ``base[(o + crc32(name)) % PATTERN_PERIOD]`` for a fixed random ``base``."""

    def __init__(self):
        base = random.Random(0x4E465350).randbytes(PATTERN_PERIOD)
        self._buf = base + base[:MAX_IO]

    @staticmethod
    def shift(name):
        return zlib.crc32(name.encode()) % PATTERN_PERIOD

    def data(self, shift, offset, length):
        if length > MAX_IO:
            raise ValueError(f"{length} bytes: at most {MAX_IO} at once")
        start = (offset + shift) % PATTERN_PERIOD
        return self._buf[start:start + length]

    def write_local(self, path, name, size):
        """Write file ``name``'s contents to a local ``path`` (a baseline
        server's exported directory needs no NFS to be filled)."""
        shift = self.shift(name)
        with open(path, "wb") as f:
            for off in range(0, size, MAX_IO):
                f.write(self.data(shift, off, min(MAX_IO, size - off)))


PATTERN = Pattern()


class Histogram:
    """Latencies in log-spaced buckets from 1 us to 100 s, each under 1% wide:
    fixed memory, quantiles within 1%."""

    PER_DECADE = 250
    SIZE = 8 * PER_DECADE + 1

    def __init__(self):
        self.counts = [0] * self.SIZE
        self.n = 0
        self.max = 0.0

    def add(self, seconds):
        us = seconds * 1e6
        i = 0 if us <= 1.0 else min(int(math.log10(us) * self.PER_DECADE) + 1, self.SIZE - 1)
        self.counts[i] += 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other):
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.n += other.n
        self.max = max(self.max, other.max)

    def quantile(self, q):
        """Upper edge of the bucket holding the q-quantile, in seconds."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(10 ** (i / self.PER_DECADE) / 1e6, self.max)
        return self.max


class Stats:
    """One logical client's counters."""

    MAX_SAMPLES = 10  # first error messages kept, for the report

    def __init__(self):
        self.ops = collections.Counter()
        self.latency = collections.defaultdict(Histogram)
        self.bytes_read = 0
        self.bytes_written = 0
        self.entries = 0
        self.errors = collections.Counter()
        self.samples = []
        self.retransmits = 0
        self.duplicates = 0
        self.reconnects = 0
        self.jukebox = 0

    def done(self, op, seconds):
        self.ops[op] += 1
        self.latency[op].add(seconds)

    def error(self, kind, detail=""):
        self.errors[kind] += 1
        if len(self.samples) < self.MAX_SAMPLES:
            self.samples.append(f"{kind}: {detail}" if detail else kind)

    def merge(self, other):
        self.ops.update(other.ops)
        for op, h in other.latency.items():
            self.latency[op].merge(h)
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written
        self.entries += other.entries
        self.errors.update(other.errors)
        self.samples.extend(other.samples[:max(0, self.MAX_SAMPLES - len(self.samples))])
        self.retransmits += other.retransmits
        self.duplicates += other.duplicates
        self.reconnects += other.reconnects
        self.jukebox += other.jukebox


class CallFailed(Exception):
    """A call that got no usable answer or failed its check (already counted)."""


class Channel:
    """One client's RPC connection: calls matched to replies by xid.

    Over UDP a call is retransmitted with the same xid after an adaptive
    timeout (Jacobson/Karels on replies to calls sent once, as Karn says),
    and, as Linux's RPC client does, the number of calls in flight follows a
    congestion window: halved on a timeout, grown by one per window of
    replies. An ICMP "port unreachable" (the server restarting) is only a
    reason to retransmit later.

    Over TCP a call waits TCP_TIMEOUT before it is sent again. A lost
    connection (the server restarted, say) is made again, and the calls it
    carried are sent again with their xids, as Linux does."""

    RECENT = 4096  # xids of finished calls remembered, to tell duplicates from strays

    def __init__(self, connect, transport, cred, stats, window, timeout, retries, max_record):
        self.connect = connect   # async () -> a connected trio socket or SocketStream
        self.sock = None
        self.up = trio.Event()
        self.transport = transport
        self.cred = cred
        self.stats = stats
        self.window = window
        self.cwnd = float(window)
        self.in_flight = 0
        self.lot = trio.lowlevel.ParkingLot()
        self.timeout, self.retries = timeout, retries
        self.srtt = None
        self.rttvar = 0.0
        self.pending = {}
        self.recent = collections.OrderedDict()
        self.xids = itertools.count(random.getrandbits(31))
        self.send_lock = trio.Lock()
        self.max_record = max_record
        self.reader = None
        self.closed = None

    async def open(self):
        self.sock = await self.connect()
        self.reader = rpc.RecordReader(self.max_record)
        self.up.set()

    async def receive_loop(self):
        while True:
            try:
                await self._receive()
            except (OSError, ConnectionError, rpc.RecordTooLarge,
                    trio.BrokenResourceError, trio.ClosedResourceError) as e:
                reason = f"{type(e).__name__}: {e}"
            if self.transport == "udp" or not await self._reconnect():
                self.closed = reason
                self._wake_all()
                return

    async def _receive(self):
        if self.transport == "udp":
            while True:
                try:
                    data = await self.sock.recv(1 << 16)
                except ConnectionRefusedError:
                    continue   # nothing listened when a call arrived: retransmissions tell
                self._deliver(data)
        while True:
            data = await self.sock.receive_some(1 << 18)
            if not data:
                raise ConnectionError("server closed the connection")
            for record in self.reader.feed(data):
                self._deliver(record)

    def _wake_all(self):
        for slot in list(self.pending.values()):
            slot.event.set()

    async def _reconnect(self):
        """Connect again (bounded by TCP_TIMEOUT); the calls waiting are
        woken to be sent again."""
        self.up = trio.Event()
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.sock.aclose()
        self.stats.reconnects += 1
        self._wake_all()
        delay = 0.1
        with trio.move_on_after(TCP_TIMEOUT):
            while True:
                try:
                    await self.open()
                    return True
                except (OSError, trio.TooSlowError):
                    await trio.sleep(delay)
                    delay = min(2 * delay, 2.0)
        return False

    def _deliver(self, data):
        xid = rpc.peek_xid(data)
        slot = self.pending.get(xid)
        if slot is not None and slot.reply is None:
            slot.reply = data
            slot.event.set()
        elif xid in self.recent or slot is not None:
            self.stats.duplicates += 1   # a second answer, to a retransmission
        else:
            self.stats.error("stray reply", f"xid {xid!r} matches no call")

    def _rto(self):
        if self.srtt is None:
            return self.timeout
        return min(RTO_MAX, max(self.timeout / 4, self.srtt + 4 * self.rttvar))

    def _sample(self, rtt):
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(rtt - self.srtt) - self.rttvar) / 4
            self.srtt += (rtt - self.srtt) / 8

    async def _send(self, message):
        """Send; a failure is left to the timers and the receive loop (which
        notices a broken connection and makes it again)."""
        # One sender at a time: a send that waits for room in the socket
        # buffer would make trio refuse a second one on the same fd.
        async with self.send_lock:
            try:
                if self.transport == "udp":
                    await self.sock.send(message)
                else:
                    await self._send_record(rpc.encode_record(message))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _send_record(self, record):
        # A record cut short by a cancellation (the end of the run, a call
        # given up) would swallow the next call's bytes as its own, and
        # every call after it on the connection would go unanswered: a
        # record is sent whole, or the connection is dropped (the receive
        # loop makes it again).
        with trio.CancelScope(shield=True), trio.move_on_after(TCP_TIMEOUT) as bound:
            await self.sock.send_all(record)
        if bound.cancelled_caught:
            await trio.aclose_forcefully(self.sock)

    async def call(self, proc, args):
        """The raw reply to one NFSv3 call (raises CallFailed, counted)."""
        while self.in_flight >= int(self.cwnd):
            await self.lot.park()
        self.in_flight += 1
        xid = next(self.xids) & 0xFFFFFFFF
        message = rpc.encode_call(xid, NFS_PROGRAM, 3, proc, args, self.cred)
        slot = _Slot()
        self.pending[xid] = slot
        try:
            return await self._exchange(message, slot)
        finally:
            del self.pending[xid]
            self.recent[xid] = None
            if len(self.recent) > self.RECENT:
                self.recent.popitem(last=False)
            self.in_flight -= 1
            self.lot.unpark()

    async def _exchange(self, message, slot):
        tries = self.retries + 1
        # Over TCP a call waits behind everything queued on the connection
        # (16 READs of 1 MiB on a shared 100 Mbit/s link take seconds): Linux
        # gives it 60 s before it retransmits.
        rto = self._rto() if self.transport == "udp" else max(TCP_TIMEOUT, self.timeout)
        for attempt in range(tries):
            if attempt:
                self.stats.retransmits += 1
                if self.transport == "udp":
                    self.cwnd = max(1.0, self.cwnd / 2)
                    rto = min(RTO_MAX, rto * 2)
            if not self.up.is_set() and not self.closed:
                with trio.move_on_after(TCP_TIMEOUT):
                    await self.up.wait()
            if self.closed:
                self.stats.error("connection lost", self.closed)
                raise CallFailed(self.closed)
            slot.event = trio.Event()
            sent = time.perf_counter()
            await self._send(message)
            with trio.move_on_after(rto):
                await slot.event.wait()
            if slot.reply is not None:
                if not attempt:
                    self._sample(time.perf_counter() - sent)
                    self.cwnd = min(float(self.window), self.cwnd + 1 / self.cwnd)
                return slot.reply
        self.stats.error("timeout", f"no reply after {tries} tries")
        raise CallFailed("timeout")


class _Slot:
    """Where a call's reply lands."""

    __slots__ = ("reply", "event")

    def __init__(self):
        self.reply = None
        self.event = trio.Event()


class Client:
    """One logical NFS client: a mounted export and a channel to the server."""

    def __init__(self, cid, channel, root, stats, rsize, wsize):
        self.cid = cid
        self.channel = channel
        self.root = root
        self.stats = stats
        self.rsize, self.wsize = rsize, wsize

    async def call(self, op, proc, args_type, args, res_type, ok=(nfsstat3.NFS3_OK,)):
        """Call, check the RPC and NFS status, record the latency; the result
        union (``res.disc``, ``res.body``). NFS3ERR_JUKEBOX ("try again
        later": an iod is down) is retried after JUKEBOX_DELAY, as a hard
        mount does, for up to JUKEBOX_WAIT, and counted apart."""
        started = time.perf_counter()
        message = encode(args_type, args)
        while True:
            res = await self._call_once(op, proc, message, res_type)
            if res.disc != nfsstat3.NFS3ERR_JUKEBOX or res.disc in ok \
                    or time.perf_counter() - started > JUKEBOX_WAIT:
                break
            self.stats.jukebox += 1
            await trio.sleep(JUKEBOX_DELAY)
        if res.disc not in ok:
            self.stats.error(f"{op} {res.disc.name}")
            raise CallFailed(res.disc.name)
        self.stats.done(op, time.perf_counter() - started)
        return res

    async def _call_once(self, op, proc, message, res_type):
        raw = await self.channel.call(proc, message)
        try:
            reply = rpc.decode_reply(raw)
            if not (reply.accepted and reply.stat == rpc.accept_stat.SUCCESS):
                self.stats.error(f"rpc {reply.stat.name}", op)
                raise CallFailed(reply.stat.name)
            res = res_type.unpack(Unpacker(reply.body))
        except XdrError as e:
            self.stats.error("garbage reply", f"{op}: {e}")
            raise CallFailed(str(e)) from None
        return res

    async def ok(self, op, proc, args_type, args, res_type):
        return (await self.call(op, proc, args_type, args, res_type)).body

    # -- procedures ---------------------------------------------------------

    async def lookup(self, dir_fh, name, ok=(nfsstat3.NFS3_OK,)):
        res = await self.call("lookup", NFSPROC3.LOOKUP, nfs3.LOOKUP3args,
                              nfs3.LOOKUP3args(nfs3.diropargs3(dir_fh, name.encode())),
                              nfs3.LOOKUP3res, ok)
        return res.body if res.disc == nfsstat3.NFS3_OK else None

    async def getattr(self, fh):
        return (await self.ok("getattr", NFSPROC3.GETATTR, nfs3.GETATTR3args,
                              nfs3.GETATTR3args(fh), nfs3.GETATTR3res)).obj_attributes

    async def create(self, dir_fh, name, size=None):
        """CREATE UNCHECKED (with ``size``: truncated or extended to it)."""
        attrs = nfs3.sattr3.unchanged().replace(mode=0o644, size=size)
        body = await self.ok("create", NFSPROC3.CREATE, nfs3.CREATE3args,
                             nfs3.CREATE3args(nfs3.diropargs3(dir_fh, name.encode()),
                                              nfs3.createhow3(nfs3.createmode3.UNCHECKED, attrs)),
                             nfs3.CREATE3res)
        if body.obj is None:  # the RFC allows it; a LOOKUP then gives the handle
            return (await self.lookup(dir_fh, name)).object
        return body.obj

    async def remove(self, dir_fh, name):
        await self.ok("remove", NFSPROC3.REMOVE, nfs3.REMOVE3args,
                      nfs3.REMOVE3args(nfs3.diropargs3(dir_fh, name.encode())), nfs3.REMOVE3res)

    async def mkdir(self, dir_fh, name):
        await self.ok("mkdir", NFSPROC3.MKDIR, nfs3.MKDIR3args,
                      nfs3.MKDIR3args(nfs3.diropargs3(dir_fh, name.encode()),
                                      nfs3.sattr3.unchanged().replace(mode=0o755)),
                      nfs3.MKDIR3res)

    async def rmdir(self, dir_fh, name):
        await self.ok("rmdir", NFSPROC3.RMDIR, nfs3.RMDIR3args,
                      nfs3.RMDIR3args(nfs3.diropargs3(dir_fh, name.encode())), nfs3.RMDIR3res)

    async def rename(self, dir_fh, old, new):
        await self.ok("rename", NFSPROC3.RENAME, nfs3.RENAME3args,
                      nfs3.RENAME3args(nfs3.diropargs3(dir_fh, old.encode()),
                                       nfs3.diropargs3(dir_fh, new.encode())), nfs3.RENAME3res)

    async def mkdir_p(self, path):
        fh = self.root
        for part in [p for p in path.split("/") if p]:
            found = await self.lookup(fh, part, ok=(nfsstat3.NFS3_OK, nfsstat3.NFS3ERR_NOENT))
            if found is None:
                res = await self.call(
                    "mkdir", NFSPROC3.MKDIR, nfs3.MKDIR3args,
                    nfs3.MKDIR3args(nfs3.diropargs3(fh, part.encode()),
                                    nfs3.sattr3.unchanged().replace(mode=0o755)),
                    nfs3.MKDIR3res, ok=(nfsstat3.NFS3_OK, nfsstat3.NFS3ERR_EXIST))
                if res.disc == nfsstat3.NFS3_OK and res.body.obj is not None:
                    fh = res.body.obj
                    continue
                found = await self.lookup(fh, part)  # another process made it first
            fh = found.object
        return fh

    async def read(self, fh, name_shift, offset, count, size, check_eof=True):
        """READ and check count, eof and every byte against the pattern."""
        body = await self.ok("read", NFSPROC3.READ, nfs3.READ3args,
                             nfs3.READ3args(fh, offset, count), nfs3.READ3res)
        want = max(0, min(count, size - offset))
        if body.count != len(body.data) or body.count != want:
            self.stats.error("read short", f"offset {offset}: {body.count} bytes, expected {want}")
            raise CallFailed("short read")
        if check_eof and body.eof != (offset + want >= size):
            self.stats.error("read eof",
                             f"offset {offset} count {want} size {size}: eof {body.eof}")
        if body.data != PATTERN.data(name_shift, offset, want):
            self.stats.error("read data", f"offset {offset}: bytes differ from the pattern")
            raise CallFailed("bad data")
        self.stats.bytes_read += want
        return want

    async def write(self, fh, name_shift, offset, count, stable=stable_how.UNSTABLE):
        """WRITE the pattern; returns the write verifier."""
        body = await self.ok("write", NFSPROC3.WRITE, nfs3.WRITE3args,
                             nfs3.WRITE3args(fh, offset, count, stable,
                                             PATTERN.data(name_shift, offset, count)),
                             nfs3.WRITE3res)
        if body.count != count:
            self.stats.error("write short", f"offset {offset}: {body.count} of {count}")
            raise CallFailed("short write")
        if body.committed < stable:
            self.stats.error("write stability", f"asked {stable.name}, got {body.committed.name}")
        self.stats.bytes_written += count
        return body.verf

    async def commit(self, fh):
        return (await self.ok("commit", NFSPROC3.COMMIT, nfs3.COMMIT3args,
                              nfs3.COMMIT3args(fh, 0, 0), nfs3.COMMIT3res)).verf

    async def readdirplus(self, dir_fh, cookie, verf):
        return await self.ok("readdirplus", NFSPROC3.READDIRPLUS, nfs3.READDIRPLUS3args,
                             nfs3.READDIRPLUS3args(dir_fh, cookie, verf, 4096, 32768),
                             nfs3.READDIRPLUS3res)

    async def fsinfo(self):
        return await self.ok("fsinfo", NFSPROC3.FSINFO, nfs3.FSINFO3args,
                             nfs3.FSINFO3args(self.root), nfs3.FSINFO3res)


# -- shared pieces of the workloads ---------------------------------------------


async def each(n, fn):
    """Run fn(0) .. fn(n-1) concurrently."""
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(fn, i)


class Cursor:
    """Offsets handed out in order to a client's workers, pass after pass."""

    def __init__(self, size, step, passes):
        self.size, self.step, self.passes = size, step, passes
        self.offset = 0
        self.done_passes = 0

    def next(self):
        if self.offset >= self.size:
            self.done_passes += 1
            if self.size == 0 or (self.passes and self.done_passes >= self.passes):
                return None
            self.offset = 0
        off = self.offset
        self.offset += self.step
        return off


async def write_range(client, fh, name, start, end, window):
    """Write [start, end) of ``name``'s pattern, ``window`` WRITEs at a
    time, then COMMIT; resent once if the verifier changed (a server reboot
    lost unstable data)."""
    shift = PATTERN.shift(name)
    for attempt in range(2):
        cursor = Cursor(end - start, client.wsize, 1)
        verfs = set()

        async def writer(_):
            while (off := cursor.next()) is not None:
                with contextlib.suppress(CallFailed):
                    count = min(client.wsize, end - start - off)
                    verfs.add(await client.write(fh, shift, start + off, count))
        await each(window, writer)
        committed = await client.commit(fh)
        if verfs <= {committed}:
            return
        client.stats.error("verifier changed", f"{name}: rewriting what was not committed")


async def ensure_file(client, dir_fh, name, path, size, window):
    """The file ``path`` (its leaf ``name`` in ``dir_fh``) with ``size`` bytes
    of its pattern: written when missing or of another size."""
    found = await client.lookup(dir_fh, name, ok=(nfsstat3.NFS3_OK, nfsstat3.NFS3ERR_NOENT))
    if found is not None and found.obj_attributes is not None \
            and found.obj_attributes.size == size:
        return found.object
    fh = await client.create(dir_fh, name, size=0)
    await write_range(client, fh, path, 0, size, window)
    return fh


def small_file_sizes(n, seed=1):
    """Boot-image-like sizes: mostly a few KiB, some up to 256 KiB."""
    rng = random.Random(seed)
    return [int(2 ** rng.uniform(10, 18)) for _ in range(n)]


def parse_ops(text, allowed):
    ops = {}
    for item in text.split(","):
        name, _, weight = item.strip().partition("=")
        if name not in allowed:
            raise click.BadParameter(f"{name!r}: one of {', '.join(allowed)}", param_hint="--ops")
        try:
            ops[name] = float(weight) if weight else 1.0
        except ValueError:
            raise click.BadParameter(f"{item!r}: weight is not a number", param_hint="--ops")
    if not ops or sum(ops.values()) <= 0:
        raise click.BadParameter("no operation with a positive weight", param_hint="--ops")
    return ops


# -- workloads -------------------------------------------------------------------


class Workload:
    """prepare() once per client before the start (not measured); run() is
    the measured part, cancelled when the duration is over."""

    def __init__(self, cfg):
        self.cfg = cfg

    def file_path(self, cid):
        c = self.cfg
        return f"{c.dir}/{c.file}.{cid}" if c.per_client else f"{c.dir}/{c.file}"

    async def open_dir(self, client):
        self.dir_fh = await client.mkdir_p(self.cfg.dir)
        return self.dir_fh

    async def prepare(self, client):
        pass

    async def run(self, client):
        raise NotImplementedError


class FileWorkload(Workload):
    """A file per client (or one shared), written beforehand if need be."""

    needs_data = True

    async def prepare(self, client):
        c = self.cfg
        dir_fh = await self.open_dir(client)
        path = self.file_path(client.cid)
        leaf = path.rsplit("/", 1)[1]
        if self.needs_data and c.prepare:
            fh = await ensure_file(client, dir_fh, leaf, path, c.file_size, c.window)
        else:
            fh = (await client.lookup(dir_fh, leaf)).object
        attrs = await client.getattr(fh)
        client.state = {"fh": fh, "path": path, "shift": PATTERN.shift(path), "size": attrs.size}


class SeqRead(FileWorkload):
    async def run(self, client):
        s = client.state
        cursor = Cursor(s["size"], client.rsize, self.cfg.passes)

        async def worker(_):
            while (off := cursor.next()) is not None:
                with contextlib.suppress(CallFailed):
                    await client.read(s["fh"], s["shift"], off, client.rsize, s["size"])
        await each(self.cfg.window, worker)


class SeqWrite(FileWorkload):
    needs_data = False

    async def prepare(self, client):
        dir_fh = await self.open_dir(client)
        path = self.file_path(client.cid)
        fh = await client.create(dir_fh, path.rsplit("/", 1)[1], size=0)
        client.state = {"fh": fh, "path": path}

    async def run(self, client):
        s = client.state
        await write_range(client, s["fh"], s["path"], 0, self.cfg.file_size, self.cfg.window)


class Rewrite(FileWorkload):
    """bonnie's rewrite: each block read, checked, and written back."""

    async def run(self, client):
        s = client.state
        cursor = Cursor(s["size"], client.wsize, self.cfg.passes)

        async def worker(_):
            while (off := cursor.next()) is not None:
                with contextlib.suppress(CallFailed):
                    n = await client.read(s["fh"], s["shift"], off, client.wsize, s["size"])
                    await client.write(s["fh"], s["shift"], off, n)
        await each(self.cfg.window, worker)
        await client.commit(s["fh"])


class RandRead(FileWorkload):
    """bonnie's random seeks: block-aligned reads anywhere in the file, a
    fraction of them written back."""

    async def run(self, client):
        s, c = client.state, self.cfg
        blocks = max(1, s["size"] // c.block)
        rng = random.Random(c.seed * 1000003 + client.cid)

        async def worker(_):
            while True:
                off = rng.randrange(blocks) * c.block
                started = time.perf_counter()
                with contextlib.suppress(CallFailed):
                    n = await client.read(s["fh"], s["shift"], off, c.block, s["size"])
                    if rng.random() < c.rewrite_fraction:
                        await client.write(s["fh"], s["shift"], off, n)
                    client.stats.done("seek", time.perf_counter() - started)
        await each(c.window, worker)


class Meta(Workload):
    """GETATTR, LOOKUP, CREATE+REMOVE and READDIRPLUS (of a directory of
    ``dir_entries`` files), in proportion to their weights."""

    ops_allowed = META_OPS

    def entry(self, i):
        return f"e{i:06d}"

    async def prepare_tree(self, client):
        c = self.cfg
        top = await self.open_dir(client)
        self.meta_fh = await client.mkdir_p(f"{c.dir}/meta{c.dir_entries}")
        self.scratch_fh = await client.mkdir_p(f"{c.dir}/scratch")
        marker = f".complete{c.dir_entries}"
        if c.prepare and await client.lookup(
                top, marker, ok=(nfsstat3.NFS3_OK, nfsstat3.NFS3ERR_NOENT)) is None:
            names = iter(range(c.dir_entries))

            async def creator(_):
                for i in names:
                    await client.create(self.meta_fh, self.entry(i))
            await each(max(c.window, 8), creator)
            await client.create(top, marker)
        client.state = {"getattr_fh": (await client.lookup(self.meta_fh, self.entry(0))).object}

    async def prepare(self, client):
        await self.prepare_tree(client)

    def chooser(self, client):
        rng = random.Random(self.cfg.seed * 1000003 + client.cid)
        names, weights = zip(*self.cfg.ops.items())
        return rng, lambda: rng.choices(names, weights)[0]

    async def run(self, client):
        rng, choose = self.chooser(client)

        async def worker(w):
            ctx = {"cookie": 0, "verf": b"\0" * 8, "seen": 0, "n": 0}
            while True:
                # CREATE+REMOVE is shielded: the end of the run is noticed here.
                await trio.lowlevel.checkpoint()
                with contextlib.suppress(CallFailed):
                    await self.do(client, choose(), rng, w, ctx)
        await each(self.cfg.window, worker)

    async def do(self, client, op, rng, w, ctx):
        c = self.cfg
        if op == "getattr":
            await client.getattr(client.state["getattr_fh"])
        elif op == "lookup":
            found = await client.lookup(self.meta_fh, self.entry(rng.randrange(c.dir_entries)))
            if found.obj_attributes is not None and found.obj_attributes.type != nfs3.ftype3.NF3REG:
                client.stats.error("lookup type", found.obj_attributes.type.name)
        elif op == "create_remove":
            ctx["n"] += 1
            name = f"c{client.cid}w{w}n{ctx['n']}"
            started = time.perf_counter()
            # The end of the run must not leave a file behind (cancelled
            # after the CREATE went out, say): runs after runs, as in a soak,
            # would fill the directory.
            with trio.CancelScope(shield=True), trio.move_on_after(TCP_TIMEOUT) as bound:
                await client.create(self.scratch_fh, name)
                await client.remove(self.scratch_fh, name)
            if bound.cancelled_caught:
                client.stats.error("create_remove", f"{name} not removed in {TCP_TIMEOUT:g} s")
            client.stats.done("create_remove", time.perf_counter() - started)
        elif op == "readdirplus":
            await self.readdirplus_page(client, ctx)
        elif op == "mkdir_rmdir":
            ctx["n"] += 1
            name = f"d{client.cid}w{w}n{ctx['n']}"
            started = time.perf_counter()
            with trio.CancelScope(shield=True), trio.move_on_after(TCP_TIMEOUT) as bound:
                await client.mkdir(self.scratch_fh, name)
                await client.rmdir(self.scratch_fh, name)
            if bound.cancelled_caught:
                client.stats.error("mkdir_rmdir", f"{name} not removed in {TCP_TIMEOUT:g} s")
            client.stats.done("mkdir_rmdir", time.perf_counter() - started)
        elif op == "rename":
            # One file per worker, renamed back and forth.
            names = (f"r{client.cid}w{w}a", f"r{client.cid}w{w}b")
            if "renamed" not in ctx:
                await client.create(self.scratch_fh, names[0])
                ctx["renamed"] = 0
            i = ctx["renamed"]
            await client.rename(self.scratch_fh, names[i % 2], names[(i + 1) % 2])
            ctx["renamed"] = i + 1

    async def readdirplus_page(self, client, ctx):
        """One READDIRPLUS call, continuing this worker's walk of the
        directory; at its end the walk must have seen every entry once."""
        try:
            body = await client.readdirplus(self.meta_fh, ctx["cookie"], ctx["verf"])
        except CallFailed:
            ctx.update(cookie=0, verf=b"\0" * 8, seen=0)
            raise
        entries = body.reply.entries
        for e in entries:
            if e.name not in (b".", b".."):
                ctx["seen"] += 1
                if e.name_attributes is None or e.name_handle is None:
                    client.stats.error("readdirplus entry", f"{e.name!r} without attributes/handle")
        client.stats.entries += len(entries)
        if body.reply.eof:
            if ctx["seen"] != self.cfg.dir_entries:
                client.stats.error("readdirplus count",
                                   f"{ctx['seen']} entries, expected {self.cfg.dir_entries}")
            ctx.update(cookie=0, verf=b"\0" * 8, seen=0)
        elif not entries:
            client.stats.error("readdirplus stuck", "no entries and no eof")
            ctx.update(cookie=0, verf=b"\0" * 8, seen=0)
        else:
            ctx.update(cookie=entries[-1].cookie, verf=body.cookieverf)


class Mixed(Meta):
    """Issue 8's soak: sequential reads of a shared file, writes (each read
    back and checked) to a file of the client's own that is rewritten in
    place, and the metadata operations."""

    ops_allowed = ("read", "write") + META_OPS

    async def prepare(self, client):
        c = self.cfg
        await self.prepare_tree(client)
        shared = f"{c.dir}/{c.file}"
        fh = await ensure_file(client, self.dir_fh, c.file, shared, c.file_size, c.window) \
            if c.prepare else (await client.lookup(self.dir_fh, c.file)).object
        own = f"{c.dir}/{c.file}.w{client.cid}"
        own_fh = await client.create(self.dir_fh, own.rsplit("/", 1)[1], size=0)
        client.state.update(fh=fh, shift=PATTERN.shift(shared), size=c.file_size,
                            own_fh=own_fh, own_shift=PATTERN.shift(own),
                            read_cursor=Cursor(c.file_size, client.rsize, 0),
                            write_cursor=Cursor(c.file_size, client.wsize, 0), writes=0)

    async def do(self, client, op, rng, w, ctx):
        s = client.state
        if op == "read":
            off = s["read_cursor"].next()
            await client.read(s["fh"], s["shift"], off, client.rsize, s["size"])
        elif op == "write":
            off = s["write_cursor"].next()
            n = min(client.wsize, s["size"] - off)
            await client.write(s["own_fh"], s["own_shift"], off, n)
            # Other workers may be writing past it: the size, hence eof, is unknown.
            await client.read(s["own_fh"], s["own_shift"], off, n, s["size"], check_eof=False)
            s["writes"] += 1
            if s["writes"] % 64 == 0:
                await client.commit(s["own_fh"])
        else:
            await super().do(client, op, rng, w, ctx)


class SmallFiles(Workload):
    """The boot storm: every client reads the same set of small files, each
    looked up, its attributes checked, and read whole."""

    async def prepare(self, client):
        c = self.cfg
        await self.open_dir(client)
        d = f"{c.dir}/small{c.files}"
        self.small_fh = await client.mkdir_p(d)
        self.sizes = small_file_sizes(c.files, c.seed)
        if c.prepare:
            names = iter(enumerate(self.sizes))

            async def maker(_):
                for i, size in names:
                    await ensure_file(client, self.small_fh, f"f{i:05d}", f"{d}/f{i:05d}", size, 4)
            await each(max(1, c.window), maker)
        client.state = {"dir": d}

    async def run(self, client):
        files = Cursor(len(self.sizes), 1, self.cfg.passes)
        d = client.state["dir"]

        async def worker(_):
            while (i := files.next()) is not None:
                name = f"f{i:05d}"
                started = time.perf_counter()
                with contextlib.suppress(CallFailed):
                    found = await client.lookup(self.small_fh, name)
                    size = (await client.getattr(found.object)).size
                    if size != self.sizes[i]:
                        client.stats.error("small size",
                                           f"{name}: {size}, expected {self.sizes[i]}")
                        continue
                    shift = PATTERN.shift(f"{d}/{name}")
                    for off in range(0, size, client.rsize):
                        await client.read(found.object, shift, off, client.rsize, size)
                    client.stats.done("file", time.perf_counter() - started)
        await each(self.cfg.window, worker)


WORKLOAD_CLASSES = {"seqread": SeqRead, "seqwrite": SeqWrite, "rewrite": Rewrite,
                    "randread": RandRead, "meta": Meta, "mixed": Mixed, "smallfiles": SmallFiles}


# -- running --------------------------------------------------------------------


class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _socket(cfg):
    kind = socket.SOCK_DGRAM if cfg.proto == "udp" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    if cfg.proto == "udp":
        # Room for a window of fragmented 32 KiB replies arriving at once.
        want = max(1 << 18, 2 * cfg.window * UDP_MAX_IO)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is not None:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, want)
                    break
    if cfg.reserved_port:
        bind_reserved(s)
    s.setblocking(False)
    return s


async def open_client(cid, cfg, cred):
    """Mount (MOUNT v3 MNT) and connect one logical client."""
    stats = Stats()
    root = await trio.to_thread.run_sync(lambda: mount_export(
        cfg.server, cfg.export, vers=3, transport=cfg.proto, port=cfg.mount_port, cred=cred,
        reserved_port=cfg.reserved_port, timeout=cfg.timeout * (cfg.retries + 1)))

    async def connect():
        sock = trio.socket.from_stdlib_socket(_socket(cfg))
        try:
            with trio.fail_after(cfg.timeout * (cfg.retries + 1)):
                await sock.connect((cfg.server, cfg.port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock) if cfg.proto == "tcp" else sock

    channel = Channel(connect, cfg.proto, cred, stats, cfg.window, cfg.timeout, cfg.retries,
                      max_record=MAX_IO + (1 << 16))
    await channel.open()
    return Client(cid, channel, root, stats, 0, 0)


async def _sizes(client, cfg, nursery):
    nursery.start_soon(client.channel.receive_loop)
    info = await client.fsinfo()
    cap = UDP_MAX_IO if cfg.proto == "udp" else MAX_IO
    client.rsize = min(cfg.rsize or cap, info.rtmax or cap, MAX_IO)
    client.wsize = min(cfg.wsize or cap, info.wtmax or cap, MAX_IO)


def _leaves(exc):
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def run_load(cfg):
    """Everything but the CLI: returns the report (a dict). Raises
    SetupError, or what mounting or connecting raised."""
    clients = []
    try:
        return await _run_load(cfg, clients)
    except (CallFailed, BaseExceptionGroup) as group:
        leaves = _leaves(group)
        if all(isinstance(e, CallFailed) for e in leaves):
            samples = [s for c in clients for s in c.stats.samples]
            raise SetupError(f"preparing the {cfg.workload} workload failed: "
                             f"{'; '.join(samples[:3]) or leaves[0]}") from None
        raise next(e for e in leaves if not isinstance(e, CallFailed)) from None


async def _run_load(cfg, clients):
    cred = rpc.AuthSys(int(time.time()) & 0xFFFFFFFF, socket.gethostname().encode()[:255],
                       cfg.uid, cfg.gid, [cfg.gid])
    workload = WORKLOAD_CLASSES[cfg.workload](cfg)
    async with trio.open_nursery() as nursery:
        for i in range(cfg.clients):
            clients.append(await open_client(cfg.client_base + i, cfg, cred))
            await _sizes(clients[-1], cfg, nursery)
        # One client after the other: the first makes what is shared, the
        # others find it; each writes its own files with a window of calls.
        for c in clients:
            await workload.prepare(c)
        prep_errors = sum(sum(c.stats.errors.values()) for c in clients)
        if cfg.prepare_only:
            report = {"prepared": cfg.workload, "errors": prep_errors,
                      "error_samples": [s for c in clients for s in c.stats.samples][:10]}
            nursery.cancel_scope.cancel()
            return report
        for c in clients:  # what preparing did is not part of the figures
            c.stats = c.channel.stats = Stats()
        if cfg.start_at:
            await trio.sleep(max(0.0, cfg.start_at - time.time()))
        ru0, t0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.time()
        with trio.move_on_after(cfg.duration if cfg.duration > 0 else math.inf):
            await each(len(clients), lambda i: workload.run(clients[i]))
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        nursery.cancel_scope.cancel()
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    report = summarize(cfg, clients, elapsed, cpu)
    report.update(start=round(wall0, 6), end=round(wall0 + elapsed, 6), prepare_errors=prep_errors)
    return report


def _ms(seconds):
    return None if seconds is None else round(seconds * 1e3, 3)


def summarize(cfg, clients, elapsed, cpu):
    total = Stats()
    for c in clients:
        total.merge(c.stats)
    calls = Histogram()
    for op, h in total.latency.items():
        if op not in SEQUENCES:
            calls.merge(h)
    n_calls = calls.n
    primary = {"seqread": "read", "seqwrite": "write", "rewrite": "write", "randread": "seek",
               "meta": None, "mixed": None, "smallfiles": "file"}[cfg.workload]
    ops = total.ops[primary] if primary else n_calls
    moved = total.bytes_read + total.bytes_written
    return {
        "workload": cfg.workload, "proto": cfg.proto, "server": cfg.server,
        "clients": cfg.clients, "client_base": cfg.client_base, "window": cfg.window,
        "rsize": clients[0].rsize if clients else None,
        "wsize": clients[0].wsize if clients else None,
        "seconds": round(elapsed, 3),
        "ops": ops, "ops_per_s": round(ops / elapsed, 1) if elapsed else None,
        "calls": n_calls, "calls_per_s": round(n_calls / elapsed, 1) if elapsed else None,
        "bytes_read": total.bytes_read, "bytes_written": total.bytes_written,
        "MBps": round(moved / elapsed / 1e6, 2) if elapsed else None,
        "read_MBps": round(total.bytes_read / elapsed / 1e6, 2) if elapsed else None,
        "write_MBps": round(total.bytes_written / elapsed / 1e6, 2) if elapsed else None,
        "latency_ms": {"p50": _ms(calls.quantile(0.5)), "p99": _ms(calls.quantile(0.99)),
                       "max": _ms(calls.max)},
        "per_op": {op: {"count": total.ops[op], "per_s": round(total.ops[op] / elapsed, 1),
                        "p50_ms": _ms(h.quantile(0.5)), "p99_ms": _ms(h.quantile(0.99))}
                   for op, h in sorted(total.latency.items())},
        "entries": total.entries,
        "errors": dict(total.errors), "error_count": sum(total.errors.values()),
        "error_samples": total.samples,
        "retransmits": total.retransmits, "duplicate_replies": total.duplicates,
        "reconnects": total.reconnects, "jukebox": total.jukebox,
        "cpu_s": round(cpu, 3), "cpu_util": round(cpu / elapsed, 3) if elapsed else None,
        "per_client": [{"id": c.cid, "ops": sum(c.stats.ops.values()),
                        "bytes": c.stats.bytes_read + c.stats.bytes_written,
                        "errors": sum(c.stats.errors.values())} for c in clients],
    }


class SetupError(Exception):
    pass


class SetupFailed(click.ClickException):
    """No load could be generated (mount refused, server unreachable): exit
    status 2, where 1 means the load ran and replies failed their checks."""

    exit_code = 2


def parse_size(text):
    text = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if text[-1:] in "KMG" else text) * mult)
    except ValueError:
        raise click.BadParameter(f"{text!r}: a size such as 64M") from None


def _size_option(ctx, param, value):
    return parse_size(value) if value is not None else None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", required=True, help="NFS server address.")
@click.option("--export", required=True, help="Exported path to mount (MOUNT v3).")
@click.option("--proto", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--port", default=2049, show_default=True, type=click.IntRange(1, 65535))
@click.option("--mount-port", type=click.IntRange(1, 65535),
              help="MOUNT's port [default: asked of the server's portmapper].")
@click.option("--clients", default=1, show_default=True, type=click.IntRange(1, 4096),
              help="Logical clients, each with its own socket and mount.")
@click.option("--client-base", default=0, show_default=True, type=click.IntRange(0),
              help="Number of the first client (per-client file names), so that "
                   "several processes do not share files.")
@click.option("--window", default=8, show_default=True, type=click.IntRange(1, 1024),
              help="Calls outstanding per client.")
@click.option("--workload", type=click.Choice(WORKLOADS), default="seqread", show_default=True)
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Seconds of load (0: until the work is done; meta, mixed and "
                   "randread never are).")
@click.option("--dir", "dir_", default="loadgen", show_default=True,
              help="Directory under the export where the workload's files live.")
@click.option("--file", "file_", default="data", show_default=True,
              help="Data file name in --dir.")
@click.option("--per-client/--shared", default=False, show_default=True,
              help="A file per client (NAME.ID) or one shared by all.")
@click.option("--file-size", default="64M", show_default=True, callback=_size_option,
              help="Size of the files written (seqwrite, and files prepared for reading).")
@click.option("--passes", default=1, show_default=True, type=click.IntRange(0),
              help="seqread/rewrite/smallfiles: times through the data (0: until --duration).")
@click.option("--rsize", callback=_size_option,
              help="READ size [default: the server's rtmax, at most 32K over UDP, 1M over TCP].")
@click.option("--wsize", callback=_size_option,
              help="WRITE size [default: like --rsize].")
@click.option("--block", default="8K", show_default=True, callback=_size_option,
              help="randread: block size of the random reads.")
@click.option("--rewrite-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="randread: fraction of blocks written back (bonnie's 10%).")
@click.option("--ops", help="meta/mixed: weighted operations, e.g. getattr=3,lookup=1 "
                            f"[default meta: {DEFAULT_OPS['meta']}; "
                            f"mixed: {DEFAULT_OPS['mixed']}].")
@click.option("--dir-entries", default=10000, show_default=True, type=click.IntRange(1),
              help="meta/mixed: entries of the directory READDIRPLUS lists.")
@click.option("--files", default=200, show_default=True, type=click.IntRange(1),
              help="smallfiles: number of small files.")
@click.option("--timeout", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="Seconds before the first retransmission over UDP (then adaptive).")
@click.option("--retries", default=6, show_default=True, type=click.IntRange(0),
              help="Retransmissions before a call counts as a timeout.")
@click.option("--prepare/--no-prepare", default=True, show_default=True,
              help="Create (write) missing files and directories before the run.")
@click.option("--prepare-only", is_flag=True, help="Prepare, report, and stop.")
@click.option("--start-at", type=float,
              help="Wall-clock time (epoch seconds) at which the measured load starts "
                   "(several processes started together).")
@click.option("--reserved-port/--no-reserved-port", default=None,
              help="Send from ports below 1024 [default: when root].")
@click.option("--uid", default=0, show_default=True, type=click.IntRange(0))
@click.option("--gid", default=0, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def main(**kw):
    """Drive an NFSv3 server with many outstanding requests, check every
    reply, and report ops/s, MB/s and latency percentiles."""
    kw["dir"] = kw.pop("dir_").strip("/") or "loadgen"
    kw["file"] = kw.pop("file_")
    as_json = kw.pop("as_json")
    if kw["reserved_port"] is None:
        kw["reserved_port"] = os.geteuid() == 0
    if kw["workload"] in ("meta", "mixed"):
        allowed = Meta.ops_allowed if kw["workload"] == "meta" else Mixed.ops_allowed
        kw["ops"] = parse_ops(kw["ops"] or DEFAULT_OPS[kw["workload"]], allowed)
    elif kw["ops"]:
        raise click.BadParameter("only for meta and mixed", param_hint="--ops")
    cfg = Config(**kw)
    try:
        report = trio.run(run_load, cfg)
    except (SetupError, NfsError, RpcCallError, RpcTimeout, OSError, trio.TooSlowError) as e:
        raise SetupFailed(str(e) if isinstance(e, SetupError)
                          else f"{cfg.server}:{cfg.export}: {type(e).__name__}: {e}") from None
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(_human(report))
    errors = report["errors"] if cfg.prepare_only else report["error_count"]
    sys.exit(1 if errors else 0)


def _human(r):
    if "prepared" in r:
        return f"prepared {r['prepared']}, {r['errors']} errors"
    lat = r["latency_ms"]
    lines = [f"{r['workload']} over {r['proto']}: {r['clients']} clients x window {r['window']}, "
             f"{r['seconds']} s",
             f"  {r['ops']} ops ({r['ops_per_s']}/s), {r['calls']} calls, {r['MBps']} MB/s "
             f"(read {r['read_MBps']}, write {r['write_MBps']})",
             f"  latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; "
             f"loadgen CPU {r['cpu_util']:.0%}",
             f"  {r['retransmits']} retransmissions, {r['reconnects']} reconnections, "
             f"{r['jukebox']} JUKEBOX retried, {r['error_count']} errors {r['errors'] or ''}"]
    lines += [f"  ! {s}" for s in r["error_samples"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
