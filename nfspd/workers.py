"""Worker processes (issue 15, `nfspd --workers N`) that answer NFSv3
READDIR and READDIRPLUS handed over by nfspd, the costliest read-only
procedures, and the NFSv3 namespace changes that reach them over UDP
(steered by the kernel, nfspd/steering.py): more cores for metadata.

nfspd is one Python process, and threads do not help (the GIL; see
nfspd/fs/commit.py). READDIRPLUS costs 7-10 us of CPU per entry (about 1.2 ms
per 127-entry page): listing directories saturates the one core. A worker is a
process of its own (``python3 -m nfspd.workers``), with its own
ExportRegistry and MetaFS over the same exports and the same handle key (read
from the state directory), so the handles and cookies it gives are the ones
nfspd would give: both are keyed hashes of that key (nfspd/fs/handles.py,
nfspd/fs/listings.py). Everything with state (NFSv4, MOUNT, writes, the
purge journal) stays in nfspd.

Namespace changes (CREATE, MKDIR, SYMLINK, MKNOD, RMDIR, RENAME, LINK over
UDP): a worker answers those its socket receives with nfspd's own transport
(serve_udp) and handlers, a duplicate request cache of its own (a
retransmission reaches the same worker), and a group commit of its own (on
a `sync` export each reply waits for its flush, as in nfspd). Where the
change would need nfspd's state, the worker hands the call back over the
socketpair (steered_procedures): a CREATE that sets a size (truncating a
file whose data nfspd moves), a RENAME onto an existing name (the victim's
purge, its NFSv4 opens and pNFS layouts; renameat2 NOREPLACE tells, with no
window). nfspd answers it from its socket through its own cache, and the
worker remembers it, so that a retransmission is handed back too.

The hand-off: nfspd's transport reads a whole RPC record; if its header says
NFS v3 READDIR or READDIRPLUS (takes(): a slice and a set lookup), the
record goes, with the client's and the local address and the transport, to a
worker over a SOCK_SEQPACKET socketpair. The worker decodes and answers it
with the same Dispatcher, handlers and ExportRegistry.resolve() as nfspd (so
AUTH_SYS, squashing, the secure-port rule and who may use which export apply
exactly alike). A UDP call's reply the worker sends itself, from its copy of
nfspd's NFS UDP socket (inherited; IP_PKTINFO makes it leave from the address
the call was sent to); a TCP call's reply comes back over the socketpair and
nfspd sends it on the connection (only nfspd writes a connection, so records
never interleave).

Measured (tools/dev/bench_workers.py, loopback, 1000-entry directory,
32 KiB pages of ~125 entries, this 2-core machine shared with the Python
load generators and other work; ranges over 2 alternating rounds):
- nfspd's CPU per READDIRPLUS: 690-960 us answered by nfspd; 67-102 us over
  UDP and 144-170 us over TCP handed to a worker (relaying a UDP reply
  through nfspd cost ~150 us too, hence the worker's own send). The worker
  spends 750-840 us on it, what nfspd did. So nfspd's core goes ~8x (UDP)
  and ~5x (TCP) further on READDIRPLUS, and each worker with a core of its
  own should add ~1,200 pages (~150,000 entries) a second (1/800 us: not
  measured, this machine has no spare core).
- On this 2-core machine, with the clients using one core, there is no core
  for a worker: READDIRPLUS pages/s with 1 worker vs none were 407-467 vs
  445-481 (1 client), 517-637 vs 406-740 (8 clients) over UDP; 367-445 vs
  437-476 and 519-614 vs 572-715 over TCP. Hence the default of 0.
- GETATTR (answered by nfspd either way) was unchanged: 4,496-4,718 vs
  3,468-4,867 calls/s (1 client), 10,266-10,624 vs 9,717-10,445 (8), 75-79
  vs 74-82 us of nfspd's CPU per call, over 3 rounds. GETATTR, LOOKUP and
  ACCESS cost nfspd 40-80 us, about what the hand-off itself costs it (one
  call per wakeup): not handed over.

Bounds and failures: at most MAX_PENDING TCP calls per worker are in flight,
and UDP calls at most what the socketpair's buffer holds; a call that finds
every worker full (or its socket buffer full, or no worker
ready yet) is answered by nfspd itself, as without workers, so nothing waits
on a worker and nothing queues without bound. A worker that dies is started
again (after RESTART_PAUSE); the calls it had are not answered, and their
clients retransmit (READDIR and READDIRPLUS are idempotent: no DRC involved).
Steered calls wait in the worker's own socket, bounded by its buffer, and
run at most Limits.udp_inflight at once; nfspd answers at most
MAX_HANDED_BACK handed-back calls at once and drops the rest (the client
retransmits). Steered calls that reach a dead worker's socket are nfspd's
until the next one starts (RESTART_PAUSE), then wait in it for that one to
be ready; the replies it had cached are gone with it, as after a restart of
nfspd. A worker exits when nfspd's end of its socket closes.

Coherence: a SIGHUP that reloads nfspd's exports sends the workers a reload
message on the same socket as the calls, so every call received after the
reload is answered under the new rules. What a worker caches and what can go
stale:
- listings (nfspd/fs/listings.py) are checked against the directory's mtime
  and ctime on every call: a change nfspd or another worker made shows at
  once, in nfspd too;
- READDIRPLUS lookups kept (nfspd/fs/attrcache.py), by nfspd and by each
  worker: every process counts its changes (and the atimes its reads of
  directories move) in its slot of one SharedChanges, and each drops what
  it kept when the sum moves;
- handles remembered by inode and ctime (HandleCodec.known): a removal or
  rename here changes the ctime; as for changes made outside nfspd, only a
  new object given the same inode number within one clock tick of the old
  one's last change could be mistaken, the same exposure as today's
  "outside change" rule (nfspd/fs/dirplus.py);
- the descriptor cache: every use fstat()s the cached descriptor, and an
  object without links is STALE (nfspd/fs/objects.py open()), so a directory
  nfspd removed is STALE in the worker at once, as in nfspd, and one a
  worker removed is STALE in nfspd. (A regular file
  nfspd holds after its last link, for an NFSv4 open, is STALE in a worker
  where nfspd says NOTDIR: either way no listing.)
"""

import argparse
import errno
import itertools
import logging
import os
import signal
import socket
import struct
import subprocess
import sys

import trio

from common.metafile import DEFAULT_STRIPE_UNIT
from common.nfs3 import NFSPROC3, createmode3
from common.runtime import logs, pktinfo
from nfspd import drc as reply_cache
from nfspd import nfs3proc, steering
from nfspd.datapath import LocalDataPath
from nfspd.dispatch import (NO_REPLY, CallContext, Deferred, Dispatcher, Procedure, Program,
                            args_checksum)
from nfspd.drc import DuplicateRequestCache
from nfspd.exports import ExportRegistry
from nfspd.fs.attrcache import SharedChanges
from nfspd.fs.commit import GroupCommit
from nfspd.fs.handles import export_id_for_path
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import TargetExists
from nfspd.nfsservice import NfsService
from nfspd.transport import Limits, serve_udp

log = logging.getLogger(__name__)

MAX_PENDING = 64        # calls in flight per worker
RESTART_PAUSE = 1.0     # seconds between a worker's death and its replacement
MAX_MESSAGE = (1 << 20) + 8192  # a reply: at most max_io (1 MiB) and its header

MAX_CALL = 1 << 16      # a READDIR* call is ~200 bytes; a bigger one is cut and
                        # answered GARBAGE_ARGS
NFS_PROGRAM = 100003
READDIR, READDIRPLUS = 16, 17
_CALL_HEAD = struct.Struct(">IIII")  # msg_type, rpcvers, prog, vers
_TAKEN = frozenset(_CALL_HEAD.pack(0, 2, NFS_PROGRAM, 3) + struct.pack(">I", p)
                   for p in (READDIR, READDIRPLUS))

# nfspd -> worker: kind, id, tcp?, client ip, client port, local ip, local port.
_CALL = struct.Struct(">BIB4sH4sH")
_KIND_CALL, _KIND_RELOAD, _KIND_UDP_CALL = 1, 2, 3
# worker -> nfspd: id (0: the worker is ready), then the reply (empty: none);
# or _HANDED_BACK, then a _CALL head and a steered call nfspd must answer.
# Or _REPORT, then how many steered calls the worker has answered, and its
# group commit's flushes, the calls that waited for them and their time (us).
_REPLY = struct.Struct(">I")
_HANDED_BACK = 0xFFFFFFFF
_REPORT = 0xFFFFFFFE
_REPORTED = struct.Struct(">QQQQ")
REPORT_EVERY = 1.0      # seconds between a busy worker's reports
MAX_HANDED_BACK = 64    # handed-back calls nfspd answers at once; more are
                        # dropped (the client retransmits)


def takes(data):
    """Whether a received record is a call a worker answers."""
    return data[4:24] in _TAKEN


class _Worker:
    __slots__ = ("answered", "answered_before", "flushed", "flushed_before", "index", "pending",
                 "proc", "ready", "sock")

    def __init__(self, index):
        self.index = index
        self.proc = None
        self.sock = None
        self.ready = False
        self.pending = {}  # call id -> (reply_to, args)
        self.answered = 0  # steered calls, as its last report says (since it started)
        self.answered_before = 0  # by the processes it replaced
        self.flushed = (0, 0, 0)  # its group commit's (flushes, waits, us), as last reported
        self.flushed_before = (0, 0, 0)


class Pool:
    """nfspd's side: the workers, started by run(), fed by submit() with
    what takes() says they answer."""

    takes = staticmethod(takes)

    def __init__(self, n, exports, state_dir, data_dir, log_level="info",
                 stripe_unit=DEFAULT_STRIPE_UNIT, layout_gen=0, changes_fd=None):
        self.argv = [sys.executable, "-m", "nfspd.workers", "--exports", exports,
                     "--state-dir", state_dir, "--data-dir", data_dir,
                     "--stripe-unit", str(stripe_unit), "--layout-gen", str(layout_gen),
                     "--processes", str(n + 1), "--log-level", log_level]
        # nfspd's attrcache.SharedChanges, in which worker i counts in slot i + 1.
        self.changes_fd = changes_fd
        self.udp = None  # nfspd's NFS UDP socket, which the workers answer on
        self.steered = None  # each worker's own socket of its reuseport group
        # What answers a call a worker hands back: answer(data, client, local).
        self.answer = None
        self.stand_in = None  # what serves a dead worker's socket: answer_udp_on()
        self.workers = [_Worker(i) for i in range(n)]
        self._ids = itertools.count(1)
        self._rr = 0
        self._answering = 0
        self.counters = {"offloaded": 0, "fallback": 0, "lost": 0, "restarts": 0,
                         "handed_back": 0}
        self._nursery = None

    def submit(self, data, client, local, tcp, reply_to, args):
        """Hand a call to a worker: True if one took it, and its reply will be
        given to ``reply_to(reply, *args)`` (a plain function; the transport's);
        False when the caller must answer it itself. A call received on the
        UDP socket given to answer_udp_on() is answered by the worker itself,
        from its copy of that socket (``reply_to`` None)."""
        if len(data) > MAX_CALL - _CALL.size:
            return False  # no READDIR call is that big: nfspd answers it
        workers = self.workers
        n = len(workers)
        for _ in range(n):
            w = workers[self._rr % n]
            self._rr += 1
            if not w.ready or len(w.pending) >= MAX_PENDING:
                continue
            call_id = 0 if reply_to is None else next(self._ids) & 0xFFFFFFFF or 1
            try:
                head = _CALL.pack(_KIND_CALL if call_id else _KIND_UDP_CALL, call_id, tcp,
                                  socket.inet_aton(client[0]), client[1],
                                  socket.inet_aton(local[0]), local[1])
                w.sock.sendmsg([head, data])
            except BlockingIOError:
                continue  # its socket buffer (the bound of its UDP calls) is full
            except OSError:
                continue  # the worker died: its reader notices
            if call_id:
                w.pending[call_id] = (reply_to, args)
            self.counters["offloaded"] += 1
            return True
        self.counters["fallback"] += 1
        return False

    def answer_udp_on(self, sock, steered=None, answer=None, stand_in=None):
        """UDP calls received on ``sock`` are answered by the workers
        themselves: nfspd never sees those replies (one message per call
        instead of two, and no 32 KiB reply copied through nfspd). From
        ``steered``, each worker's own socket of the reuseport group
        (nfspd/steering.py), which also brings it the namespace changes;
        ``answer(data, client, local)`` answers what a worker hands back,
        and ``await stand_in(sock)`` serves a dead worker's socket until
        cancelled, when the next one starts. Without, from their copy of
        ``sock``."""
        self.udp = sock
        self.steered = steered
        self.answer = answer
        self.stand_in = stand_in

    def status(self):
        """For `nfsp status`: the workers' pids (None while one starts), the
        steered calls each has answered (``steered``: as of its last report,
        REPORT_EVERY), and what was handed to them, answered by nfspd instead,
        handed back, or lost; and their group commits' flushes, the calls
        that waited for them and their time."""
        flushes, waits, us = (sum(w.flushed_before[i] + w.flushed[i] for w in self.workers)
                              for i in range(3))
        return {"pids": [w.proc.pid if w.ready else None for w in self.workers],
                "steered": [w.answered_before + w.answered for w in self.workers],
                "group_commit": {"flushes": flushes, "waits": waits, "seconds": us / 1e6},
                **self.counters}

    def reload(self):
        """Exports were reloaded: so are the workers', before their next call."""
        msg = _CALL.pack(_KIND_RELOAD, 0, 0, bytes(4), 0, bytes(4), 0)
        for w in self.workers:
            if w.sock is not None:
                try:
                    w.sock.send(msg)
                except OSError:
                    # Full or dead: restarting it is the sure way to reload.
                    self._kill(w)

    @staticmethod
    def _kill(w):
        w.ready = False
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for w in self.workers:
                nursery.start_soon(self._keep, w)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for w in self.workers:
                    self._kill(w)

    async def _keep(self, w):
        """Run worker ``w``, and again whenever it dies."""
        first = True
        while True:
            if not first:
                self.counters["restarts"] += 1
                with trio.move_on_after(RESTART_PAUSE):
                    if self.steered is not None and self.stand_in is not None:
                        # Its steered calls meanwhile: nfspd's (a worker
                        # that cannot start must not leave them unanswered).
                        await self.stand_in(self.steered[w.index])
                    await trio.sleep_forever()
            first = False
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for s in (ours, theirs):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            ours.setblocking(False)
            # The UDP calls a worker answers itself are bounded by what this
            # buffer holds (a few hundred); the others by MAX_PENDING.
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
            argv = self.argv + ["--fd", str(theirs.fileno()), "--slot", str(w.index + 1)]
            fds = [theirs.fileno()]
            if self.changes_fd is not None:
                argv += ["--changes-fd", str(self.changes_fd)]
                fds.append(self.changes_fd)
            if self.steered is not None:
                argv += ["--udp-fd", str(self.steered[w.index].fileno()), "--steered"]
                fds.append(self.steered[w.index].fileno())
            elif self.udp is not None:
                argv += ["--udp-fd", str(self.udp.fileno())]
                fds.append(self.udp.fileno())
            try:
                # Popen returns once the child is forked: no wait worth a thread.
                w.proc = subprocess.Popen(argv, pass_fds=fds)  # noqa: ASYNC220
            except OSError as e:
                log.error("cannot start worker %d: %s", w.index, e)
                ours.close()
                theirs.close()
                continue
            finally:
                theirs.close()
            w.sock = ours
            try:
                await self._read_replies(w)
            finally:
                lost = len(w.pending)
                self.counters["lost"] += lost
                w.pending.clear()
                w.ready = False
                w.sock = None
                w.answered_before += w.answered
                w.answered = 0
                w.flushed_before = tuple(a + b for a, b in zip(w.flushed_before, w.flushed))
                w.flushed = (0, 0, 0)
                trio.lowlevel.notify_closing(ours)
                ours.close()
                self._kill(w)
                proc = w.proc
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(proc.wait)
            log.warning("worker %d (pid %d) ended (status %s); %d calls unanswered",
                        w.index, proc.pid, proc.returncode, lost)

    def _handed_back(self, msg):
        if self.answer is None or self._answering >= MAX_HANDED_BACK \
                or len(msg) < _REPLY.size + _CALL.size:
            self.counters["lost"] += 1  # the client retransmits; handed back again
            return
        _, _, _, cip, cport, lip, lport = _CALL.unpack_from(msg, _REPLY.size)
        self._answering += 1
        self.counters["handed_back"] += 1
        self._nursery.start_soon(self._answer, bytes(msg[_REPLY.size + _CALL.size:]),
                                 (socket.inet_ntoa(cip), cport), (socket.inet_ntoa(lip), lport))

    async def _answer(self, data, client, local):
        try:
            await self.answer(data, client, local)
        finally:
            self._answering -= 1

    async def _read_replies(self, w):
        sock = w.sock
        # recv(MAX_MESSAGE) would allocate a MiB per reply: one buffer, and
        # each reply copied out of it at its size.
        buf = bytearray(MAX_MESSAGE)
        view = memoryview(buf)
        while True:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError:
                return
            if not n:
                return
            msg = view[:n]
            (call_id,) = _REPLY.unpack_from(msg)
            if call_id == _HANDED_BACK:
                self._handed_back(msg)
                continue
            if call_id == _REPORT:
                if len(msg) == _REPLY.size + _REPORTED.size:
                    w.answered, *flushed = _REPORTED.unpack_from(msg, _REPLY.size)
                    w.flushed = tuple(flushed)
                continue
            if call_id == 0:
                w.ready = True
                log.info("worker %d (pid %d) ready", w.index, w.proc.pid)
                continue
            entry = w.pending.pop(call_id, None)
            if entry is None or len(msg) == _REPLY.size:
                continue
            reply_to, args = entry
            try:
                reply_to(bytes(msg[_REPLY.size:]), *args)
            except Exception:
                log.exception("a worker's reply could not be sent")


# -- the worker process -------------------------------------------------------

class _Layout(LocalDataPath):
    """The data path of a worker: it moves no data, but lays out the files
    it creates as nfspd does (its stripe unit and layout generation)."""

    def __init__(self, data_dir, stripe_unit, layout_gen):
        super().__init__(data_dir)
        self.stripe_unit = stripe_unit
        self.layout_gen = layout_gen


class _NoReplaceFS(MetaFS):
    """A worker's MetaFS: a RENAME never replaces a name (that may take a
    file's last link: its purge and its NFSv4 opens are nfspd's)."""

    def rename(self, from_dir_fh, from_name, to_dir_fh, to_name, caller, replace=False):
        return super().rename(from_dir_fh, from_name, to_dir_fh, to_name, caller, replace=False)


def _no_purge(ino, seed):
    # Nothing a worker runs can take a file's last link (_NoReplaceFS, and
    # REMOVE is not steered here): were it to, scrub finds the data.
    log.error("a worker took the last link of inode %d: its data stays until "
              "`nfsp scrub --purge`", ino)


class _HandBack:
    """Steered calls this worker cannot answer alone, handed back to nfspd
    (which answers them from its own socket, through its own duplicate
    request cache), and remembered: a retransmission reaches this worker
    again, and must go the same way, whatever the file system says by then
    (a RENAME nfspd made would now fail here)."""

    def __init__(self, sock):
        self._sock = sock
        # Bounded and aged like the replies they stand for.
        self._sent = DuplicateRequestCache()

    @staticmethod
    def _key(ctx):
        return ctx.client, ctx.xid, args_checksum(ctx.call.args)

    def sent(self, ctx):
        """Whether this call (a retransmission) was handed back before."""
        return self._sent.lookup(self._key(ctx))[0] == reply_cache.DONE

    def __call__(self, ctx):
        """Hand the call to nfspd; the handler's result (no reply here)."""
        key = self._key(ctx)
        self._sent.begin(key)
        self._sent.finish(key, _HANDED_BACK)
        head = _CALL.pack(_KIND_UDP_CALL, 0, 0, socket.inet_aton(ctx.client[0]), ctx.client[1],
                          socket.inet_aton(ctx.local[0]), ctx.local[1])
        try:
            self._sock.sendmsg([_REPLY.pack(_HANDED_BACK), head, ctx.raw])
        except OSError as e:  # full: lost like a datagram; the retransmission comes back here
            log.debug("call from %s:%s not handed back: %s", *ctx.client, e)
        return NO_REPLY


def steered_procedures(hand_back):
    """The NFSv3 procedures a worker answers on its own socket
    (nfspd/steering.py), with what needs nfspd handed back to it: a CREATE
    that sets a size (it may truncate a file, whose data nfspd moves), a
    RENAME onto a name that exists."""
    table = {int(p): nfs3proc.PROCEDURES[p] for p in steering.STEERED}

    def replaced(proc, handler):
        return Procedure(proc.name, proc.args_type, proc.res_type, handler,
                         idempotent=proc.idempotent, failed=proc.failed,
                         error_type=proc.error_type or None)

    create = table[NFSPROC3.CREATE].handler
    rename = table[NFSPROC3.RENAME].handler

    def CREATE(ctx, args):
        how = args.how
        if (how.disc != createmode3.EXCLUSIVE and how.body.size is not None) or hand_back.sent(ctx):
            return hand_back(ctx)
        return create(ctx, args)

    def RENAME(ctx, args):
        if hand_back.sent(ctx):
            return hand_back(ctx)
        try:
            return rename(ctx, args)
        except TargetExists:
            return hand_back(ctx)

    table[NFSPROC3.CREATE] = replaced(table[NFSPROC3.CREATE], CREATE)
    table[NFSPROC3.RENAME] = replaced(table[NFSPROC3.RENAME], RENAME)
    return table


async def _serve(sock, udp, steered, exports, key, data_dir, stripe_unit, layout_gen, changes):
    datapath = _Layout(data_dir, stripe_unit, layout_gen)
    commit = GroupCommit()  # this worker's changes, flushed many to a flush

    def make_fs(path):
        return _NoReplaceFS(path, export_id_for_path(path), key, datapath, purge=_no_purge,
                            commit=commit, changes=changes)

    registry = ExportRegistry(exports, make_fs)
    registry.load()
    service = NfsService(registry, datapath)
    listings = Dispatcher([Program(NFS_PROGRAM, "nfs", {3: {
        p: nfs3proc.PROCEDURES[p] for p in (READDIR, READDIRPLUS)}}, service)])
    try:
        async with trio.open_nursery() as nursery:
            if steered:  # (else ``udp`` is nfspd's own socket, only to answer on)
                namespace = Dispatcher([Program(NFS_PROGRAM, "nfs",
                                                {3: steered_procedures(_HandBack(sock))},
                                                service)],
                                       DuplicateRequestCache())
                await nursery.start(serve_udp, udp, namespace, Limits())
                nursery.start_soon(_report, sock, namespace.counters, commit)
            await _send(sock, [_REPLY.pack(0)])
            await _handed_over(sock, udp, listings, registry)
            nursery.cancel_scope.cancel()
    finally:
        commit.close()


async def _handed_over(sock, udp, dispatcher, registry):
    """Answer the READDIR(PLUS) calls nfspd hands over, until it goes."""
    head_size = _CALL.size
    while True:
        try:
            msg = sock.recv(MAX_CALL)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not msg:
            return
        kind, call_id, tcp, cip, cport, lip, lport = _CALL.unpack_from(msg)
        if kind == _KIND_RELOAD:
            try:
                registry.reload()
            except Exception:
                log.exception("exports reload failed")
            continue
        ctx = CallContext((socket.inet_ntoa(cip), cport), (socket.inet_ntoa(lip), lport),
                          "tcp" if tcp else "udp")
        data = msg[head_size:]
        ctx.raw = data
        try:
            reply = dispatcher.handle_now(data, ctx)
        except Exception:
            log.exception("worker failed a call from %s", ctx.client)
            reply = None
        if type(reply) is Deferred:  # not for READDIR*: no reply rather than a hang
            reply = None
        if kind == _KIND_UDP_CALL:
            if reply is not None and udp is not None:
                try:
                    udp.sendmsg([reply], pktinfo.reply_from(ctx.local[0]), 0, ctx.client)
                except OSError as e:  # lost like a datagram: the client retransmits
                    log.debug("UDP reply to %s:%s not sent: %s", *ctx.client, e)
            continue
        try:
            await _send(sock, [_REPLY.pack(call_id), reply or b""])
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            await _send(sock, [_REPLY.pack(call_id)])  # too big to hand back: no reply


async def _report(sock, counters, commit):
    """Tell nfspd, when it changed, how many steered calls this worker has
    answered and what its flushes were (what `nfsp status` shows)."""
    told = None
    while True:
        await trio.sleep(REPORT_EVERY)
        now = (counters.calls, commit.batches, commit.waits, round(commit.seconds * 1e6))
        if now != told:
            told = now
            await _send(sock, [_REPLY.pack(_REPORT), _REPORTED.pack(*now)])


async def _send(sock, parts):
    while True:
        try:
            sock.sendmsg(parts)
            return
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


def main(argv=None):
    p = argparse.ArgumentParser(prog="nfspd.workers")
    p.add_argument("--exports", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--udp-fd", type=int, default=None)
    p.add_argument("--steered", action="store_true",
                   help="the --udp-fd socket is this worker's own (nfspd/steering.py)")
    p.add_argument("--stripe-unit", type=int, default=DEFAULT_STRIPE_UNIT)
    p.add_argument("--layout-gen", type=int, default=0)
    p.add_argument("--changes-fd", type=int, default=None)
    p.add_argument("--slot", type=int, default=1)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logs.setup("nfspd-worker", a.log_level, False)
    # nfspd's signals are nfspd's: a Ctrl-C to the group must not kill a
    # worker mid-reply; the end of its socket stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = socket.socket(fileno=a.fd)
    sock.setblocking(False)
    udp = None
    if a.udp_fd is not None:
        # This worker's own socket of nfspd's reuseport group
        # (nfspd/steering.py), kept by nfspd across the worker's restarts;
        # else nfspd's own, whose file description (and O_NONBLOCK) is
        # nfspd's too, only to send replies on.
        udp = socket.socket(fileno=a.udp_fd)
        udp.setblocking(False)
    with open(os.path.join(a.state_dir, "handle.key"), "rb") as f:
        key = f.read()  # nfspd made it before starting any worker
    try:
        changes = None if a.changes_fd is None else \
            SharedChanges(a.changes_fd, a.slot, a.processes)
        trio.run(_serve, sock, udp, a.steered, a.exports, key, a.data_dir, a.stripe_unit, a.layout_gen,
                 changes)
    except (BrokenPipeError, ConnectionResetError):
        pass


if __name__ == "__main__":
    main()
