"""Group commit: namespace changes made durable many to a flush (issue 15).

An NFS server answers a CREATE, REMOVE, RENAME, MKDIR... only once the change
would survive a crash of the machine (exports(5) ``sync``, the default). A
change is made at once (later calls see it) and noted here: the metafile whose
record must be on disk, the directory whose entries changed, the purge whose
journal record must be durable. Its reply waits (``await stable(ticket)``)
until a flush covers it. The first call to wait lets the calls already
received run first (and note their changes), then flushes: one flush covers
the changes of every call that arrived while the previous one ran.

Who waits is usually a transport's receive loop, not a task per call: it
parks the calls that wait only for this flush until its batch of received
datagrams or records is done, then waits once for them all, the other loops
(TCP connections, the other sockets) getting their turn to note their changes
meanwhile, and answers them in arrival order (nfspd/parked.py).

The flush runs on the event loop's thread. Measured on ext4 here, a flush in
a worker thread gained nothing: while the journal commits, the loop's own
namespace calls (open, link, unlink start journal handles) wait for it anyway
(open() took 380 us on average during flushes), and each trip to a thread and
back cost 120-200 us on this busy 2-core machine. Over NFS (loopback, sync
export, 1 and 8 clients) the loop flushed up to 40% more CREATE+REMOVE and
RENAME per second than the thread, at 20-35% less CPU per call. Tried again
(issue 15, a flush in a worker thread with the loop filling the next batch
meanwhile, MetaFS driven in-process, 6 alternating 2 s runs each): CREATE+
REMOVE pairs/s best 2,081 vs 2,313 on the loop at 8 callers, 887 vs 1,052 at
one. Callers that wait for their reply before the next call are all in the
batch being flushed, so the loop has little to do meanwhile; what the thread
adds is the GIL handed back and forth around each of its system calls.
Tried a third time over NFS (8 clients, TCP, the receive loops answering
on while a trio.to_thread flush ran, journalled ext4 on a loop device):
the calls are not what waits (two processes here, creating and removing in
one directory while the other commits: 15 us median per create+unlink
against 12 without the commits), but the flush is. In the thread it took
1.6 ms against 0.9 on the loop (each directory's fsync now committed the
changes made meanwhile; 1.2 ms with one fsync per file system and none after
the purge journal's commit), the round trip to the thread another 0.4-0.6
ms, and each flush covered 4.0 calls instead of 5.1: 908-1,228 against
1,432-1,527 pairs/s, 246-266 against 142 us of CPU per call. A smaller
switch interval (50 us) changed nothing. A fourth time without a thread:
the fsyncs through Linux AIO (io_submit, IOCB_CMD_FDSYNC/FSYNC, an eventfd
in trio's epoll; one flush in flight, the next batch filled meanwhile, the
parked calls answered by a task per loop pass). Same ground, 8 clients,
TCP: the flush took 1.49-1.73 ms against 0.88-0.95, 4.5 calls each against
5.0-5.6, 1,022-1,169 against 1,444-1,502 pairs/s, 186-203 against 144-163 us
of CPU per call. With the loop waiting for it (no pipelining) AIO's flush
took 1.08 ms against 0.99: the hop to the kernel's worker. Answering the
parked calls from tasks with the flush on the loop: within noise (1,269-
1,311 against 1,250-1,356 pairs/s), 10-20 us more CPU per call.

Why each overlap lost here: this VM's disk is apparently served on the
cores its two vCPUs run on. An fdatasync on the loop ext4 took 0.35-0.41 ms (median of
400) with the machine otherwise idle, 0.27 ms with one vCPU kept busy by a
SCHED_IDLE spinner (which gives way to any other task), and 4.1 ms with
both kept busy (two runs each): the device's work waits for a vCPU to
halt. Whatever runs during a flush, the next batch's calls included,
lengthens it. Where the disk has cores of its own, overlapping may pay.

A flush, in this order:

1. new metafiles' pages written out (sync_file_range: all started, then all
   waited for), so that their blocks are allocated in the journal transaction
   the directories' fsync commits. Only those whose record is in data: a
   record in its attribute (common/runtime/metarecord.py) is metadata, in
   that transaction already, and such a metafile is not noted at all where
   that fsync commits everything (3);
2. a file system where a symlink or device node was made and where its
   directory's fsync would not write the new inode (no journal,
   nfspd/fs/journal.py) synced whole, once;
3. each changed directory fsynced once (on ext4 and xfs the first commits the
   journal with every change before it, the others find it done), through a
   descriptor kept open for it (DIRS_KEPT);
4. each metafile fsynced (what POSIX asks; not fdatasynced, which need not
   write an attribute), except on ext3/ext4 with a journal where a directory
   was fsynced in 3: that fsync committed the whole transaction, the
   metafiles' blocks with it (nfspd/fs/journal.py), and each would only
   flush the device's cache again. Measured (with fdatasyncs) on a
   journalled ext4 on a loop device (NFSv3 over TCP, 8 clients, sync
   export, 3 alternating rounds): CREATE+REMOVE pairs/s 880-1,020 with them,
   1,186-1,219 without;
5. purges appended to the purge journal with one fdatasync (after 3: a
   removal must be durable before its data is handed over, or a crash could
   bring back a file whose data was purged), then unlinkd woken (DEFER
   later, once for the purges of that time).

   Except where that fdatasync commits the batch itself: the journal grows
   by appending (nfspd/purgequeue.py) on the one file system all the
   batch's changes are on, an ext3/ext4 with a journal. The records'
   fdatasync then commits jbd2's running transaction, which holds the
   records' new length and every change made before them, the removals
   included: the purges go first (after 1) and the directories' fsyncs find
   nothing left to commit. One commit instead of two; a record becomes
   visible after a crash only with its removal. Measured (NFSv3, sync
   export, 8 clients, CREATE+REMOVE, journalled ext4, state directory on
   it, 2 alternating rounds): over TCP flush 1.24-1.36 -> 0.96-0.97 ms,
   1,031-1,099 -> 1,275-1,289 pairs/s; over UDP (the same order, tried
   before unlinkd's part) 1,354-1,371 -> 1,452-1,492. unlinkd, which could
   read the records before that commit, syncs them itself before it acts
   on them (common/runtime/purgejournal.py).

A kill -9 of nfspd loses nothing the kernel already has (the page cache
survives the process), so the flush is for the machine's crash; what it costs
is the journal commit, once per batch instead of once or twice per call.

A flush that fails (EIO from the disk) fails the calls waiting on it (IO);
their changes may or may not be durable.
"""

import collections
import logging
import os
import queue
import threading
import time

import trio

from common.runtime import idlewait
from nfspd.fs.syscalls import finish_writeback, proc_path, start_writeback, syncfs

log = logging.getLogger(__name__)


# Directories kept open for reading between flushes (fsync needs such a
# descriptor; the handle cache holds O_PATH ones): a dup, and a reopening
# through /proc and a close at every flush, were four of a CREATE's system calls.
DIRS_KEPT = 256
CLOSE_LATER = 1024  # removed objects' descriptors waiting to be closed (close_later)
CLOSER_BATCHES = 4  # batches of them handed to the closing thread, not yet closed
# How long removed objects' descriptors wait to be closed, and unlinkd to be
# woken, so that one hand-over serves every REMOVE of that time (close_later).
DEFER = 0.01


class GroupCommit:
    """``batches`` and ``changes`` count the flushes and what they covered;
    ``waits`` the calls whose reply waited for a flush (stable() awaited) and
    ``seconds`` the time the flushes took: what ``sync`` costs, for `nfsp
    status` (more waits per flush, fewer flushes per call)."""

    def __init__(self):
        self._files = {}     # (dev, ino) -> our dup of an fd on a metafile
        self._dirs = {}      # (dev, ino) -> a readable fd on a directory (one of _kept)
        self._whole = {}     # dev -> one of _dirs, on a file system to syncfs (new_inode)
        self._committing = set()  # devs where a directory's fsync commits everything before
        self._kept = collections.OrderedDict()  # (dev, ino) -> readable fd, LRU
        self._drop = []      # of _kept: removed directories to close once flushed
        self._purges = {}    # sink -> [(ino, seed)]
        self._to_wake = []   # sinks given unsynced purges since they were woken
        self._closing = []   # last descriptors of removed objects (close_later)
        self._closer = None  # their batches, for the closing thread
        self._filling = 1    # the batch changes are noted in now
        self._stable = 0     # every batch up to this one has been flushed
        self._failed = {}    # batch -> the error its flush raised (recent ones)
        self.batches = 0
        self.changes = 0
        self.waits = 0
        self.seconds = 0.0

    # -- noting changes --------------------------------------------------------------

    def metafile(self, fd, st):
        """A metafile whose content must be durable (one just made)."""
        key = (st.st_dev, st.st_ino)
        if key not in self._files:
            self._files[key] = os.dup(fd)
        self.changes += 1

    def directory(self, fd, st, commits_all=False):
        """A directory whose entries changed (fd may be O_PATH); ``commits_all``
        if its fsync commits every change before it on its file system, the
        metafiles written out included (nfspd/fs/journal.py)."""
        if commits_all:
            self._committing.add(st.st_dev)
        key = (st.st_dev, st.st_ino)
        if key not in self._dirs:
            kept = self._kept
            rfd = kept.get(key)
            if rfd is None:
                rfd = os.open(proc_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                kept[key] = rfd
                if len(kept) > DIRS_KEPT:
                    for old in kept:
                        if old not in self._dirs:
                            os.close(kept.pop(old))
                            break
            else:
                kept.move_to_end(key)
            self._dirs[key] = rfd
        self.changes += 1

    def new_inode(self, dir_fd, dir_st):
        """An inode made in the directory dir_fd (stat dir_st) that cannot be
        fsynced (a symlink, a device node) on a file system where the
        directory's fsync does not write it: the flush syncs the whole file
        system, once for all such changes (nfspd/fs/journal.py)."""
        key = (dir_st.st_dev, dir_st.st_ino)
        if key not in self._dirs:  # (usually noted already, as the change it is)
            self.directory(dir_fd, dir_st)
        self._whole[dir_st.st_dev] = self._dirs[key]

    def forget(self, st):
        """A directory was removed: its kept descriptor goes (once flushed,
        if the batch being filled has it)."""
        key = (st.st_dev, st.st_ino)
        if key in self._dirs:
            self._drop.append(key)
            return
        rfd = self._kept.pop(key, None)
        if rfd is not None:
            os.close(rfd)

    def close(self):
        fds, self._closing = self._closing, []
        _close_all(fds)
        for rfd in self._kept.values():
            os.close(rfd)
        self._kept.clear()

    def purge(self, sink, ino, seed):
        """Hand (ino, seed) to the purge sink once the batch's removals are
        durable."""
        self._purges.setdefault(sink, []).append((ino, seed))

    def unsynced(self, sink, ino, seed):
        """An ``async`` export's purge: appended to the sink's journal now
        (unflushed; the page cache keeps it through a kill -9 of nfspd), its
        reader woken DEFER later, one wake-up for every purge of that time.
        Each wake-up costs unlinkd a journal read, on the cores the REMOVEs
        need: one per REMOVE was a sixth of nfspd's time and more of
        unlinkd's under 8 clients; one per loop turn still was one per
        REMOVE for a client alone (see close_later)."""
        sink.append_unsynced(ino, seed)
        self._wake_later(sink)

    def _wake_later(self, sink):
        if getattr(sink, "wake", None) is None or sink in self._to_wake:
            return
        self._to_wake.append(sink)
        if len(self._to_wake) == 1:
            try:
                trio.lowlevel.spawn_system_task(self._wake_soon)
            except RuntimeError:  # no event loop: at once
                self._wake_now()

    async def _wake_soon(self):
        await trio.sleep(DEFER)
        self._wake_now()

    def _wake_now(self):
        sinks, self._to_wake = self._to_wake, []
        for sink in sinks:
            try:
                sink.wake()
            except Exception:
                log.exception("waking the purge sink failed")

    def close_later(self, fd):
        """Close the last descriptor of a removed object in a thread of its
        own, one batch per DEFER, not inside REMOVE. That close frees the
        inode, and with it the metafile's block: ~190 us here, most of it the
        synchronous discard of a file system mounted with ``discard``, which
        ganesha's empty files never pay. Inside REMOVE it was in every
        reply's latency; in the thread it waits for the device without the
        GIL while the loop goes on (8 clients, alternating with closes made
        on the loop after the replies: CREATE+REMOVE pairs/s 1,766-1,822 vs
        1,662-1,670 under sync; those had gained 3-5% under sync and 10%
        under async over closes inside REMOVE). One hand-over per close had
        been slower than closing on the loop: the batch is what pays. The
        batch need not wait for the flush (the loop does not wait for the
        thread): waiting for it measured the same within noise. At most
        CLOSE_LATER wait, and CLOSER_BATCHES batches for the thread;
        beyond, closed at once.

        A batch per loop turn was still a hand-over per REMOVE for a client
        alone, and a wake-up of unlinkd. A batch and a wake-up per DEFER
        (alternating, NFSv3 over TCP, journalled ext4, 2 rounds), nfspd's
        CPU per CREATE or REMOVE: async, one client 217-227 -> 160-172 us
        (1,329-1,396 -> 1,475-1,589 pairs/s), 8 clients 109 -> 101 us (rate
        unchanged); sync, 368-373 -> 343-347 us and 170-175 -> 154-156 us
        (8 clients: 1,120-1,249 -> 1,235-1,300 pairs/s).
        """
        closing = self._closing
        closing.append(fd)
        if len(closing) > CLOSE_LATER:
            self._close_now()
        elif len(closing) == 1:
            try:
                trio.lowlevel.spawn_system_task(self._close_soon)
            except RuntimeError:  # no event loop: at once
                self._close_now()

    async def _close_soon(self):
        await trio.sleep(DEFER)
        self._close_now()

    def _close_now(self):
        fds, self._closing = self._closing, []
        if not fds:
            return
        if self._closer is None:
            self._closer = queue.Queue(maxsize=CLOSER_BATCHES)
            threading.Thread(target=_closer, args=(self._closer,), name="nfsp-closer",
                             daemon=True).start()
        try:
            self._closer.put_nowait(fds)
        except queue.Full:
            _close_all(fds)

    def ticket(self):
        """What stable() takes to wait for every change noted so far; None
        when nothing noted waits for a flush."""
        if self._files or self._dirs or self._purges:  # (_whole: within _dirs)
            return self._filling
        return None

    # -- flushing --------------------------------------------------------------------

    async def stable(self, ticket):
        """Return once the batch ``ticket`` (and every one before) is durable;
        OSError if its flush failed."""
        self.waits += 1
        if self._stable < ticket:
            if not idlewait.quiet():
                # Calls already received get to note their changes first: the
                # other receive loops run their batch (two passes: a loop
                # woken with this one may run after it in the same pass).
                await trio.sleep(0)
                await trio.sleep(0)
            if self._stable < ticket:
                self.flush_now()
        error = self._failed.get(ticket)
        if error is not None:
            raise error

    def _take(self):
        number = self._filling
        self._filling += 1
        batch = self._files, self._dirs, self._whole, self._committing, self._purges
        self._files, self._dirs, self._whole, self._purges = {}, {}, {}, {}
        self._committing = set()
        return number, batch

    def _dropped(self):
        drop, self._drop = self._drop, []
        for key in drop:
            rfd = self._kept.pop(key, None)
            if rfd is not None:
                os.close(rfd)

    def flush_now(self):
        """Flush every change noted so far, now."""
        number, (files, dirs, whole, committing, purges) = self._take()
        began = time.monotonic()
        try:
            datasync = [fd for (dev, _), fd in files.items() if dev not in committing]
            _write_out(files.values())
            if _purges_commit_batch(purges, files, dirs, committing):
                self._purge(purges)
                _sync(dirs.values(), whole.values(), datasync)
            else:
                _sync(dirs.values(), whole.values(), datasync)
                self._purge(purges)
            for sink in purges:  # (their records durable: unlinkd may read them)
                self._wake_later(sink)
        except OSError as e:
            self._fail(number, files, dirs, e)
        finally:
            self.seconds += time.monotonic() - began
            self._done(number, files)

    def _fail(self, number, files, dirs, e):
        log.error("group commit of %d files, %d directories failed: %s",
                  len(files), len(dirs), e)
        if len(self._failed) > 64:
            self._failed.clear()
        self._failed[number] = e

    def _done(self, number, files):
        for fd in files.values():
            os.close(fd)
        self._dropped()
        self.batches += 1
        self._stable = number

    @staticmethod
    def _purge(purges):
        """After the removals are durable: a removal must be durable before its
        data is handed over, or a crash could bring back a file whose data was
        purged. One journal flush for the batch (the sink's append_batch)."""
        for sink, records in purges.items():
            # A purge that fails only leaks data (`nfsp scrub` finds it), as
            # in Objects.gone.
            try:
                batch = getattr(sink, "append_batch", None)
                if batch is not None:
                    batch(records)
                else:
                    for ino, seed in records:
                        sink(ino, seed)
            except Exception:
                log.exception("purge of %d files failed", len(records))


def _write_out(files):
    """Step 1 of the module's docstring."""
    for fd in files:
        start_writeback(fd)
    for fd in files:
        finish_writeback(fd)


def _sync(dirs, whole, datasync):
    """Steps 2 to 4 of the module's docstring; ``datasync``: the files the
    directories' fsyncs do not commit."""
    for fd in whole:
        syncfs(fd)
    for fd in dirs:
        os.fsync(fd)
    for fd in datasync:
        os.fsync(fd)  # (a record in the attribute is metadata: not fdatasync)


def _purges_commit_batch(purges, files, dirs, committing):
    """Whether the purge journal's own fdatasync commits the whole batch
    (step 5's exception): every change of it on one file system, whose
    commit takes everything before it, and every sink appending there."""
    if not purges:
        return False
    devs = {dev for dev, _ in dirs}
    devs.update(dev for dev, _ in files)
    if len(devs) != 1:
        return False
    dev = next(iter(devs))
    return dev in committing and all(_appended_on(sink) == dev for sink in purges)


def _appended_on(sink):
    appended_on = getattr(sink, "appended_on", None)
    return None if appended_on is None else appended_on()


def _closer(batches):
    while True:
        _close_all(batches.get())


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError as e:  # (the object is gone either way)
            log.warning("closing a removed object's descriptor failed: %s", e)
