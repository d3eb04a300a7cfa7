"""Where the data of regular files goes: the DataPath interface and its local implementation.

MetaFS hands every data operation to a DataPath with the file's Metafile (seed,
real size, stripe parameters) and inode; a DataPath never sees names or handles.
LocalDataPath keeps the data in a DataStore in a local directory (nfspd
without --iods); nfspd/iodpath.py's IodDataPath stripes it over iods.

Besides the calls below, a DataPath may forward (``forwards`` True): then the
NFS services hand READ/WRITE over UDP to ``forward_read``/``forward_write``
and the iod answers the client itself (see nfspd/iodpath.py).
"""

import errno
import logging
import os
import queue
import threading

import trio

from common.runtime.datastore import DataStore

log = logging.getLogger(__name__)


class DataPath:
    """Interface. Offsets and sizes are those of the real file."""

    forwards = False  # whether forward_read/forward_write exist (iods answer UDP clients)

    def iod_count(self, meta) -> int:
        """Over how many data servers the file is striped (1: no striping)."""
        return 1

    def ready(self, meta, offset, length) -> None:
        """Raise OSError (EAGAIN: the client should try again later) if the
        data servers holding [offset, offset+length) cannot take a request
        now; called before a WRITE changes any metadata."""

    def max_io(self, transport):
        """The largest READ/WRITE this data path wants over ``transport``
        ("udp"/"tcp"), or None for the NFS service's default."""
        return None

    @property
    def verifier(self) -> bytes:
        """8-byte write verifier: changes whenever unstable data may have been lost
        (at least at every process start)."""
        raise NotImplementedError

    async def read(self, meta, ino, offset, count) -> bytes:
        """The file's bytes in [offset, offset+count) clipped to meta.size, zeros
        for holes."""
        raise NotImplementedError

    async def write(self, meta, ino, offset, data, stable) -> None:
        """stable: durable before returning; otherwise durable after commit()."""
        raise NotImplementedError

    async def commit(self, meta, ino) -> None:
        raise NotImplementedError

    async def truncate(self, meta, ino, size) -> None:
        """Drop data at and beyond size (later reads there see zeros)."""
        raise NotImplementedError

    def purge(self, ino, seed) -> None:
        """The file is gone: forget its data. Only enqueues; never blocks."""
        raise NotImplementedError

    def space(self):
        """(total, free, available) bytes for FSSTAT, or None if unknown."""
        return None


class LocalDataPath(DataPath):
    """The data in a DataStore under ``directory``; blocking calls run in worker
    threads, at most ``max_threads`` at once."""

    def __init__(self, directory, max_threads=16, max_open=256):
        self.store = DataStore(directory, max_open=max_open)
        # Whether the store may hold a datafile: not when it is empty and
        # nothing was written since (nfspd with iods: every file removed is
        # handed to purge(), and its stat was ~3% of a REMOVE's CPU).
        self._may_hold = _has_datafiles(self.store.directory)
        self._verifier = os.urandom(8)
        self._max_threads = max_threads
        self._limiter = None
        self._purges = queue.Queue()
        # Started now, as root: a thread inherits the credentials of the thread
        # that starts it, and MetaFS switches the event loop thread's.
        self._purger = threading.Thread(target=self._purge_loop, name="nfsp-purge", daemon=True)
        self._purger.start()

    @property
    def verifier(self):
        return self._verifier

    def _run(self, fn, *args):
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self._max_threads)
        return trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _own(self, meta):
        # A file created while nfspd ran with --iods has its data there: reading
        # the local store would give zeros, i.e. wrong data, so refuse.
        if meta.layout_gen != 0:
            raise OSError(errno.EIO, f"data lives on iods (layout generation "
                                     f"{meta.layout_gen}); nfspd must run with --iods")

    async def read(self, meta, ino, offset, count):
        self._own(meta)
        count = max(0, min(count, meta.size - offset))
        if count == 0:
            return b""
        data = await self._run(self.store.read, ino, meta.seed, offset, count)
        if len(data) < count:
            data += bytes(count - len(data))
        return data

    async def write(self, meta, ino, offset, data, stable):
        self._own(meta)
        self._may_hold = True  # (before the thread makes the file: purge() runs here)
        await self._run(self.store.write, ino, meta.seed, offset, data, bool(stable))

    async def commit(self, meta, ino):
        self._own(meta)
        await self._run(self.store.commit, ino, meta.seed)

    async def truncate(self, meta, ino, size):
        self._own(meta)
        await self._run(self.store.truncate, ino, meta.seed, size)

    def purge(self, ino, seed):
        # With iods, every file removed calls this too (its data may be an
        # older file's, here): most have no datafile here, and a stat on this
        # thread is cheaper than waking the purge thread for nothing (a third
        # of nfspd's futex calls under REMOVEs, and the GIL handed back and
        # forth). A write landing after the stat leaks, as one landing after
        # the purge thread's unlink would; scrub finds both.
        if not self._may_hold or not os.path.lexists(self.store.path(ino, seed)):
            return
        self._purges.put((ino, seed))

    def _purge_loop(self):
        while True:
            ino, seed = self._purges.get()
            try:
                self.store.purge(ino, seed)
            except OSError as e:
                # A leak at worst; the store's list() lets a scrubber find it.
                log.error("purge of inode %d seed %#x failed: %s", ino, seed, e)
            finally:
                self._purges.task_done()

    def wait_purged(self):
        """Block until every purge enqueued so far is done (tests, shutdown)."""
        self._purges.join()

    def space(self):
        total, free, avail, *_ = self.store.statvfs()
        return total, free, avail


def _has_datafiles(directory):
    # Datafiles live in two levels of two-hex-digit directories (DataStore._rel).
    with os.scandir(directory) as entries:
        return any(len(e.name) == 2 and e.is_dir(follow_symlinks=False) for e in entries)
