"""The metafiles of one export, read once and kept while they stay unchanged.

A regular file of the export is a small metafile (common/metafile.py) holding
the real size, a seed and the stripe parameters. Nearly every reply carries a
file's size, so its metafile is cached under (dev, ino) with the mtime, ctime
and st_size it had: a change to any of them means the file was written by
someone else, and it is read again. Only this process writes metafiles and it
updates the cache when it does, so a cached entry is the metafile's content.
"""

import collections
import errno
import logging
import os

from common.metafile import SIZE as META_SIZE
from common.metafile import Metafile, MetafileError
from common.nfs3 import nfsstat3
from nfspd.fs.syscalls import proc_path
from nfspd.fs.types import FsError

log = logging.getLogger(__name__)

CACHED = 65536


class Metafiles:
    """``lookups`` and ``hits`` measure the cache (for `nfsp status`);
    ``unsynced`` holds the (dev, ino) of metafiles whose size grew by UNSTABLE
    writes and is not yet on disk (COMMIT syncs them)."""

    def __init__(self, export_path):
        self.export_path = export_path
        self._cache = collections.OrderedDict()  # (dev, ino) -> (mtime, ctime, st_size, Metafile)
        self._bad = set()  # (dev, ino, ctime) of non-metafiles already logged
        self.unsynced = set()
        self.lookups = 0
        self.hits = 0

    def get(self, fd, st):
        """The Metafile of the regular file fd (readable) with stat st; IO when
        it is not a valid metafile (logged once per inode and ctime)."""
        key = (st.st_dev, st.st_ino)
        hit = self._cache.get(key)
        self.lookups += 1
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_ctime_ns \
                and hit[2] == st.st_size:
            self.hits += 1
            return hit[3]
        try:
            meta = Metafile.decode(os.pread(fd, META_SIZE + 1, 0))
        except (OSError, MetafileError) as e:
            bad = (st.st_dev, st.st_ino, st.st_ctime_ns)
            if bad not in self._bad:
                if len(self._bad) > 10000:
                    self._bad.clear()
                self._bad.add(bad)
                log.error("%s: inode %d is a regular file but not a valid metafile: %s",
                          self.export_path, st.st_ino, e)
            raise FsError(nfsstat3.NFS3ERR_IO, "not a metafile") from None
        self.remember(st, meta)
        return meta

    def cached(self, st):
        """The cached Metafile of an object with stat st if still current, else None."""
        hit = self._cache.get((st.st_dev, st.st_ino))
        if hit is not None and hit[:3] == (st.st_mtime_ns, st.st_ctime_ns, st.st_size):
            return hit[3]
        return None

    def remember(self, st, meta):
        key = (st.st_dev, st.st_ino)
        self._cache[key] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, meta)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHED:
            self._cache.popitem(last=False)

    def restat(self, fd, st):
        """The Metafile of a file whose stat changed by our own doing (times,
        mode) since we last read or wrote its metafile: the cached content,
        kept under its new stat."""
        hit = self._cache.get((st.st_dev, st.st_ino))
        if hit is None:
            return self.get(fd, st)
        self.remember(st, hit[3])
        return hit[3]

    def store(self, fd, meta, sync):
        """Rewrite a metafile (fd open for writing); returns its new stat."""
        data = meta.encode()
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.EIO, "short metafile write")
        if sync:
            os.fdatasync(fd)
        st = os.fstat(fd)
        self.remember(st, meta)
        return st

    def make(self, dir_fd, name, mode, meta, sync):
        """Create the metafile ``name`` in dir_fd with ``mode`` and content
        ``meta``: (fd open O_RDWR, stat). Written before it gets its name (an
        O_TMPFILE linked in), so nobody ever sees a half-made metafile, even
        after a crash. The caller's credentials apply (creds.as_caller around
        this); FileExistsError when the name exists."""
        data = meta.encode()
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            fd = None
        if fd is None:
            # No O_TMPFILE here: the name exists for a moment with no content.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, mode, dir_fd=dir_fd)
            try:
                if os.fstat(fd).st_mode & 0o7777 != mode:
                    os.fchmod(fd, mode)
                os.pwrite(fd, data, 0)
                if sync:
                    os.fdatasync(fd)
            except BaseException:
                os.unlink(name, dir_fd=dir_fd)
                os.close(fd)
                raise
        else:
            try:
                if os.fstat(fd).st_mode & 0o7777 != mode:
                    os.fchmod(fd, mode)  # the daemon's umask must not apply
                os.pwrite(fd, data, 0)
                if sync:
                    os.fdatasync(fd)
                os.link(proc_path(fd), name, dst_dir_fd=dir_fd, follow_symlinks=True)
            except BaseException:
                os.close(fd)
                raise
        st = os.fstat(fd)
        self.remember(st, meta)
        return fd, st

    def forget(self, st):
        """The object lost its last link."""
        key = (st.st_dev, st.st_ino)
        self._cache.pop(key, None)
        self.unsynced.discard(key)
