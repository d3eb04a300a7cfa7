"""The metaserver's side of unlinkd (paper 5.5.2): the purge sink MetaFS calls
when a file's last link goes away, and the supervised unlinkd process.

The sink appends (inode, seed) to the purge journal and fdatasyncs it before
returning, i.e. before MetaFS answers the REMOVE or RENAME, then nudges unlinkd
over a local datagram socket. It never waits for unlinkd or for any iod, so a
REMOVE costs the same whatever the number of iods (one in-place 20-byte write
and its fdatasync: see common/runtime/purgejournal.py).

Wiring (nfspd/server.py), with --iods and ``--unlinkd spawn|external``:

    purges = open_purge_queue(config.state_dir)          # before the exports load
    MetaFS(path, ..., datapath, purge=purges)             # in _make_fs
    await nursery.start(spawn_unlinkd(purges.directory, iods_path, key_path).run)
                                                          # spawn only (the default)
    purges.close()                                        # at exit

With ``external`` the admin runs ``unlinkd --journal STATE_DIR/purge ...``
(it may start before or after nfspd); ``off`` passes no sink (nothing purges:
leaks until ``nfsp scrub --purge``).
"""

import logging
import os
import signal
import subprocess
import sys
import time

import trio

from common.runtime.purgejournal import JournalWriter
from common.runtime.purgewaker import Waker

log = logging.getLogger("nfspd.purge")

PURGE_DIR = "purge"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PurgeQueue:
    """Callable sink: ``queue(ino, seed)`` returns once the purge is durable."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self._writer = JournalWriter(self.directory)
        self._waker = Waker(self.directory)
        self.device = os.stat(self.directory).st_dev
        self.appended = 0

    def export_on(self, device, commits_all):
        """An export lives on ``device``, where a directory's fsync commits
        everything before it or not (``commits_all``: ext3/ext4 with a
        journal, MetaFS.dir_fsync_commits_all). If that is this journal's file
        system and it does, the journal grows by appending from now on: the
        group commit can then make a batch's records and its removals durable
        in one commit (appended_on). Not undone when the export goes: it costs
        only where such a batch cannot be had."""
        if commits_all and device == self.device and not self._writer.appending:
            self._writer.set_appending(True)

    def appended_on(self):
        """The device whose journal commit makes the records durable together
        with every change on it before them (the records are appended there),
        or None."""
        return self.device if self._writer.appending else None

    def __call__(self, ino, seed):
        # An OSError here (a full or failing metaserver disk) propagates to
        # MetaFS, which logs it: the datafiles then leak until `nfsp scrub`.
        self._writer.append(ino, seed)
        self.appended += 1
        self._waker.wake()

    def append_unsynced(self, ino, seed):
        """A purge for an ``async`` export's REMOVE: in the journal (unlinkd
        reads it from the page cache) but not flushed; a crash of the machine
        may lose it, leaking the data until `nfsp scrub`. wake() tells unlinkd
        after (the group commit: once for the REMOVEs of a loop turn)."""
        self._writer.append(ino, seed, sync=False)
        self.appended += 1

    def append_batch(self, records):
        """Many purges, durable with one flush (a group commit's); wake()
        tells unlinkd after."""
        for ino, seed in records:
            self._writer.append(ino, seed, sync=False)
        self._writer.sync()
        self.appended += len(records)

    def wake(self):
        self._waker.wake()

    @property
    def next_seq(self):
        return self._writer.next_seq

    def close(self):
        self._writer.close()
        self._waker.close()


def open_purge_queue(state_dir):
    """The sink for every MetaFS of this metaserver (one journal, shared)."""
    return PurgeQueue(os.path.join(state_dir, PURGE_DIR))


class UnlinkdProcess:
    """``await nursery.start(proc.run)``: runs unlinkd as a child and restarts it
    (with a growing, bounded delay) if it dies; SIGTERM then, after a bound,
    SIGKILL when the nursery is cancelled. Purges wait in the journal meanwhile,
    so a crashed unlinkd loses nothing."""

    def __init__(self, journal_dir, iods_path, key_path, stores_path=None, batch_max=None,
                 batch_delay=None, retry_max=None, log_level="info", python=sys.executable,
                 stop_timeout=10.0):
        self.journal_dir = os.path.abspath(journal_dir)
        self.stores_path = stores_path and os.path.abspath(stores_path)
        self.iods_path = os.path.abspath(iods_path)
        self.key_path = os.path.abspath(key_path)
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.retry_max = retry_max
        self.log_level = log_level
        self.python = python
        self.stop_timeout = stop_timeout
        self.process = None
        self.starts = 0

    def argv(self):
        argv = [self.python, "-m", "unlinkd.cli", "--journal", self.journal_dir,
                "--iods", self.iods_path, "--key", self.key_path,
                "--log-level", self.log_level, "--parent-pid", str(os.getpid())]
        if self.stores_path is not None:
            argv += ["--iod-stores", self.stores_path]
        if self.batch_max is not None:
            argv += ["--batch-max", str(self.batch_max)]
        if self.batch_delay is not None:
            argv += ["--batch-delay", str(self.batch_delay)]
        if self.retry_max is not None:
            argv += ["--retry-max", str(self.retry_max)]
        return argv

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        delay = 1.0
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        while True:
            started = time.monotonic()
            self.process = await trio.lowlevel.open_process(
                self.argv(), stdin=subprocess.DEVNULL, env=env)
            self.starts += 1
            log.info("unlinkd started (pid %d)", self.process.pid)
            if self.starts == 1:
                task_status.started(self)
            try:
                code = await self.process.wait()
            finally:
                if self.process.returncode is None:
                    with trio.CancelScope(shield=True):
                        await self._stop()
            if time.monotonic() - started > 60:
                delay = 1.0
            log.error("unlinkd exited with status %s; restarting in %.0fs (pending purges "
                      "wait in the journal)", code, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def reload(self):
        """Pass nfspd's SIGHUP on: unlinkd re-reads its key file."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGHUP)

    async def _stop(self):
        proc = self.process
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(self.stop_timeout):
            await proc.wait()
            return
        log.warning("unlinkd ignored SIGTERM for %gs; killing it", self.stop_timeout)
        proc.kill()
        await proc.wait()


def spawn_unlinkd(journal_dir, iods_path, key_path, **options):
    """The supervised child for ``nfspd --unlinkd spawn``; see UnlinkdProcess."""
    return UnlinkdProcess(journal_dir, iods_path, key_path, **options)
