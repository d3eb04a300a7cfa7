"""unlinkd: sends the purge journal to every iod (paper 5.5.2).

Tasks, in one trio nursery:
- intake: wakes on nfspd's datagrams (or a periodic rescan), reads the journal's
  tail and lets the Batcher decide what is released;
- one sender per iod: a persistent TCP connection; sends the released records
  it has not had acknowledged yet, batch_max at a time, one PURGE in flight;
  on any failure closes, backs off (bounded, jittered) and resends from its
  watermark. Iods progress independently: one down for hours holds back only
  itself (and the trimming of the journal);
- progress: persists the per-iod watermarks and trims segments every iod has
  acknowledged.
"""

import errno
import fcntl
import logging
import os
import random
import socket
import time

import trio

from common.iodproto import MAX_FILES, Op
from common.runtime import purgejournal, purgewaker
from common.runtime.iodclient import IodConnection, IodError, iod_name
from unlinkd.batching import Batcher

log = logging.getLogger("unlinkd")

# A PURGE frame must stay under iodproto.MAX_BODY with 64-bit inodes (19 bytes a pair).
MAX_BATCH = min(MAX_FILES, 32768)
LOCK = "unlinkd.lock"
REMIND = 600.0  # seconds between warnings about an iod that keeps failing
COALESCE_MAX = 0.05  # seconds: at most this long between a wake-up and the journal read


class Options:
    def __init__(self, batch_max=1024, batch_delay=0.2, retry_max=30.0, reply_timeout=120.0,
                 rescan=2.0, progress_delay=0.2, report_period=60.0):
        if not 1 <= batch_max <= MAX_BATCH:
            raise ValueError(f"batch_max must be in 1..{MAX_BATCH}")
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.retry_max = retry_max
        self.reply_timeout = reply_timeout
        self.rescan = rescan
        self.progress_delay = progress_delay
        self.report_period = report_period


class Stats:
    def __init__(self):
        self.batches = 0
        self.files = 0
        self.smallest = None
        self.largest = 0

    def add(self, n):
        self.batches += 1
        self.files += n
        self.smallest = n if self.smallest is None else min(self.smallest, n)
        self.largest = max(self.largest, n)

    def summary(self):
        if not self.batches:
            return "no PURGE sent"
        return (f"{self.batches} PURGE batches, {self.files} files, batch size "
                f"min {self.smallest} mean {self.files / self.batches:.0f} max {self.largest}")


class WrongStore(IodError):
    """The iod answers, but from a data store that is not its own: a PURGE it
    acknowledged would not have removed the stripes on its real store."""


class Peer:
    def __init__(self, host, port, acked):
        self.host, self.port = host, port
        self.name = iod_name(host, port)
        self.acked = acked
        self.up = None  # None: not tried yet
        self.wrong_store = None  # why its store is refused (logged once per reason)
        self.down_since = self.warned = 0.0
        self.stats = Stats()


class Backoff:
    def __init__(self, first, cap):
        self.first, self.cap = first, cap
        self.current = first

    def next(self):
        delay = self.current * random.uniform(0.5, 1.0)
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self):
        self.current = self.first


def take_lock(directory):
    """One unlinkd per journal; returns the held descriptor."""
    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise purgejournal.JournalError(errno.EBUSY, f"{directory}: another unlinkd serves this "
                                                f"journal") from None
    return fd


class Unlinkd:
    """``stores``: a common/runtime/iodstores.StoreCheck (each iod's data store
    checked at every connection, by nfspd's rule), or None: no check."""

    def __init__(self, directory, iods, keys, options=None, stores=None):
        if not iods:
            raise ValueError("no iods to purge on")
        self.directory = os.path.abspath(directory)
        self.keys = keys
        self.stores = stores
        self.options = options or Options()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = take_lock(self.directory)
        for name in os.listdir(self.directory):
            if name.startswith(".progress-"):  # a predecessor died saving its progress
                os.unlink(os.path.join(self.directory, name))
        # Durable: a record may be read before nfspd's flush has made it (and
        # its removal) durable; what is purged must survive a crash.
        self.reader = purgejournal.JournalReader(self.directory, durable=True)
        tail = self.reader.refresh()
        saved = purgejournal.load_progress(self.directory)
        self.peers = []
        for host, port in iods:
            name = iod_name(host, port)
            mark = saved.get(name, 0)
            if mark > tail:
                # The journal was recreated below this watermark: what it
                # covers now was never sent.
                log.warning("iod %s: saved progress %d lies beyond the journal's end %d; "
                            "resending everything", name, mark, tail)
                mark = 0
            self.peers.append(Peer(host, port, max(mark, self.reader.oldest)))
        # Whatever the journal holds at start is overdue: release it at once.
        self.batcher = Batcher(self.options.batch_max, self.options.batch_delay, released=tail)
        self.stats = Stats()
        self._journal_lock = trio.Lock()
        self._released = trio.Event()
        self._wake = trio.Event()
        self._dirty = trio.Event()
        self._saved = None

    # -- journal access (disk I/O in a worker thread, one at a time) -------------

    async def _journal(self, fn, *args):
        async with self._journal_lock:
            return await trio.to_thread.run_sync(fn, *args)

    # -- tasks ----------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        sock = await self._bind_wake_socket()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, sock)
                nursery.start_soon(self._intake)
                nursery.start_soon(self._progress)
                nursery.start_soon(self._report)
                for peer in self.peers:
                    nursery.start_soon(self._serve, peer)
                log.info("purging on %d iods (%s); journal %s, batches of up to %d files or "
                         "after %gs of quiet; %d records pending", len(self.peers),
                         ", ".join(p.name for p in self.peers), self.directory,
                         self.options.batch_max, self.options.batch_delay,
                         max(self.backlog().values()))
                task_status.started(self)
        finally:
            sock.close()
            try:
                os.unlink(purgewaker.socket_path(self.directory))
            except OSError:
                pass
            self._save_progress()
            log.info("stopping: %s", self.stats.summary())

    async def _bind_wake_socket(self):
        path = purgewaker.socket_path(self.directory)
        try:
            os.unlink(path)  # left by a predecessor; we hold the lock
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with purgewaker.ShortPath(path) as addr:
            await sock.bind(addr)
        os.chmod(path, 0o600)
        return sock

    async def _listen(self, sock):
        while True:
            await sock.recv(64)
            self._wake.set()

    async def _intake(self):
        opts = self.options
        # Wake-ups within ``coalesce`` of one another are one journal read.
        # nfspd wakes us once per event-loop turn that removed something: with
        # one client removing files that is once per REMOVE, and a read (a
        # thread hop and a look at the segments) per wake-up cost unlinkd
        # about 0.2 ms of CPU per removed file, a quarter of a core at 1,100
        # REMOVEs/s, on the cores nfspd needs. Arrival times are then known to
        # within ``coalesce``, small against batch_delay.
        coalesce = min(opts.batch_delay / 4, COALESCE_MAX)
        while True:
            deadline = self.batcher.deadline()
            timeout = opts.rescan if deadline is None else min(opts.rescan,
                                                               deadline - trio.current_time())
            with trio.move_on_after(max(0.0, timeout)):
                await self._wake.wait()
                await trio.sleep(coalesce)
            self._wake = trio.Event()
            tail = await self._journal(self.reader.refresh)
            now = trio.current_time()
            if self.reader.segments:
                self.batcher.rebase(self.reader.oldest)
            self.batcher.arrived(tail, now)
            if self.batcher.release(now):
                self._released.set()
                self._released = trio.Event()

    async def _serve(self, peer):
        opts = self.options
        backoff = Backoff(0.1, opts.retry_max)
        while True:
            conn = None
            try:
                conn = await IodConnection.connect(peer.host, peer.port, self.keys)
                await self._check_store(peer, conn.pong.store)
                if peer.up is False:
                    log.info("iod %s: reachable again; %d purges to send it", peer.name,
                             self.backlog()[peer.name])
                peer.up = True
                while True:
                    while peer.acked >= self.batcher.released:
                        await self._released.wait()
                    files, stop = await self._journal(self.reader.read_batch, peer.acked,
                                                      self.batcher.released, opts.batch_max)
                    if files:
                        t0 = time.monotonic()
                        answer = await conn.call(Op.PURGE, opts.reply_timeout, files=files)
                        if answer.status != 0:
                            raise IodError(f"{peer.name}: PURGE failed: "
                                           f"{errno.errorcode.get(answer.status, answer.status)} "
                                           f"{answer.message}")
                        log.debug("iod %s: PURGE of %d files acknowledged in %.1f ms",
                                  peer.name, len(files), (time.monotonic() - t0) * 1e3)
                        peer.stats.add(len(files))
                        self.stats.add(len(files))
                    peer.acked = stop
                    backoff.reset()
                    self._dirty.set()
            except WrongStore as e:
                if str(e) != peer.wrong_store:
                    peer.wrong_store = str(e)
                    log.error("%s; its %d purges are held (not counted as done) until its "
                              "own store is back, or `nfsp accept-iod-store %s` says that "
                              "data is gone", e, self.backlog()[peer.name], peer.name)
                peer.up = False
            except IodError as e:
                now = time.monotonic()
                if peer.up is not False:
                    peer.down_since = peer.warned = now
                    log.warning("%s; retrying with backoff (up to %gs), pending purges kept",
                                e, opts.retry_max)
                elif now - peer.warned >= REMIND:
                    peer.warned = now
                    log.warning("%s; still failing after %.0f min, %d purges waiting for it",
                                e, (now - peer.down_since) / 60, self.backlog()[peer.name])
                else:
                    log.debug("%s", e)
                peer.up = False
            finally:
                if conn is not None:
                    await conn.aclose()
            await trio.sleep(backoff.next())

    async def _check_store(self, peer, store):
        if self.stores is None:
            return
        why = await trio.to_thread.run_sync(self.stores.check, peer.name, store)
        if why is not None:
            raise WrongStore(f"iod {peer.name} {why}")
        if peer.wrong_store is not None:
            peer.wrong_store = None
            log.warning("iod %s serves its own data store again; sending its purges", peer.name)

    async def _progress(self):
        while True:
            await self._dirty.wait()
            await trio.sleep(self.options.progress_delay)  # coalesce many acks into one write
            self._dirty = trio.Event()
            acked = self._marks()
            await self._journal(self._persist, acked)

    def _marks(self):
        return {p.name: p.acked for p in self.peers}

    def _persist(self, acked):
        if acked != self._saved:
            purgejournal.save_progress(self.directory, acked)
            self._saved = acked
        trimmed = self.reader.trim(min(acked.values()))
        if trimmed:
            log.debug("trimmed %d journal segments acknowledged by every iod", trimmed)

    def _save_progress(self):
        try:
            acked = self._marks()
            if acked != self._saved:
                purgejournal.save_progress(self.directory, acked)
                self._saved = acked
        except OSError as e:
            log.error("cannot save progress (the next start resends): %s", e)

    async def _report(self):
        last = 0
        while True:
            await trio.sleep(self.options.report_period)
            if self.stats.files != last:
                last = self.stats.files
                down = [p.name for p in self.peers if p.up is False]
                log.info("%s%s", self.stats.summary(),
                         f"; unreachable: {', '.join(down)}" if down else "")

    def backlog(self):
        oldest = self.reader.oldest
        return {p.name: self.batcher.tail - max(p.acked, oldest) for p in self.peers}
