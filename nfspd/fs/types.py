"""What the file-system layer takes and returns, and how it fails.

Plain values, no system calls: a protocol front-end (NFSv2, NFSv3, and next
NFSv4.1) builds Caller and SetAttr, gets Attr, Wcc, DirEntry, FsStat and the
READ/WRITE plans back, and turns an FsError into its own status code. Statuses
are nfsstat3 values, the richest set of the versions served so far; NFSv2 maps
them down, NFSv4 will map them up.
"""

import enum
import errno
import functools
import inspect

from common.nfs3 import nfsstat3

NAME_MAX = 255
PATH_MAX = 4096

# stable_how of a WRITE (RFC 1813 3.3.7); NFSv4's stable_how4 has the same values.
UNSTABLE, DATA_SYNC, FILE_SYNC = 0, 1, 2


class FileType(enum.IntEnum):
    """Same values as NFSv3's ftype3 (and NFSv4's nfs_ftype4)."""
    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class TargetExists(Exception):
    """MetaFS.rename(replace=False) found its target name taken, or could not
    tell: nothing was renamed (a namespace worker hands such a RENAME to
    nfspd, nfspd/workers.py)."""


class FsError(Exception):
    """A failed file-system call; ``status`` is an nfsstat3."""

    def __init__(self, status, message=""):
        super().__init__(f"{status.name}: {message}" if message else status.name)
        self.status = nfsstat3(status)


_ERRNO = {
    errno.EPERM: nfsstat3.NFS3ERR_PERM, errno.ENOENT: nfsstat3.NFS3ERR_NOENT,
    errno.EIO: nfsstat3.NFS3ERR_IO, errno.ENXIO: nfsstat3.NFS3ERR_NXIO,
    errno.EACCES: nfsstat3.NFS3ERR_ACCES, errno.EEXIST: nfsstat3.NFS3ERR_EXIST,
    errno.EXDEV: nfsstat3.NFS3ERR_XDEV, errno.ENODEV: nfsstat3.NFS3ERR_NODEV,
    errno.ENOTDIR: nfsstat3.NFS3ERR_NOTDIR, errno.EISDIR: nfsstat3.NFS3ERR_ISDIR,
    errno.EINVAL: nfsstat3.NFS3ERR_INVAL, errno.EFBIG: nfsstat3.NFS3ERR_FBIG,
    errno.ENOSPC: nfsstat3.NFS3ERR_NOSPC, errno.EROFS: nfsstat3.NFS3ERR_ROFS,
    errno.EMLINK: nfsstat3.NFS3ERR_MLINK, errno.ENAMETOOLONG: nfsstat3.NFS3ERR_NAMETOOLONG,
    errno.ENOTEMPTY: nfsstat3.NFS3ERR_NOTEMPTY, errno.EDQUOT: nfsstat3.NFS3ERR_DQUOT,
    errno.ESTALE: nfsstat3.NFS3ERR_STALE, errno.EBUSY: nfsstat3.NFS3ERR_ACCES,
    errno.ELOOP: nfsstat3.NFS3ERR_INVAL, errno.EOPNOTSUPP: nfsstat3.NFS3ERR_NOTSUPP,
    errno.EAGAIN: nfsstat3.NFS3ERR_JUKEBOX, errno.ETIMEDOUT: nfsstat3.NFS3ERR_JUKEBOX,
    errno.ENOMEM: nfsstat3.NFS3ERR_JUKEBOX, errno.EOVERFLOW: nfsstat3.NFS3ERR_FBIG,
}


def fs_error_of(e):
    """The FsError for an OSError from a system call made for a client."""
    return FsError(_ERRNO.get(e.errno, nfsstat3.NFS3ERR_IO), e.strerror or str(e))


def maps_oserror(fn):
    """fn, raising FsError where it raised OSError. Not for the hottest calls
    (GETATTR, LOOKUP, ACCESS, READ): the *args/**kwargs call costs a tenth of a
    GETATTR, so those map inline."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except OSError as e:
                raise fs_error_of(e) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except OSError as e:
                raise fs_error_of(e) from None
    return wrapper


class Caller:
    """Who is asking, after the export's squash options were applied, whether
    this client may modify the export (ro/rw), and whether its changes must be
    durable before the reply (sync/async)."""

    __slots__ = ("uid", "gid", "gids", "readonly", "sync")

    def __init__(self, uid, gid, gids=(), readonly=False, sync=True):
        self.uid, self.gid, self.gids, self.readonly = uid, gid, tuple(gids), readonly
        self.sync = sync

    def __repr__(self):
        return (f"Caller(uid={self.uid}, gid={self.gid}, gids={self.gids}, ro={self.readonly}, "
                f"sync={self.sync})")


class Attr:
    """A file's attributes as a client sees them. Times are integer nanoseconds."""

    __slots__ = ("type", "mode", "nlink", "uid", "gid", "size", "used", "rdev_major",
                 "rdev_minor", "fsid", "fileid", "atime_ns", "mtime_ns", "ctime_ns")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw[k])

    def __repr__(self):
        return "Attr(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def __eq__(self, other):
        return isinstance(other, Attr) and all(getattr(self, k) == getattr(other, k)
                                               for k in self.__slots__)


class WccAttr:
    """Pre-operation attributes for weak cache consistency (RFC 1813 wcc_attr)."""

    __slots__ = ("size", "mtime_ns", "ctime_ns")

    def __init__(self, size, mtime_ns, ctime_ns):
        self.size, self.mtime_ns, self.ctime_ns = size, mtime_ns, ctime_ns


class Wcc:
    """(pre, post) around a change to an object; either may be None."""

    __slots__ = ("pre", "post")

    def __init__(self, pre=None, post=None):
        self.pre, self.post = pre, post


SET_TO_SERVER_TIME = "server-time"


class SetAttr:
    """What a SETATTR/CREATE/MKDIR asks to set; None leaves a field alone.
    atime/mtime: None, SET_TO_SERVER_TIME, or integer nanoseconds."""

    __slots__ = ("mode", "uid", "gid", "size", "atime", "mtime")

    def __init__(self, mode=None, uid=None, gid=None, size=None, atime=None, mtime=None):
        self.mode, self.uid, self.gid, self.size = mode, uid, gid, size
        self.atime, self.mtime = atime, mtime


class CreateHow(enum.IntEnum):
    """NFSv3 createmode3; NFSv2 CREATE behaves as UNCHECKED."""
    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


class ReadPlan:
    """A READ cut to what will be returned: ``count`` bytes at ``offset`` of
    the file (inode ``ino``, metafile ``meta``), ``eof``, attributes ``attr``."""

    __slots__ = ("meta", "ino", "offset", "count", "eof", "attr")

    def __init__(self, meta, ino, offset, count, eof, attr):
        self.meta, self.ino, self.offset, self.count = meta, ino, offset, count
        self.eof, self.attr = eof, attr


class WritePlan:
    """A WRITE whose metadata is done: ``wcc`` holds the post-write attributes,
    ``committed`` the stable_how to report. ``fh`` and ``seq`` (the order of
    write plans) let a WRITE whose data did not land be undone (write_failed)."""

    __slots__ = ("meta", "ino", "offset", "count", "stable", "committed", "wcc", "fh", "seq")

    def __init__(self, meta, ino, offset, count, stable, committed, wcc, fh=None, seq=None):
        self.meta, self.ino, self.offset, self.count = meta, ino, offset, count
        self.stable, self.committed, self.wcc = stable, committed, wcc
        self.fh, self.seq = fh, seq


class DirEntry:
    """One READDIR entry: ``cookie`` resumes the listing after it."""

    __slots__ = ("fileid", "name", "cookie")

    def __init__(self, fileid, name, cookie):
        self.fileid, self.name, self.cookie = fileid, name, cookie


class FsStat:
    """FSSTAT figures in bytes and file slots (total, free, available to the caller)."""

    __slots__ = ("tbytes", "fbytes", "abytes", "tfiles", "ffiles", "afiles")

    def __init__(self, tbytes, fbytes, abytes, tfiles, ffiles, afiles):
        self.tbytes, self.fbytes, self.abytes = tbytes, fbytes, abytes
        self.tfiles, self.ffiles, self.afiles = tfiles, ffiles, afiles
