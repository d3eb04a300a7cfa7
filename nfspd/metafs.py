"""MetaFS: the exported namespace kept in an ordinary directory (paper 5.3-5.5).

Every regular file is a small metafile (common/metafile.py) holding the real
size, a seed and the stripe parameters; directories, symlinks, devices, fifos
and hard links are plain objects. Attributes come from the underlying file
system except size and used bytes, which come from the metafile.

This module is the one interface the NFSv2 and NFSv3 services use; it knows no
XDR. File handles are opaque bytes (nfspd/handles.py), at most 32 bytes so they
fit NFSv2. Every method that may fail raises FsError carrying an nfsstat3 value
(NFSv2's service maps it down).

Permissions: the caller's (already squashed) uid/gids are enforced the way a
kernel server does. Namespace changes and SETATTR run under the caller's file
system credentials (setfsuid/setfsgid and a per-thread setgroups), so the kernel
applies its own rules (search and write permission, sticky directories, who may
chmod/chown/utimes, setgid clearing); READ, WRITE and ACCESS use
nfspd/access.py, since the data does not live here.

Data goes through a DataPath (nfspd/datapath.py): READ/WRITE/COMMIT/TRUNCATE of
(inode, seed) stripes. Issue 2 ships a local store; the iods plug in later.
"""

import enum

from common.nfs3 import nfsstat3


class FileType(enum.IntEnum):
    """Same values as NFSv3's ftype3."""
    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class FsError(Exception):
    def __init__(self, status, message=""):
        super().__init__(f"{status.name}: {message}" if message else status.name)
        self.status = nfsstat3(status)


class Caller:
    """Who is asking, after the export's squash options were applied, and
    whether this client may modify the export (ro/rw)."""

    __slots__ = ("uid", "gid", "gids", "readonly")

    def __init__(self, uid, gid, gids=(), readonly=False):
        self.uid, self.gid, self.gids, self.readonly = uid, gid, tuple(gids), readonly

    def __repr__(self):
        return f"Caller(uid={self.uid}, gid={self.gid}, gids={self.gids}, ro={self.readonly})"


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
        return isinstance(other, Attr) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


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


class DirEntry:
    __slots__ = ("fileid", "name", "cookie")

    def __init__(self, fileid, name, cookie):
        self.fileid, self.name, self.cookie = fileid, name, cookie


class FsStat:
    """FSSTAT figures in bytes and file slots (total, free, available to the caller)."""

    __slots__ = ("tbytes", "fbytes", "abytes", "tfiles", "ffiles", "afiles")

    def __init__(self, tbytes, fbytes, abytes, tfiles, ffiles, afiles):
        self.tbytes, self.fbytes, self.abytes = tbytes, fbytes, abytes
        self.tfiles, self.ffiles, self.afiles = tfiles, ffiles, afiles


class MetaFS:
    """One exported directory. All methods but read/write/commit are synchronous
    (small local metadata syscalls; the event loop does not wait on the network
    for them)."""

    # Implementation: nfspd/metafs.py (this file) – see the class docstring of
    # each method for the contract the NFS services rely on.

    root_fh: bytes
    fsid: int

    def getattr(self, fh) -> Attr: ...

    def setattr(self, fh, caller, sattr, guard_ctime_ns=None) -> Wcc:
        """guard_ctime_ns: NFSv3 guarded SETATTR; mismatch -> NFS3ERR_NOT_SYNC.
        A size change truncates the data (DataPath.truncate) and the metafile."""

    def lookup(self, dir_fh, name, caller) -> "tuple[bytes, Attr, Attr | None]":
        """(fh, attr, dir_attr). name b"." and b".."; ".." at the export root stays at
        the root. Never crosses out of the export."""

    def access(self, fh, caller, mask) -> "tuple[int, Attr]":
        """mask/result: ACCESS3 bits (READ 1, LOOKUP 2, MODIFY 4, EXTEND 8, DELETE 0x10, EXECUTE 0x20)."""

    def readlink(self, fh, caller) -> "tuple[bytes, Attr]": ...

    def create(self, dir_fh, name, caller, how, sattr, verf=None) -> "tuple[bytes, Attr, Wcc]":
        """Creates a metafile. EXCLUSIVE stores verf (8 bytes) so that a retransmitted
        create with the same verf succeeds and another fails with EXIST."""

    def mkdir(self, dir_fh, name, caller, sattr) -> "tuple[bytes, Attr, Wcc]": ...

    def symlink(self, dir_fh, name, caller, target, sattr) -> "tuple[bytes, Attr, Wcc]": ...

    def mknod(self, dir_fh, name, caller, ftype, sattr, rdev=(0, 0)) -> "tuple[bytes, Attr, Wcc]": ...

    def remove(self, dir_fh, name, caller) -> Wcc:
        """Dropping the last link of a metafile hands (inode, seed) to the purge sink."""

    def rmdir(self, dir_fh, name, caller) -> Wcc: ...

    def rename(self, from_dir_fh, from_name, to_dir_fh, to_name, caller) -> "tuple[Wcc, Wcc]": ...

    def link(self, fh, dir_fh, name, caller) -> "tuple[Attr, Wcc]": ...

    def readdir(self, dir_fh, cookie, cookieverf, caller, max_entries) -> "tuple[list[DirEntry], bool, bytes, Attr]":
        """(entries, eof, cookieverf, dir_attr). Cookies resume exactly after the entry
        that carried them even while entries are added or removed; a cookie the
        directory no longer knows of resumes after the nearest following entry;
        BAD_COOKIE only for a verifier this server never issued for this directory."""

    def fsstat(self, fh) -> FsStat: ...

    async def read(self, fh, caller, offset, count) -> "tuple[bytes, bool, Attr]": ...

    async def write(self, fh, caller, offset, data, stable) -> "tuple[int, int, bytes, Wcc]":
        """(count, committed stable_how, write verifier, wcc)."""

    async def commit(self, fh, caller, offset, count) -> "tuple[bytes, Wcc]": ...
