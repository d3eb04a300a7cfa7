"""READ, WRITE and COMMIT of regular files, in two halves.

The data of a regular file is not in its metafile but behind a DataPath
(nfspd/datapath.py: a local store, or stripes on iods, nfspd/iodpath.py). A
READ or WRITE is a plan (permission, a pending truncation carried out, the
size cut or grown, the attributes to reply with: here, on the metadata) and
then the data (the data path), so that over UDP an iod can send the reply built
from the plan. The ``*_now`` variants are the plans that need no waiting,
which is every plan but the rare one that has a truncation to carry out first.

A truncation (SETATTR size) only records ``trunc_to`` in the metafile; the
stripes are cut before data next moves (settle), so that bytes cut off earlier
never reappear when the file grows again. The cut waits for the WRITEs planned
on the file before it that may still be on their way (nfspd/fs/inflight.py:
the order the two were planned in is the order they land in); WRITEs planned
after it wait for the cut.

A READ advances the file's atime as a local read(2) would, under the export
file system's own mount options (relatime, strictatime, noatime): the kernel
decides, on a one-byte read of the metafile with O_NOATIME lifted. Every other
read of a metafile (the metaserver's own bookkeeping) keeps O_NOATIME and never
moves it; setting atime with utimensat instead would move ctime too, and make
every client drop its cache after each read.
"""

import collections
import fcntl
import itertools
import os
import stat
import time

import trio

from common.metafile import DEFAULT_STRIPE_UNIT, MAX_SIZE, Metafile, new_seed
from common.nfs3 import nfsstat3
from common.striping import clamp_read
from nfspd.fs.access import check_writable, may_read, may_write
from nfspd.fs.inflight import WritesInFlight
from nfspd.fs.objects import clear_setid
from nfspd.fs.syscalls import ST_NOATIME, ST_RELATIME, set_times
from nfspd.fs.types import (FILE_SYNC, SET_TO_SERVER_TIME, UNSTABLE, FsError, ReadPlan, Wcc,
                            WccAttr, WritePlan, fs_error_of, maps_oserror)


_RELATIME_WINDOW_NS = 24 * 3600 * 1_000_000_000
# How many recent write plans are remembered (file, order, end), so that a
# failed WRITE knows what was written after it; older failures keep the size.
_RECENT_WRITES = 4096


class FileIO:
    """The file I/O of one export (nfspd/fs/objects.py ``objects``) over one
    data path. Handles are bytes, callers nfspd/fs/types.py Callers; every
    method raises FsError (BADHANDLE, STALE, ISDIR or INVAL for what is not a
    regular file, ACCES, ROFS, FBIG, IO, JUKEBOX when a data server cannot
    take a write now)."""

    def __init__(self, objects, datapath, changed=None):
        self.datapath = datapath
        self._changed = changed  # attrcache.Changes.made, for a READ's atime
        self._objects = objects
        self._open = objects.open
        self._attr = objects.attr
        self._metafiles = metafiles = objects.metafiles
        self._metafile = metafiles.get
        self._settling = {}  # (dev, ino) -> trio.Lock
        self._stripe_unit = getattr(datapath, "stripe_unit", DEFAULT_STRIPE_UNIT)
        self._layout_gen = getattr(datapath, "layout_gen", 0)
        self._write_seq = itertools.count()
        self._recent_writes = collections.deque(maxlen=_RECENT_WRITES)
        # A forward unanswered after forward_ttl is forgotten by the data path
        # too; a relay ends within its own timeout (sync_timeout at most).
        self._in_flight = WritesInFlight(
            getattr(datapath, "forward_ttl", 10.0), 2 * getattr(datapath, "sync_timeout", 30.0),
            getattr(datapath, "counters", None))
        mount_flags = os.fstatvfs(objects.root_fd).f_flag
        self._atime = ("noatime" if mount_flags & ST_NOATIME else
                       "relatime" if mount_flags & ST_RELATIME else "strictatime")

    def new_metafile(self, create_verf=None):
        """The metafile of a new, empty file: a fresh seed, laid out as the
        data path lays out files now, and no data anywhere yet (no_data: its
        removal purges nothing, common/metafile.py)."""
        return Metafile(new_seed(), 0, self._stripe_unit, self._layout_gen,
                        create_verf=create_verf, no_data=True)

    def space(self):
        """(total, free, available) bytes where the data lives, or None when
        the data path does not know (then the metadata file system's figures
        stand for it)."""
        return self.datapath.space() if hasattr(self.datapath, "space") else None

    def _regular(self, fh):
        fd, cfh, st = self._open(fh)
        if not stat.S_ISREG(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_ISDIR if stat.S_ISDIR(st.st_mode)
                          else nfsstat3.NFS3ERR_INVAL)
        return fd, cfh, st, self._metafile(fd, st)

    async def _settle(self, cfh):
        """Carry out a truncation recorded in the metafile before data moves."""
        fd, cfh, st, meta = self._regular(cfh)
        if meta.trunc_to is None:
            return
        key = (st.st_dev, st.st_ino)
        lock = self._settling.get(key)
        if lock is None:
            lock = self._settling[key] = trio.Lock()
        try:
            async with lock:
                while True:
                    fd, cfh, st, meta = self._regular(cfh)
                    target = meta.trunc_to
                    if target is None:
                        return
                    if await self._in_flight.landed(key):
                        fd, cfh, st, meta = self._regular(cfh)
                        target = meta.trunc_to
                        if target is None:
                            return
                    await self.datapath.truncate(meta, st.st_ino, target)
                    fd, cfh, st, meta = self._regular(cfh)
                    if meta.trunc_to is not None and meta.trunc_to >= target:
                        self._metafiles.store(fd, meta.replace(trunc_to=None),
                                              self._objects.sync_metadata, st)
                        return
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._settling.pop(key, None)

    @maps_oserror
    async def settled(self, fh, write=False):
        """(Metafile, inode) of a regular file, a pending truncation carried
        out first: what a pNFS layout describes. Data a client writes through
        a layout never passes here to settle it, and a cut carried out after
        such a write would take its bytes away. With ``write`` (a layout to
        write through), the file's no_data flag is cleared first: a removal
        then purges whatever the client writes (made durable by the next
        COMMIT, as an UNSTABLE WRITE's new size; a crash of the machine
        before can only leak that data, until `nfsp scrub`)."""
        fd, cfh, st, meta = self._regular(fh)
        if meta.trunc_to is not None:
            await self._settle(cfh)
            fd, cfh, st, meta = self._regular(cfh)
        if write and meta.no_data:
            meta = meta.replace(no_data=False)
            self._store(fd, meta, False, st)
        return meta, st.st_ino

    def _store(self, fd, meta, stable, st):
        """Rewrite a metafile for a write: durable now if ``stable``, else
        by the file's next COMMIT."""
        self._metafiles.store(fd, meta, stable, st)
        if not stable:
            self._metafiles.unsynced.add((st.st_dev, st.st_ino))

    # -- READ ----------------------------------------------------------------------

    @maps_oserror
    async def read_plan(self, fh, caller, offset, count, at_stripe=False):
        """The ReadPlan of a READ: everything it needs but the data. Permission
        checked, a pending truncation carried out, (offset, count) cut at EOF
        and, with at_stripe, where the bytes stop being on one data server (a
        short read)."""
        plan = self.read_plan_now(fh, caller, offset, count, at_stripe)
        if plan is not None:
            return plan
        _, cfh, _, _ = self._regular(fh)
        await self._settle(cfh)
        fd, cfh, st, meta = self._regular(cfh)
        return self._read_plan(fd, st, meta, offset, count, at_stripe)

    def read_plan_now(self, fh, caller, offset, count, at_stripe=False):
        """read_plan() if it needs no waiting, else None: a truncation is
        pending (rare), which only read_plan() carries out."""
        # Every forwarded READ comes here: maps_oserror's work done inline.
        try:
            fd, cfh, st, meta = self._regular(fh)
            if caller.uid != st.st_uid and not may_read(st.st_mode, st.st_uid, st.st_gid,
                                                        caller):
                raise FsError(nfsstat3.NFS3ERR_ACCES)
            if meta.trunc_to is not None:
                return None
            return self._read_plan(fd, st, meta, offset, count, at_stripe)
        except OSError as e:
            raise fs_error_of(e) from None

    def _read_plan(self, fd, st, meta, offset, count, at_stripe):
        size, unit = meta.size, meta.stripe_unit
        if 0 < count <= size - offset and not (
                at_stripe and offset % unit + count > unit and self.datapath.iod_count(meta) > 1):
            # clamp_read's common case, for every READ: nothing to cut.
            eof = offset + count >= size
        else:
            count, eof = clamp_read(offset, count, size, unit, self.datapath.iod_count(meta),
                                    at_stripe)
        if self._atime != "noatime" and self._atime_moves(st):
            st = self._accessed(fd)
            if self._changed is not None:
                self._changed()
        return ReadPlan(meta, st.st_ino, offset, count, eof, self._attr(fd, st, meta))

    def _atime_moves(self, st):
        """Whether the kernel will advance atime on a read (so that a READ costs
        no extra system call when it will not): relatime's rule (fs/inode.c,
        relatime_need_update), or always with strictatime."""
        if self._atime == "strictatime":
            return True
        atime = st.st_atime_ns
        return (atime <= st.st_mtime_ns or atime <= st.st_ctime_ns
                or time.time_ns() - atime >= _RELATIME_WINDOW_NS)

    @staticmethod
    def _accessed(fd):
        """Let the kernel advance the metafile's atime (a read without
        O_NOATIME); its stat after that."""
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NOATIME)
        try:
            os.pread(fd, 1, 0)
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return os.fstat(fd)

    @maps_oserror
    async def read_data(self, plan):
        """The bytes of a ReadPlan, from the data path (zeros for holes)."""
        n = plan.count
        if n <= 0:
            return b""
        data = await self.datapath.read(plan.meta, plan.ino, plan.offset, n)
        if len(data) != n:
            data = data[:n] + bytes(max(0, n - len(data)))
        return data

    async def read(self, fh, caller, offset, count):
        """Both halves: (data, eof, Attr)."""
        plan = await self.read_plan(fh, caller, offset, count)
        return await self.read_data(plan), plan.eof, plan.attr

    # -- WRITE ---------------------------------------------------------------------

    @maps_oserror
    async def write_plan(self, fh, caller, offset, length, stable):
        """The WritePlan of a WRITE of ``length`` bytes at ``offset``
        (``stable``: a stable_how): everything it does but moving the data.
        Checks, the metafile size first (a crash may then show zeros where data
        was being written, never a file shorter than what a client was told),
        mtime, setuid/setgid cleared; and the post-write attributes, so the
        reply can be built before the data reaches its data server."""
        fd, cfh, st, meta = self._write_checked(fh, caller, offset, length)
        if meta.trunc_to is not None:
            await self._settle(cfh)
            fd, cfh, st, meta = self._regular(cfh)
        return self._write_plan(fd, cfh, st, meta, caller, offset, length, stable)

    @maps_oserror
    def write_plan_now(self, fh, caller, offset, length, stable):
        """write_plan() if it needs no waiting, else None (nothing done): a
        truncation is pending (rare), which only write_plan() carries out."""
        fd, cfh, st, meta = self._write_checked(fh, caller, offset, length)
        if meta.trunc_to is not None:
            return None
        return self._write_plan(fd, cfh, st, meta, caller, offset, length, stable)

    def _write_checked(self, fh, caller, offset, length):
        check_writable(caller)
        fd, cfh, st, meta = self._regular(fh)
        if not may_write(st.st_mode, st.st_uid, st.st_gid, caller):
            raise FsError(nfsstat3.NFS3ERR_ACCES)
        if offset < 0 or offset + length > MAX_SIZE:
            raise FsError(nfsstat3.NFS3ERR_FBIG)
        return fd, cfh, st, meta

    def _write_plan(self, fd, cfh, st, meta, caller, offset, length, stable):
        end = offset + length
        seq = next(self._write_seq)
        self._recent_writes.append((st.st_dev, st.st_ino, seq, end))
        # Nothing changes for a write its data server cannot take now.
        self.datapath.ready(meta, offset, length)
        pre = WccAttr(meta.size, st.st_mtime_ns, st.st_ctime_ns)
        if end > meta.size or meta.no_data and length:
            # (no_data: the data is on its way to the data servers.)
            meta = meta.replace(size=max(end, meta.size), no_data=meta.no_data and not length)
            self._store(fd, meta, bool(stable), st)
        set_times(fd, None, SET_TO_SERVER_TIME)
        clear_setid(fd, caller)
        st = os.fstat(fd)
        meta = self._metafiles.restat(fd, st)
        committed = FILE_SYNC if stable else UNSTABLE
        plan = WritePlan(meta, st.st_ino, offset, length, bool(stable), committed,
                         Wcc(pre, self._attr(fd, st, meta)), cfh, seq)
        # Until its data is in (write_data, or write_landed for a forward), a
        # truncation of the file waits for it.
        self._in_flight.begin((st.st_dev, st.st_ino), seq)
        return plan

    def write_landed(self, plan):
        """The data of a forwarded WritePlan reached its data server, or was
        refused there: it can no longer land after a truncation."""
        self._in_flight.end(plan.seq)

    def write_failed(self, plan):
        """A WRITE's data did not land (the data server refused it, or is
        down): the size it grew the file to must not stay. Back to the size
        before it, or to the end of any write planned after it on this file
        (which may have landed); kept when the size has moved since (a later
        write grew it further, a SETATTR set it) or when the writes after it
        are too far back to know. Raises FsError (STALE: the file is gone)."""
        # Refused (or timed out: presumed lost), it is no longer waited for.
        self._in_flight.end(plan.seq)
        end = plan.offset + plan.count
        before = plan.wcc.pre.size
        if end <= before:
            return
        fd, _, st, meta = self._regular(plan.fh)
        if meta.size != end or meta.trunc_to is not None:
            return
        recent = self._recent_writes
        if not recent or recent[0][2] > plan.seq:
            return
        key = (st.st_dev, st.st_ino)
        later = max((e for dev, ino, seq, e in recent if (dev, ino) == key and seq > plan.seq),
                    default=0)
        size = max(before, later)
        if size < end:
            self._metafiles.store(fd, meta.replace(size=size), self._objects.sync_metadata,
                                  st)

    @maps_oserror
    async def write_data(self, plan, data):
        """Move a WritePlan's data to the data path; returns the write verifier
        to report (taken after the data landed: an answer may reveal that a
        data server restarted)."""
        if not data:
            self._in_flight.end(plan.seq)
            return self.datapath.verifier
        self._in_flight.relaying(plan.seq)
        try:
            await self.datapath.write(plan.meta, plan.ino, plan.offset, data, plan.stable)
        except OSError:
            try:
                self.write_failed(plan)
            except FsError:
                pass   # the file went meanwhile: nothing left to undo
            raise
        finally:
            self._in_flight.end(plan.seq)
        return self.datapath.verifier

    async def write(self, fh, caller, offset, data, stable):
        """Both halves: (count, committed stable_how, verifier, Wcc)."""
        plan = await self.write_plan(fh, caller, offset, len(data), stable)
        verf = await self.write_data(plan, data)
        return len(data), plan.committed, verf, plan.wcc

    # -- COMMIT --------------------------------------------------------------------

    @maps_oserror
    async def commit(self, fh, caller, offset, count):
        """Make earlier UNSTABLE writes durable (the whole file, whatever the
        range): (write verifier, Wcc)."""
        fd, cfh, st, meta = self._regular(fh)
        if meta.trunc_to is not None:
            await self._settle(cfh)
            fd, cfh, st, meta = self._regular(cfh)
        pre = WccAttr(meta.size, st.st_mtime_ns, st.st_ctime_ns)
        key = (st.st_dev, st.st_ino)
        if key in self._metafiles.unsynced:
            os.fdatasync(fd)
            self._metafiles.unsynced.discard(key)
        await self.datapath.commit(meta, st.st_ino)
        try:
            fd, cfh, st = self._open(cfh)
        except FsError:
            return self.datapath.verifier, Wcc(pre, None)
        return self.datapath.verifier, Wcc(pre, self._attr(fd, st))
