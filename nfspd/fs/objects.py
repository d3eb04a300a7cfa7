"""The objects of one export: handles opened, stat turned into attributes.

Below the namespace operations and the file I/O plans, and shared by them:
the export's root, its handle codec (nfspd/fs/handles.py, which keeps opened
objects as descriptors), its metafiles (nfspd/fs/metafiles.py), and what
becomes of an object that loses its last link. Every descriptor returned here
is borrowed from the handle cache: use it at once, on the event loop's thread,
and never keep it.
"""

import errno
import logging
import os
import resource
import stat

from common.metafile import HEADER as META_HEADER
from common.nfs3 import entryplus3_values, nfsstat3
from nfspd.fs.access import X, owner_may
from nfspd.fs.creds import as_caller
from nfspd.fs.handles import HandleCodec
from nfspd.fs.journal import directory_fsync_commits_all, identify, parent_fsync_suffices
from nfspd.fs.metafiles import CACHED, Metafiles
from nfspd.fs.syscalls import O_PATH, proc_path, syncfs
from nfspd.fs.types import Attr, FileType, FsError, WccAttr

log = logging.getLogger(__name__)

USED_UNIT = 4096  # a regular file's used bytes: its size rounded up to this
_new = object.__new__
_S_IFMT = 0o170000
_S_IFREG = stat.S_IFREG
_FTYPE = {stat.S_IFREG: FileType.REG, stat.S_IFDIR: FileType.DIR, stat.S_IFBLK: FileType.BLK,
          stat.S_IFCHR: FileType.CHR, stat.S_IFLNK: FileType.LNK, stat.S_IFSOCK: FileType.SOCK,
          stat.S_IFIFO: FileType.FIFO}
_FTYPE3 = {fmt: int(t) for fmt, t in _FTYPE.items()}  # (FileType's values are ftype3's)


def open_pinned(dir_fd, name):
    """An O_PATH fd on name in dir_fd, not following a symlink, with the
    credentials this thread has now (a caller's: their search permission)."""
    return os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def stat_pinned(fd):
    """(fd, its stat) for a pinned fd just opened; closed if the stat fails."""
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


class Objects:
    """``purge(ino, seed)`` receives the data of files whose last link went
    away. ``sync_metadata``: namespace changes and metafile size changes are
    made durable (fsync) before replying, as an NFS server must unless
    exported "async". ``commit``: a GroupCommit (nfspd/fs/commit.py) that
    namespace changes are noted in, the reply waiting for its flush."""

    def __init__(self, export_path, export_id, handle_key, purge, *, sync_metadata=True,
                 cache_size=4096, commit=None):
        self.export_path = os.path.abspath(export_path)
        self.export_id = export_id
        self.fsid = export_id
        self.purge = purge
        self.sync_metadata = sync_metadata
        self.commit = commit  # a GroupCommit, or None: each change flushed on its own
        # Whether a directory's fsync writes a symlink or device node made in
        # it too, or the whole file system must be synced; and whether it
        # commits the metafiles written out before it too (ext3/ext4 with a
        # journal): the group commit then skips their fdatasync
        # (nfspd/fs/journal.py).
        fs = identify(self.export_path)
        self.parent_fsync_suffices = parent_fsync_suffices(*fs)
        self.dir_fsync_commits_all = directory_fsync_commits_all(*fs)
        self.root_fd = os.open(self.export_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self.root_fd)
        self.dev = st.st_dev
        self.root_ino = st.st_ino
        self.codec = HandleCodec(export_id, handle_key, self.root_fd, st.st_dev, cache_size)
        self.root_fh = self.codec.encode_fd(self.root_fd)
        self.metafiles = Metafiles(self.export_path)
        self._metafile = self.metafiles.get
        self._acl_free = {}  # (dev, ino) -> ctime of a directory seen without an access ACL
        # Regular files a protocol holds open (NFSv4 OPEN): canonical fh ->
        # [own descriptor, inode, holds]. Losing its last link, such a file
        # stays readable and writable by handle until released; its data is
        # purged then (pending: inode -> (stat, metafile)).
        self._held = {}
        self._held_inos = {}
        self._pending = {}

    def close(self):
        for fd, _, _ in self._held.values():
            os.close(fd)
        self._held.clear()
        self.codec.close()
        os.close(self.root_fd)

    # -- opening -------------------------------------------------------------------

    def open(self, fh):
        """(borrowed fd, canonical fh, stat) of a live object of this export;
        BADHANDLE, STALE."""
        if self._held:
            held = self._held.get(fh)
            if held is not None:
                return held[0], fh, os.fstat(held[0])
        fd, cfh = self.codec.open(fh)
        st = os.fstat(fd)
        if st.st_nlink == 0:
            self.codec.forget(cfh)
            raise FsError(nfsstat3.NFS3ERR_STALE, "object was removed")
        return fd, cfh, st

    def hold(self, fh, limit=None):
        """Keep a regular file usable by handle after it loses its last link,
        until as many release() calls: True, or False when ``limit`` files
        (default: an eighth of the descriptors the process may have, at most
        4096) are held already, each costing a descriptor. STALE if it is gone."""
        if limit is None:
            # The soft limit as the handle cache left it (it raises it).
            limit = max(16, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 8))
        fd, cfh, st = self.open(fh)
        held = self._held.get(cfh)
        if held is None:
            if len(self._held) >= limit or not stat.S_ISREG(st.st_mode):
                return False
            held = self._held[cfh] = [os.dup(fd), st.st_ino, 0]
            self._held_inos[st.st_ino] = cfh
        held[2] += 1
        return True

    def release(self, fh):
        """One hold() of a file undone; the last one lets a file that lost its
        last link meanwhile go (its data to the purge sink)."""
        held = self._held.get(fh)
        if held is None:
            return
        held[2] -= 1
        if held[2] > 0:
            return
        del self._held[fh]
        self._held_inos.pop(held[1], None)
        pending = self._pending.pop(held[1], None)
        if pending is not None:
            st, meta = pending
            if meta is not None and meta.no_data:
                now = self.meta_of_pinned(held[0], os.fstat(held[0]))
                if now is None or not now.no_data:  # written since its last link went
                    pending = st, meta.replace(no_data=False)
        os.close(held[0])
        if pending is not None:
            self.gone(*pending)

    def dir(self, fh):
        """open() of a directory; NOTDIR for anything else."""
        fd, cfh, st = self.open(fh)
        if not stat.S_ISDIR(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_NOTDIR)
        return fd, cfh, st

    def adopt(self, fd, st=None, readwrite=False):
        """Hand an fd we opened on an object of the export (O_PATH; or a
        regular file's open O_RDWR | O_NOATIME, ``readwrite``) to the handle
        cache: (cached fd, canonical fh)."""
        try:
            cfh = self.codec.encode_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        return self.codec.adopt(fd, cfh, st, readwrite), cfh

    def pin(self, dir_fd, name, caller, dir_st):
        """An O_PATH fd on name (not following a symlink) opened with the caller's
        search permission in the directory (stat ``dir_st``), and its stat: as
        the caller, unless its mode alone lets the caller search there
        (searchable_by). The caller closes it."""
        if self.searchable_by(dir_fd, dir_st, caller):
            fd = open_pinned(dir_fd, name)
        else:
            with as_caller(caller.uid, caller.gid, caller.gids):
                fd = open_pinned(dir_fd, name)
        return stat_pinned(fd)

    def meta_of_pinned(self, fd, st):
        """The metafile behind an O_PATH fd, None if it is not a valid one."""
        try:
            meta = self.metafiles.cached(st)
            if meta is not None:
                return meta
            try:  # O_NOATIME: see HandleCodec.adopt
                rfd = os.open(proc_path(fd), os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC)
            except PermissionError:
                rfd = os.open(proc_path(fd), os.O_RDONLY | os.O_CLOEXEC)
            try:
                return self._metafile(rfd, st)
            finally:
                os.close(rfd)
        except (OSError, FsError):
            return None

    def searchable_by(self, dfd, st, caller):
        """May the caller search this directory (stat ``st``), as the kernel
        would answer it, with no switch to its credentials to ask? Root
        acting as itself; the directory's owner with x in the owner bits,
        which decide for the owner whatever the ACL (access.owner_may);
        anyone where every caller may (searchable_by_all)."""
        if not (caller.uid or caller.gid):
            return True
        if owner_may(st, caller, X):
            return True
        return self.searchable_by_all(dfd, st)

    def searchable_by_all(self, dfd, st):
        """May every caller search this directory? Then looking a name up in it
        needs no switch to the caller's credentials (six system calls, 10-15 µs):
        x for owner, group and others, and no access ACL (which could refuse a
        named user or group). That it has none is cached under its ctime, which
        setting an ACL changes (timestamp granularity: see listings.Listing.stamp)."""
        if st.st_mode & 0o111 != 0o111:
            return False
        key = (st.st_dev, st.st_ino)
        if self._acl_free.get(key) == st.st_ctime_ns:
            return True
        try:
            os.getxattr(proc_path(dfd), "system.posix_acl_access")
            return False
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                return False
        if len(self._acl_free) >= CACHED:
            self._acl_free.clear()
        self._acl_free[key] = st.st_ctime_ns
        return True

    # -- attributes ----------------------------------------------------------------

    def attr(self, fd, st, meta=None):
        """The Attr of an object from its stat (a regular file's size and used
        bytes from its metafile: ``meta``, else the metafile's length, else
        its record read through fd; fd may be None when the length tells)."""
        # Made for nearly every reply: fields set directly, not through
        # Attr's keyword constructor (a third of a GETATTR's cost).
        mode = st.st_mode
        fmt = mode & 0o170000
        a = _new(Attr)
        if fmt == stat.S_IFREG:
            if meta is not None:
                size = meta.size
            else:
                # The metafile's length, unless its record tells the size.
                size = st.st_size - META_HEADER
                if size < 0:
                    size = self._metafile(fd, st).size
            a.size = size
            a.used = -(-size // USED_UNIT) * USED_UNIT
        else:
            a.size = st.st_size
            a.used = st.st_blocks * 512
        a.type = _FTYPE[fmt]
        a.mode = mode & 0o7777
        a.nlink = st.st_nlink
        a.uid = st.st_uid
        a.gid = st.st_gid
        rdev = st.st_rdev
        if rdev:
            a.rdev_major, a.rdev_minor = os.major(rdev), os.minor(rdev)
        else:
            a.rdev_major = a.rdev_minor = 0
        a.fsid = self.fsid
        a.fileid = st.st_ino
        a.atime_ns = st.st_atime_ns
        a.mtime_ns = st.st_mtime_ns
        a.ctime_ns = st.st_ctime_ns
        return a

    def entryplus3(self, fileid, name, cookie, st, fh):
        """The XDR of an NFSv3 entryplus3 with handle ``fh`` and the
        attributes of ``st``, an object whose size its stat tells (not a
        regular file, or one whose metafile is at least META_HEADER long): what
        entryplus3_bytes(fileid, name, cookie, self.attr(None, st), fh) gives,
        without the Attr (READDIRPLUS makes hundreds a call). The same
        rules as attr()'s."""
        mode = st.st_mode
        fmt = mode & _S_IFMT
        if fmt == _S_IFREG:
            size = st.st_size - META_HEADER
            used = -(-size // USED_UNIT) * USED_UNIT
        else:
            size = st.st_size
            used = st.st_blocks * 512
        rdev = st.st_rdev
        return entryplus3_values(
            fileid, name, cookie, fh, _FTYPE3[fmt], mode, st.st_nlink, st.st_uid, st.st_gid,
            size, used, os.major(rdev) if rdev else 0, os.minor(rdev) if rdev else 0,
            self.fsid, st.st_ino, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)

    def wcc_attr(self, fd, st):
        """Pre-operation attributes."""
        if stat.S_ISREG(st.st_mode):
            size = st.st_size - META_HEADER
            if size < 0:
                size = self._metafile(fd, st).size
        else:
            size = st.st_size
        return WccAttr(size, st.st_mtime_ns, st.st_ctime_ns)

    def post(self, fd):
        """Post-operation attributes, or None when they cannot be had (RFC 1813
        lets wcc data be absent rather than fail an operation that succeeded)."""
        try:
            return self.attr(fd, os.fstat(fd))
        except (OSError, FsError):
            return None

    def attr_of(self, cfh):
        """The Attr of a handle we just made or used (open() again: the borrowed
        fd we had may have been evicted meanwhile)."""
        fd, _, st = self.open(cfh)
        return self.attr(fd, st)

    # -- changes -------------------------------------------------------------------

    def durable(self, caller):
        """Whether the caller's changes must be durable before the reply
        (exports(5) ``sync``, the default; ``async`` clears it)."""
        return self.sync_metadata and caller.sync

    def commits_all(self, st):
        """Whether an fsync of a directory (stat ``st``) commits every change
        made before it: on the export's file system, if that is an ext3/ext4
        with a journal (nfspd/fs/journal.py)."""
        return self.dir_fsync_commits_all and st.st_dev == self.dev

    def sync_dir(self, dir_fd, st, caller):
        """Make a change to a directory (stat ``st``) durable, unless the
        caller's export is "async": now, or noted for the group commit."""
        if not self.durable(caller):
            return
        if self.commit is not None:
            self.commit.directory(dir_fd, st, self.commits_all(st))
            return
        fd = os.open(proc_path(dir_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_new_inode(self, dir_fd, st, caller):
        """Make an inode just made in a directory (stat ``st``) durable when
        that directory's fsync would not and it cannot be fsynced itself (a
        symlink, a device node, on a file system without a journal), unless
        the caller's export is "async": now, or noted for the group commit."""
        if self.parent_fsync_suffices or not self.durable(caller):
            return
        if self.commit is not None:
            self.commit.new_inode(dir_fd, st)
            return
        syncfs(self.root_fd)  # (the export is one file system; dir_fd may be O_PATH)

    def gone(self, st, meta, caller=None):
        """An object lost its last link: drop what we cached about it, and hand
        a metafile's data to the purge sink (once released, if it is held;
        once the removal is durable, when the group commit makes it so),
        unless it never had any (no_data, common/metafile.py)."""
        if st.st_ino in self._held_inos:
            self._pending[st.st_ino] = (st, meta)
            return
        self.codec.forget_ino(st.st_ino, os.close if self.commit is None else self.commit.close_later)
        self.metafiles.forget(st)
        if self.commit is not None and stat.S_ISDIR(st.st_mode):
            self.commit.forget(st)
        if meta is not None and not meta.no_data:  # (never written: no data anywhere)
            purge = self.purge
            if caller is not None and self.commit is not None:
                if self.durable(caller):
                    self.commit.purge(purge, st.st_ino, meta.seed)
                    return
                if hasattr(purge, "append_unsynced"):
                    # async: not flushed either (README); unlinkd woken once
                    # for the removals of a loop turn.
                    try:
                        self.commit.unsynced(purge, st.st_ino, meta.seed)
                    except Exception:
                        log.exception("purge of inode %d seed %#x failed", st.st_ino,
                                      meta.seed)
                    return
            try:
                purge(st.st_ino, meta.seed)
            except Exception:
                log.exception("purge of inode %d seed %#x failed", st.st_ino, meta.seed)


def clear_setid(fd, caller):
    """After a non-root caller changed a file's content or size: setuid goes,
    and setgid when group execute is set (what the kernel does on write)."""
    if caller.uid == 0:
        return
    m = os.fstat(fd).st_mode
    keep = m & 0o7777 & ~stat.S_ISUID
    if m & stat.S_IXGRP:
        keep &= ~stat.S_ISGID
    if keep != m & 0o7777:
        os.chmod(proc_path(fd), keep)
