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
(inode, seed) stripes, in a local store or striped over iods (nfspd/iodpath.py).
READ and WRITE come in two halves: a plan (checks, metadata, attributes: here)
and the data (the data path), so that over UDP an iod can send the reply built
from the plan (forward_read/forward_write).
"""

import bisect
import collections
import ctypes
import enum
import errno
import functools
import hashlib
import hmac
import inspect
import logging
import os
import stat

import trio

from common.metafile import DEFAULT_STRIPE_UNIT, MAX_SIZE, Metafile, MetafileError, new_seed
from common.metafile import SIZE as META_SIZE
from common.striping import clamp_read
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


class ReadPlan:
    """A READ cut to what will be returned: ``count`` bytes at ``offset`` of
    the file (inode ``ino``, metafile ``meta``), ``eof``, attributes ``attr``."""

    __slots__ = ("meta", "ino", "offset", "count", "eof", "attr")

    def __init__(self, meta, ino, offset, count, eof, attr):
        self.meta, self.ino, self.offset, self.count = meta, ino, offset, count
        self.eof, self.attr = eof, attr


class WritePlan:
    """A WRITE whose metadata is done: ``wcc`` holds the post-write attributes,
    ``committed`` the stable_how to report."""

    __slots__ = ("meta", "ino", "offset", "count", "stable", "committed", "wcc")

    def __init__(self, meta, ino, offset, count, stable, committed, wcc):
        self.meta, self.ino, self.offset, self.count = meta, ino, offset, count
        self.stable, self.committed, self.wcc = stable, committed, wcc


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


# --- Implementation ------------------------------------------------------------

from nfspd.access import R, X, access3, may_read, may_write, permitted  # noqa: E402
from nfspd.creds import as_caller  # noqa: E402
from nfspd.handles import HandleCodec  # noqa: E402

log = logging.getLogger(__name__)

NAME_MAX = 255
PATH_MAX = 4096
_ZERO_VERF = bytes(8)
UNSTABLE, DATA_SYNC, FILE_SYNC = 0, 1, 2
_USED_UNIT = 4096
_LISTINGS_CACHED = 32
_META_CACHED = 65536
_new = object.__new__

_FTYPE = {stat.S_IFREG: FileType.REG, stat.S_IFDIR: FileType.DIR, stat.S_IFBLK: FileType.BLK,
          stat.S_IFCHR: FileType.CHR, stat.S_IFLNK: FileType.LNK, stat.S_IFSOCK: FileType.SOCK,
          stat.S_IFIFO: FileType.FIFO}
_MKNOD_BITS = {FileType.CHR: stat.S_IFCHR, FileType.BLK: stat.S_IFBLK,
               FileType.SOCK: stat.S_IFSOCK, FileType.FIFO: stat.S_IFIFO}

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


def _maps_oserror(fn):
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


def _name(name, creating=False):
    """A single path component from the client, as bytes. NFS3ERR_INVAL for what
    cannot be one (empty, "/" or NUL inside); EXIST for "." and ".." when
    creating (they always exist)."""
    if isinstance(name, str):
        name = os.fsencode(name)
    if not isinstance(name, bytes):
        raise FsError(nfsstat3.NFS3ERR_INVAL, "name is not bytes")
    if len(name) > NAME_MAX:
        raise FsError(nfsstat3.NFS3ERR_NAMETOOLONG)
    if not name or b"/" in name or b"\0" in name:
        raise FsError(nfsstat3.NFS3ERR_INVAL, f"bad name {name!r}")
    if creating and name in (b".", b".."):
        raise FsError(nfsstat3.NFS3ERR_EXIST, f"{name!r} exists")
    return name


def _proc(fd):
    return f"/proc/self/fd/{fd}"


# utimensat() with UTIME_NOW/UTIME_OMIT: os.utime cannot leave one time alone.
_libc = ctypes.CDLL(None, use_errno=True)
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_timespec), ctypes.c_int]
_libc.futimens.argtypes = [ctypes.c_int, ctypes.POINTER(_timespec)]
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                           ctypes.c_int]
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: leave alone


def _check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _set_times(fd, atime, mtime):
    """atime/mtime: None (leave), SET_TO_SERVER_TIME or nanoseconds. Acts on the
    object itself (a symlink's own times for a symlink)."""
    if atime is None and mtime == SET_TO_SERVER_TIME:
        ts = _MTIME_NOW      # every WRITE
    else:
        ts = (_timespec * 2)()
        for i, t in enumerate((atime, mtime)):
            if t is None:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_OMIT
            elif t == SET_TO_SERVER_TIME:
                ts[i].tv_sec, ts[i].tv_nsec = 0, _UTIME_NOW
            else:
                ts[i].tv_sec, ts[i].tv_nsec = divmod(int(t), 1_000_000_000)
    # On the descriptor itself when it is an open file (no path to walk); an
    # O_PATH descriptor (EBADF there) through its /proc link.
    if _libc.futimens(fd, ts) == 0:
        return
    if ctypes.get_errno() != errno.EBADF:
        _check(-1)
    _check(_libc.utimensat(_AT_FDCWD, _proc(fd).encode(), ts, 0))


_MTIME_NOW = (_timespec * 2)(_timespec(0, _UTIME_OMIT), _timespec(0, _UTIME_NOW))


def _chown(fd, uid, gid):
    _check(_libc.fchownat(fd, b"", _NO_ID if uid is None else uid, _NO_ID if gid is None else gid,
                          _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW))


class _Listing:
    """A directory's entries sorted by cookie, and each name's cookie. Entries
    whose names hash alike share a cookie and are always returned in one page."""

    __slots__ = ("keys", "names", "inos", "keyof", "mtime_ns", "ctime_ns")

    def __init__(self, rows, keyof, st):
        self.keys = [r[0] for r in rows]
        self.names = [r[1] for r in rows]
        self.inos = [r[2] for r in rows]
        self.keyof = keyof
        self.stamp(st)

    def stamp(self, st):
        # Linux >= 6.13 gives a change following a stat() a finer timestamp than
        # the one that stat() saw (multigrain timestamps), so a change made by
        # someone else right after we read the directory still shows. Older
        # kernels may miss such a change within one clock tick; only changes
        # made outside this server are exposed to that.
        self.mtime_ns, self.ctime_ns = st.st_mtime_ns, st.st_ctime_ns

    def matches(self, st):
        return self.mtime_ns == st.st_mtime_ns and self.ctime_ns == st.st_ctime_ns

    def _position(self, key, name):
        lo = bisect.bisect_left(self.keys, key)
        hi = bisect.bisect_right(self.keys, key, lo)
        return bisect.bisect_left(self.names, name, lo, hi), hi

    def add(self, key, name, ino):
        i, hi = self._position(key, name)
        if i < hi and self.names[i] == name:
            self.inos[i] = ino
            return
        self.keys.insert(i, key)
        self.names.insert(i, name)
        self.inos.insert(i, ino)
        self.keyof[name] = key

    def discard(self, name):
        key = self.keyof.pop(name, None)
        if key is None:
            return
        i, hi = self._position(key, name)
        if i < hi and self.names[i] == name:
            del self.keys[i], self.names[i], self.inos[i]


class MetaFS:
    """One exported directory. All methods but read/write/commit are synchronous
    (small local metadata syscalls; the event loop does not wait on the network
    for them). Use from one thread (the event loop's); the data path may use
    worker threads of its own.

    ``purge(ino, seed)`` receives the data of files whose last link went away
    (default: datapath.purge). ``sync_metadata``: namespace changes and metafile
    size changes are made durable (fsync) before replying, as an NFS server must
    unless exported "async"."""

    def __init__(self, export_path, export_id, handle_key, datapath, purge=None, *,
                 sync_metadata=True, cache_size=4096):
        self.export_path = os.path.abspath(export_path)
        self.export_id = export_id
        self.fsid = export_id
        self.datapath = datapath
        self._purge = purge if purge is not None else datapath.purge
        self.sync_metadata = sync_metadata
        self._root_fd = os.open(self.export_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self._root_fd)
        self.dev = st.st_dev
        self._root_ino = st.st_ino
        self.codec = HandleCodec(export_id, handle_key, self._root_fd, st.st_dev, cache_size)
        self.root_fh = self.codec.encode_fd(self._root_fd)
        self._cookie_key = hmac.digest(handle_key, b"nfsp readdir cookie", "sha256")[:32]
        self._cookieverf_key = hmac.digest(handle_key, b"nfsp readdir verifier", "sha256")
        self._stripe_unit = getattr(datapath, "stripe_unit", DEFAULT_STRIPE_UNIT)
        self._layout_gen = getattr(datapath, "layout_gen", 0)
        self._meta = collections.OrderedDict()  # (dev, ino) -> (mtime, ctime, st_size, Metafile)
        self._bad = set()  # (dev, ino, ctime) of non-metafiles already logged
        self._listings = collections.OrderedDict()  # (dev, ino, bits) -> _Listing
        self._meta_unsynced = set()  # (dev, ino): size grown by UNSTABLE writes, not fsynced
        self._settling = {}  # (dev, ino) -> trio.Lock
        self._acl_free = {}  # (dev, ino) -> ctime of a directory seen without an access ACL
        self.meta_lookups = 0  # metafile-cache effectiveness, for `nfsp status`
        self.meta_hits = 0

    def close(self):
        self.codec.close()
        os.close(self._root_fd)

    # -- opening handles, attributes ---------------------------------------------

    def _open(self, fh):
        """(borrowed fd, canonical fh, stat) of a live object of this export."""
        fd, cfh = self.codec.open(fh)
        st = os.fstat(fd)
        if st.st_nlink == 0:
            self.codec.forget(cfh)
            raise FsError(nfsstat3.NFS3ERR_STALE, "object was removed")
        return fd, cfh, st

    def _dir(self, fh):
        fd, cfh, st = self._open(fh)
        if not stat.S_ISDIR(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_NOTDIR)
        return fd, cfh, st

    def _adopt(self, fd, st=None):
        """Hand an fd we opened on an object of the export to the handle cache:
        (cached fd, canonical fh)."""
        try:
            cfh = self.codec.encode_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        return self.codec.adopt(fd, cfh, st), cfh

    def _metafile(self, fd, st):
        key = (st.st_dev, st.st_ino)
        hit = self._meta.get(key)
        self.meta_lookups += 1
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_ctime_ns \
                and hit[2] == st.st_size:
            self.meta_hits += 1
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
        self._remember(key, st, meta)
        return meta

    def _remember(self, key, st, meta):
        self._meta[key] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, meta)
        self._meta.move_to_end(key)
        if len(self._meta) > _META_CACHED:
            self._meta.popitem(last=False)

    def _store(self, fd, meta, sync):
        """Rewrite a metafile; returns its new stat."""
        data = meta.encode()
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.EIO, "short metafile write")
        if sync:
            os.fdatasync(fd)
        st = os.fstat(fd)
        self._remember((st.st_dev, st.st_ino), st, meta)
        return st

    def _attr(self, fd, st, meta=None):
        # Made for nearly every reply: fields set directly, not through
        # Attr's keyword constructor (a third of a GETATTR's cost).
        mode = st.st_mode
        fmt = mode & 0o170000
        a = _new(Attr)
        if fmt == stat.S_IFREG:
            if meta is None:
                meta = self._metafile(fd, st)
            a.size = size = meta.size
            a.used = -(-size // _USED_UNIT) * _USED_UNIT
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

    def _wcc_attr(self, fd, st):
        if stat.S_ISREG(st.st_mode):
            size = self._metafile(fd, st).size
        else:
            size = st.st_size
        return WccAttr(size, st.st_mtime_ns, st.st_ctime_ns)

    def _post(self, fd):
        """Post-operation attributes, or None when they cannot be had (RFC 1813
        lets wcc data be absent rather than fail an operation that succeeded)."""
        try:
            return self._attr(fd, os.fstat(fd))
        except (OSError, FsError):
            return None

    def _sync_dir(self, dir_fd):
        if not self.sync_metadata:
            return
        fd = os.open(_proc(dir_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _pin(self, dir_fd, name, caller):
        """An O_PATH fd on name (not following a symlink) opened with the caller's
        search permission, and its stat."""
        with as_caller(caller.uid, caller.gid, caller.gids):
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def _meta_of_pinned(self, fd, st):
        """The metafile behind an O_PATH fd, None if it is not a valid one."""
        try:
            hit = self._meta.get((st.st_dev, st.st_ino))
            if hit is not None and hit[:3] == (st.st_mtime_ns, st.st_ctime_ns, st.st_size):
                return hit[3]
            try:  # O_NOATIME: see HandleCodec.adopt
                rfd = os.open(_proc(fd), os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC)
            except PermissionError:
                rfd = os.open(_proc(fd), os.O_RDONLY | os.O_CLOEXEC)
            try:
                return self._metafile(rfd, st)
            finally:
                os.close(rfd)
        except (OSError, FsError):
            return None

    def _gone(self, st, meta):
        """An object lost its last link: drop what we cached about it, and hand
        a metafile's data to the purge sink."""
        key = (st.st_dev, st.st_ino)
        self.codec.forget_ino(st.st_ino)
        self._meta.pop(key, None)
        self._meta_unsynced.discard(key)
        if meta is not None:
            try:
                self._purge(st.st_ino, meta.seed)
            except Exception:
                log.exception("purge of inode %d seed %#x failed", st.st_ino, meta.seed)

    def _searchable_by_all(self, dfd, st):
        """May every caller search this directory? Then looking a name up in it
        needs no switch to the caller's credentials (six system calls, 10-15 µs):
        x for owner, group and others, and no access ACL (which could refuse a
        named user or group). That it has none is cached under its ctime, which
        setting an ACL changes (timestamp granularity: see _Listing.stamp)."""
        if st.st_mode & 0o111 != 0o111:
            return False
        key = (st.st_dev, st.st_ino)
        if self._acl_free.get(key) == st.st_ctime_ns:
            return True
        try:
            os.getxattr(_proc(dfd), "system.posix_acl_access")
            return False
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                return False
        if len(self._acl_free) >= _META_CACHED:
            self._acl_free.clear()
        self._acl_free[key] = st.st_ctime_ns
        return True

    @staticmethod
    def _check_writable(caller):
        if caller.readonly:
            raise FsError(nfsstat3.NFS3ERR_ROFS)

    # -- directory listings -------------------------------------------------------

    def _cookie(self, name, bits):
        digest = hashlib.blake2b(name, key=self._cookie_key, digest_size=8).digest()
        h = int.from_bytes(digest, "big")
        h >>= 1 if bits == 64 else 64 - bits
        return h if h > 2 else 3  # 0 starts a listing, 1 and 2 are "." and ".."

    def _listing(self, dir_fd, st, bits):
        key = (st.st_dev, st.st_ino, bits)
        cached = self._listings.get(key)
        if cached is not None and cached.matches(st):
            self._listings.move_to_end(key)
            return cached
        with os.scandir(_proc(dir_fd).encode()) as it:  # bytes path: bytes names
            raw = {e.name: e.inode() for e in it}
        st = os.fstat(dir_fd)
        cookie = self._cookie
        if cached is not None:
            # Changed behind our back: patch the old listing when that is cheaper
            # than sorting anew.
            keyof, names, inos = cached.keyof, cached.names, cached.inos
            removed = [n for n in keyof if n not in raw]
            if len(removed) <= max(1000, len(raw) // 20):
                for n in removed:
                    cached.discard(n)
                changed = [i for i, n in enumerate(names) if raw[n] != inos[i]]
                for i in changed:
                    inos[i] = raw[names[i]]
                if len(raw) > len(names):
                    for n in raw:
                        if n not in keyof:
                            cached.add(cookie(n, bits), n, raw[n])
                cached.stamp(st)
                self._listings.move_to_end(key)
                return cached
        old = cached.keyof if cached is not None else {}
        keyof = {n: old.get(n) or cookie(n, bits) for n in raw}
        rows = sorted((keyof[n], n, ino) for n, ino in raw.items())
        listing = _Listing(rows, keyof, st)
        self._listings[key] = listing
        self._listings.move_to_end(key)
        while len(self._listings) > _LISTINGS_CACHED:
            self._listings.popitem(last=False)
        return listing

    def _listing_changed(self, dir_st_before, dir_fd, added=(), removed=()):
        """Keep cached listings of a directory we just changed in step (cheaper
        than re-reading 100,000 entries), if they were current before the change."""
        for bits in (64, 32):
            key = (dir_st_before.st_dev, dir_st_before.st_ino, bits)
            listing = self._listings.get(key)
            if listing is None:
                continue
            if not listing.matches(dir_st_before):
                continue  # already behind: the next read compares it with the directory
            for name in removed:
                listing.discard(name)
            for name, ino in added:
                listing.add(self._cookie(name, bits), name, ino)
            listing.stamp(os.fstat(dir_fd))

    def cookieverf(self, dir_fh):
        """The cookie verifier of a directory: fixed for its lifetime, so that
        changes to it do not send clients back to the start."""
        _, cfh, _ = self._open(dir_fh)
        return self._verf_of(cfh)

    def _verf_of(self, cfh):
        return hmac.digest(self._cookieverf_key, cfh, "sha256")[:8]

    # -- the operations -------------------------------------------------------------

    # getattr, lookup and access map OSError themselves: the decorator's
    # *args/**kwargs call was a tenth of a GETATTR.

    def getattr(self, fh):
        try:
            fd, _, st = self._open(fh)
            return self._attr(fd, st)
        except OSError as e:
            raise fs_error_of(e) from None

    @_maps_oserror
    def setattr(self, fh, caller, sattr, guard_ctime_ns=None):
        self._check_writable(caller)
        fd, cfh, st = self._open(fh)
        if guard_ctime_ns is not None and st.st_ctime_ns != guard_ctime_ns:
            raise FsError(nfsstat3.NFS3ERR_NOT_SYNC)
        regular = stat.S_ISREG(st.st_mode)
        meta = self._metafile(fd, st) if regular else None
        pre = WccAttr(meta.size if regular else st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        size = sattr.size
        if size is not None:
            if stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_ISDIR)
            if not regular:
                raise FsError(nfsstat3.NFS3ERR_INVAL)
            if size > MAX_SIZE:
                raise FsError(nfsstat3.NFS3ERR_FBIG)
            if not may_write(st.st_mode, st.st_uid, st.st_gid, caller):
                raise FsError(nfsstat3.NFS3ERR_ACCES)
        mode = sattr.mode
        if mode is not None and stat.S_ISLNK(st.st_mode):
            mode = None  # Linux symlinks have no mode of their own
        with as_caller(caller.uid, caller.gid, caller.gids):
            if sattr.uid is not None or sattr.gid is not None:
                _chown(fd, sattr.uid, sattr.gid)
            if mode is not None:
                os.chmod(_proc(fd), mode & 0o7777)
        if regular and (size is not None or meta.create_verf is not None):
            new = meta.replace(create_verf=None)
            if size is not None and size != meta.size:
                new = new.replace(size=size)
                if size < meta.size:
                    pending = size if meta.trunc_to is None else min(meta.trunc_to, size)
                    new = new.replace(trunc_to=pending)
            self._store(fd, new, self.sync_metadata)
            if size is not None:
                # A truncate changes mtime/ctime (even to the same size) and
                # costs an unprivileged caller its setuid/setgid bits.
                _set_times(fd, None, SET_TO_SERVER_TIME)
                self._drop_privs(fd, caller)
        if sattr.atime is not None or sattr.mtime is not None:
            with as_caller(caller.uid, caller.gid, caller.gids):
                _set_times(fd, sattr.atime, sattr.mtime)
        return Wcc(pre, self._post(fd))

    def _drop_privs(self, fd, caller):
        if caller.uid == 0:
            return
        m = os.fstat(fd).st_mode
        keep = m & 0o7777 & ~stat.S_ISUID
        if m & stat.S_IXGRP:
            keep &= ~stat.S_ISGID
        if keep != m & 0o7777:
            os.chmod(_proc(fd), keep)

    def lookup(self, dir_fh, name, caller):
        try:
            return self._lookup(dir_fh, name, caller)
        except OSError as e:
            raise fs_error_of(e) from None

    def _lookup(self, dir_fh, name, caller):
        dfd, dcfh, dst = self._dir(dir_fh)
        name = _name(name)
        if name == b"." or name == b"..":
            if not permitted(dst.st_mode, dst.st_uid, dst.st_gid, caller, X):
                raise FsError(nfsstat3.NFS3ERR_ACCES)
            dattr = self._attr(dfd, dst)
            if name == b"." or dst.st_ino == self._root_ino:
                if name == b"..":
                    return self.root_fh, self._attr(*self._open(self.root_fh)[::2]), dattr
                return dcfh, dattr, dattr
            pfd = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        else:
            dattr = self._attr(dfd, dst)
            # Usually the object is in the handle cache already: one fstatat
            # then finds it (its cached fd keeps the inode, so the number
            # cannot name another object meanwhile) instead of open, fstat and
            # close. The search permission is checked by the kernel either way.
            if (caller.uid or caller.gid) and not self._searchable_by_all(dfd, dst):
                with as_caller(caller.uid, caller.gid, caller.gids):
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            else:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if st.st_dev == self.dev:
                hit = self.codec.cached_inode(st.st_ino)
                if hit is not None:
                    return hit[1], self._attr(hit[0], st), dattr
            pfd, _ = self._pin(dfd, name, caller)
        st = os.fstat(pfd)
        if st.st_dev != self.dev:
            os.close(pfd)
            # A file system mounted inside the export: not exported with it.
            raise FsError(nfsstat3.NFS3ERR_ACCES, "mount point")
        hit = self.codec.cached_inode(st.st_ino)
        if hit is not None:
            os.close(pfd)
            fd, cfh = hit
        else:
            fd, cfh = self._adopt(pfd, st)
        return cfh, self._attr(fd, st), dattr

    def access(self, fh, caller, mask):
        try:
            fd, _, st = self._open(fh)
            return access3(st.st_mode, st.st_uid, st.st_gid, caller, mask), self._attr(fd, st)
        except OSError as e:
            raise fs_error_of(e) from None

    @_maps_oserror
    def readlink(self, fh, caller):
        fd, _, st = self._open(fh)
        if not stat.S_ISLNK(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_INVAL, "not a symlink")
        return os.readlink(b"", dir_fd=fd), self._attr(fd, st)

    @_maps_oserror
    def create(self, dir_fh, name, caller, how, sattr, verf=None):
        self._check_writable(caller)
        how = CreateHow(how)
        sattr = sattr if sattr is not None else SetAttr()
        dfd, dcfh, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        if how == CreateHow.EXCLUSIVE:
            if not isinstance(verf, bytes) or len(verf) != 8:
                raise FsError(nfsstat3.NFS3ERR_INVAL, "exclusive create needs an 8-byte verifier")
        else:
            verf = None
        pre = self._wcc_attr(dfd, dst)
        mode = 0o644 if sattr.mode is None else sattr.mode & 0o7777
        meta = Metafile(new_seed(), 0, self._stripe_unit, self._layout_gen, create_verf=verf)
        try:
            fd = self._create_metafile(dfd, name, caller, mode, meta)
        except FileExistsError:
            return self._create_existing(dfd, dst, name, caller, how, sattr, verf, pre)
        st = os.fstat(fd)
        self._remember((st.st_dev, st.st_ino), st, meta)
        fd, cfh = self._adopt(fd, st)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        rest = SetAttr(uid=sattr.uid, gid=sattr.gid, atime=sattr.atime, mtime=sattr.mtime,
                       size=sattr.size or None)
        if rest.uid is not None or rest.gid is not None:
            rest.mode = sattr.mode  # chown clears setuid/setgid: set the mode after it

        if any(v is not None for v in (rest.uid, rest.gid, rest.atime, rest.mtime, rest.size)):
            self.setattr(cfh, caller, rest)
        self._sync_dir(dfd)
        return cfh, self._attr(*self._open(cfh)[::2]), Wcc(pre, self._post(dfd))

    def _create_metafile(self, dfd, name, caller, mode, meta):
        """The new metafile as an O_RDWR fd. Written before it gets its name (an
        O_TMPFILE linked in), so nobody ever sees a half-made metafile, even
        after a crash."""
        data = meta.encode()
        with as_caller(caller.uid, caller.gid, caller.gids):
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=dfd)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                fd = None
            if fd is None:
                # No O_TMPFILE here: the name exists for a moment with no content.
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(name, flags, mode, dir_fd=dfd)
                try:
                    if os.fstat(fd).st_mode & 0o7777 != mode:
                        os.fchmod(fd, mode)
                    os.pwrite(fd, data, 0)
                    if self.sync_metadata:
                        os.fdatasync(fd)
                except BaseException:
                    os.unlink(name, dir_fd=dfd)
                    os.close(fd)
                    raise
                return fd
            try:
                if os.fstat(fd).st_mode & 0o7777 != mode:
                    os.fchmod(fd, mode)  # the daemon's umask must not apply
                os.pwrite(fd, data, 0)
                if self.sync_metadata:
                    os.fdatasync(fd)
                os.link(_proc(fd), name, dst_dir_fd=dfd, follow_symlinks=True)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _create_existing(self, dfd, dst, name, caller, how, sattr, verf, pre):
        if how == CreateHow.GUARDED:
            raise FsError(nfsstat3.NFS3ERR_EXIST)
        pfd, st = self._pin(dfd, name, caller)
        if not stat.S_ISREG(st.st_mode):
            os.close(pfd)
            raise FsError(nfsstat3.NFS3ERR_EXIST)
        fd, cfh = self._adopt(pfd, st)
        if how == CreateHow.EXCLUSIVE:
            meta = self._metafile(fd, st)
            if meta.create_verf != verf:
                raise FsError(nfsstat3.NFS3ERR_EXIST)
        elif sattr.size is not None:
            self.setattr(cfh, caller, SetAttr(size=sattr.size))
        return cfh, self._attr(*self._open(cfh)[::2]), Wcc(pre, self._post(dfd))

    def _made(self, dfd, dst, name, caller, pre, sattr, mode=None):
        """After mkdir/symlink/mknod: the handle and attributes of the new object,
        with the mode made exact and the other attributes applied."""
        fd, st = self._pin(dfd, name, caller)
        fd, cfh = self._adopt(fd, st)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        if mode is not None and st.st_mode & 0o7777 != mode:
            with as_caller(caller.uid, caller.gid, caller.gids):
                os.chmod(_proc(fd), mode)
        if sattr is not None and any(v is not None for v in (sattr.uid, sattr.gid, sattr.atime,
                                                             sattr.mtime)):
            self.setattr(cfh, caller, SetAttr(uid=sattr.uid, gid=sattr.gid, atime=sattr.atime,
                                              mtime=sattr.mtime))
        self._sync_dir(dfd)
        return cfh, self._attr(*self._open(cfh)[::2]), Wcc(pre, self._post(dfd))

    @_maps_oserror
    def mkdir(self, dir_fh, name, caller, sattr):
        self._check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        pre = self._wcc_attr(dfd, dst)
        mode = 0o755 if sattr is None or sattr.mode is None else sattr.mode & 0o7777
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.mkdir(name, mode, dir_fd=dfd)
        # Keep a setgid bit inherited from the parent, as mkdir(2) does.
        mode |= dst.st_mode & stat.S_ISGID
        return self._made(dfd, dst, name, caller, pre, sattr, mode)

    @_maps_oserror
    def symlink(self, dir_fh, name, caller, target, sattr):
        self._check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        if isinstance(target, str):
            target = os.fsencode(target)
        if len(target) >= PATH_MAX:
            raise FsError(nfsstat3.NFS3ERR_NAMETOOLONG)
        if b"\0" in target:
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        pre = self._wcc_attr(dfd, dst)
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.symlink(target, name, dir_fd=dfd)
        return self._made(dfd, dst, name, caller, pre, sattr)

    @_maps_oserror
    def mknod(self, dir_fh, name, caller, ftype, sattr, rdev=(0, 0)):
        self._check_writable(caller)
        bits = _MKNOD_BITS.get(ftype)
        if bits is None:
            raise FsError(nfsstat3.NFS3ERR_BADTYPE)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name, creating=True)
        pre = self._wcc_attr(dfd, dst)
        mode = 0o644 if sattr is None or sattr.mode is None else sattr.mode & 0o7777
        dev = 0
        if bits in (stat.S_IFCHR, stat.S_IFBLK):
            major, minor = rdev
            # What a Linux dev_t holds (12-bit major, 20-bit minor), as nfsd
            # checks; larger numbers are refused (the wire allows 32 bits).
            if not (0 <= major < 1 << 12 and 0 <= minor < 1 << 20):
                raise FsError(nfsstat3.NFS3ERR_INVAL, f"device {major}:{minor}")
            dev = os.makedev(major, minor)
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.mknod(name, bits | mode, dev, dir_fd=dfd)
        return self._made(dfd, dst, name, caller, pre, sattr, mode)

    @_maps_oserror
    def remove(self, dir_fh, name, caller):
        self._check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name)
        pre = self._wcc_attr(dfd, dst)
        pin, st = self._pin(dfd, name, caller)
        try:
            if stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_ISDIR)
            meta = self._meta_of_pinned(pin, st) if stat.S_ISREG(st.st_mode) else None
            with as_caller(caller.uid, caller.gid, caller.gids):
                os.unlink(name, dir_fd=dfd)
            # Counted after the unlink, on the pinned inode: a LINK racing with
            # us cannot make us purge data that is still reachable.
            after = os.fstat(pin)
        finally:
            os.close(pin)
        self._listing_changed(dst, dfd, removed=(name,))
        # The removal must be durable before the data is handed to the purge
        # sink: after a crash, a metafile whose stripes were purged would come
        # back (data loss); the other order can only leak, which scrub finds.
        self._sync_dir(dfd)
        if after.st_nlink == 0:
            self._gone(after, meta)
        return Wcc(pre, self._post(dfd))

    @_maps_oserror
    def rmdir(self, dir_fh, name, caller):
        self._check_writable(caller)
        dfd, _, dst = self._dir(dir_fh)
        name = _name(name)
        if name == b".":
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        if name == b"..":
            raise FsError(nfsstat3.NFS3ERR_NOTEMPTY)
        pre = self._wcc_attr(dfd, dst)
        pin, st = self._pin(dfd, name, caller)
        try:
            if not stat.S_ISDIR(st.st_mode):
                raise FsError(nfsstat3.NFS3ERR_NOTDIR)
            with as_caller(caller.uid, caller.gid, caller.gids):
                os.rmdir(name, dir_fd=dfd)
        finally:
            os.close(pin)
        self._listing_changed(dst, dfd, removed=(name,))
        self._gone(st, None)
        self._sync_dir(dfd)
        return Wcc(pre, self._post(dfd))

    @_maps_oserror
    def rename(self, from_dir_fh, from_name, to_dir_fh, to_name, caller):
        self._check_writable(caller)
        ffd, _, fst = self._dir(from_dir_fh)
        from_name = _name(from_name)
        tfd, _, tst = self._dir(to_dir_fh)
        to_name = _name(to_name)
        if from_name in (b".", b"..") or to_name in (b".", b".."):
            raise FsError(nfsstat3.NFS3ERR_INVAL)
        fpre, tpre = self._wcc_attr(ffd, fst), self._wcc_attr(tfd, tst)
        spin, sst = self._pin(ffd, from_name, caller)
        try:
            try:
                tpin, tpst = self._pin(tfd, to_name, caller)
            except FileNotFoundError:
                tpin = tpst = None
            try:
                tmeta = None
                if tpst is not None and stat.S_ISREG(tpst.st_mode) and \
                        (tpst.st_dev, tpst.st_ino) != (sst.st_dev, sst.st_ino):
                    tmeta = self._meta_of_pinned(tpin, tpst)
                with as_caller(caller.uid, caller.gid, caller.gids):
                    os.rename(from_name, to_name, src_dir_fd=ffd, dst_dir_fd=tfd)
                after = os.fstat(tpin) if tpin is not None else None
            finally:
                if tpin is not None:
                    os.close(tpin)
        finally:
            os.close(spin)
        same_dir = (fst.st_dev, fst.st_ino) == (tst.st_dev, tst.st_ino)
        onto_itself = tpst is not None and (sst.st_dev, sst.st_ino) == (tpst.st_dev, tpst.st_ino)
        if not onto_itself:
            if same_dir:
                self._listing_changed(fst, ffd, removed=(from_name,),
                                      added=((to_name, sst.st_ino),))
            else:
                self._listing_changed(fst, ffd, removed=(from_name,))
                self._listing_changed(tst, tfd, added=((to_name, sst.st_ino),))
        self._sync_dir(ffd)  # durable before purging: see remove()
        if not same_dir:
            self._sync_dir(tfd)
        if after is not None and after.st_nlink == 0:
            self._gone(after, tmeta)
        return Wcc(fpre, self._post(ffd)), Wcc(tpre, self._post(tfd))

    @_maps_oserror
    def link(self, fh, dir_fh, name, caller):
        self._check_writable(caller)
        name = _name(name, creating=True)
        fd, cfh, st = self._open(fh)
        dfd, _, dst = self._dir(dir_fh)
        if stat.S_ISDIR(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_ISDIR)
        pre = self._wcc_attr(dfd, dst)
        with as_caller(caller.uid, caller.gid, caller.gids):
            os.link(_proc(fd), name, dst_dir_fd=dfd, follow_symlinks=True)
        self._listing_changed(dst, dfd, added=((name, st.st_ino),))
        self._sync_dir(dfd)
        return self._attr(*self._open(cfh)[::2]), Wcc(pre, self._post(dfd))

    @_maps_oserror
    def readdir(self, dir_fh, cookie, cookieverf, caller, max_entries, cookie_bits=64,
                budget=None, entry_size=None):
        """See the contract above. cookie_bits=32 for NFSv2 (cookies below 2**32).
        Entries whose names hash to the same cookie always come in the same page:
        a caller that cuts a page short must cut where the cookie changes (or
        pass budget and entry_size(name) -> bytes to have it done here)."""
        if cookie_bits not in (32, 64):
            raise ValueError("cookie_bits must be 32 or 64")
        dfd, dcfh, dst = self._dir(dir_fh)
        if not permitted(dst.st_mode, dst.st_uid, dst.st_gid, caller, R):
            raise FsError(nfsstat3.NFS3ERR_ACCES)
        verf = self._verf_of(dcfh)
        if cookie and cookieverf is not None and bytes(cookieverf) not in (verf, _ZERO_VERF):
            raise FsError(nfsstat3.NFS3ERR_BAD_COOKIE)
        if cookie >= 1 << cookie_bits:
            raise FsError(nfsstat3.NFS3ERR_BAD_COOKIE)
        listing = self._listing(dfd, dst, cookie_bits)
        max_entries = max(1, max_entries)
        out, used = [], 0

        def fits(name):
            nonlocal used
            if budget is None:
                return True
            cost = entry_size(name)
            if used + cost > budget:
                return False
            used += cost
            return True

        stop = False
        if cookie == 0:
            if not fits(b"."):
                raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
            out.append(DirEntry(dst.st_ino, b".", 1))
        if cookie <= 1:
            if len(out) >= max_entries or not fits(b".."):
                stop = True
            else:
                if dst.st_ino == self._root_ino:
                    pino = dst.st_ino
                else:
                    pino = os.stat("..", dir_fd=dfd, follow_symlinks=False).st_ino
                out.append(DirEntry(pino, b"..", 2))
        keys, names, inos = listing.keys, listing.names, listing.inos
        n = len(keys)
        i = 0 if cookie <= 2 else bisect.bisect_right(keys, cookie)
        while not stop and i < n and len(out) < max_entries:
            # Entries sharing a cookie go out together or not at all.
            j = i + 1
            if j < n and keys[j] == keys[i]:
                j = bisect.bisect_right(keys, keys[i], i)
            if out and len(out) + (j - i) > max_entries:
                break
            if not all(fits(names[k]) for k in range(i, j)):
                if not out:
                    raise FsError(nfsstat3.NFS3ERR_TOOSMALL)
                break
            out.extend(DirEntry(inos[k], names[k], keys[k]) for k in range(i, j))
            i = j
        return out, not stop and i >= n, verf, self._attr(dfd, dst)

    @_maps_oserror
    def fsstat(self, fh):
        self._open(fh)
        st = os.statvfs(self._root_fd)
        space = self.datapath.space() if hasattr(self.datapath, "space") else None
        if space is None:
            space = (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize)
        return FsStat(space[0], space[1], space[2], st.f_files, st.f_ffree, st.f_favail)

    def pathconf(self, fh, name):
        """os.pathconf of the object (e.g. "PC_LINK_MAX"), for PATHCONF/FSINFO."""
        fd, _, _ = self._open(fh)
        return os.pathconf(_proc(fd), name)

    # -- data ---------------------------------------------------------------------

    def _regular(self, fh):
        fd, cfh, st = self._open(fh)
        if not stat.S_ISREG(st.st_mode):
            raise FsError(nfsstat3.NFS3ERR_ISDIR if stat.S_ISDIR(st.st_mode)
                          else nfsstat3.NFS3ERR_INVAL)
        return fd, cfh, st, self._metafile(fd, st)

    async def _settle(self, cfh):
        """Carry out a truncation recorded in the metafile before data moves, so
        that bytes cut off earlier never reappear when the file grows again."""
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
                    await self.datapath.truncate(meta, st.st_ino, target)
                    fd, cfh, st, meta = self._regular(cfh)
                    if meta.trunc_to is not None and meta.trunc_to >= target:
                        self._store(fd, meta.replace(trunc_to=None), self.sync_metadata)
                        return
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._settling.pop(key, None)

    @_maps_oserror
    async def read_plan(self, fh, caller, offset, count, at_stripe=False):
        """Everything a READ needs but the data: permission checked, a pending
        truncation carried out, (offset, count) cut at EOF and, with at_stripe,
        where the bytes stop being on one data server (a short read)."""
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
        # Every forwarded READ comes here: _maps_oserror's work done inline.
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
        return ReadPlan(meta, st.st_ino, offset, count, eof, self._attr(fd, st, meta))

    @_maps_oserror
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
        plan = await self.read_plan(fh, caller, offset, count)
        return await self.read_data(plan), plan.eof, plan.attr

    @_maps_oserror
    async def write_plan(self, fh, caller, offset, length, stable):
        """Everything a WRITE of ``length`` bytes at ``offset`` does but moving the
        data: checks, the metafile size first (a crash may then show zeros where
        data was being written, never a file shorter than what a client was
        told), mtime, setuid/setgid cleared; and the post-write attributes, so
        the reply can be built before the data reaches its data server."""
        fd, cfh, st, meta = self._write_checked(fh, caller, offset, length)
        if meta.trunc_to is not None:
            await self._settle(cfh)
            fd, cfh, st, meta = self._regular(cfh)
        return self._write_plan(fd, st, meta, caller, offset, length, stable)

    @_maps_oserror
    def write_plan_now(self, fh, caller, offset, length, stable):
        """write_plan() if it needs no waiting, else None (nothing done): a
        truncation is pending (rare), which only write_plan() carries out."""
        fd, cfh, st, meta = self._write_checked(fh, caller, offset, length)
        if meta.trunc_to is not None:
            return None
        return self._write_plan(fd, st, meta, caller, offset, length, stable)

    def _write_checked(self, fh, caller, offset, length):
        self._check_writable(caller)
        fd, cfh, st, meta = self._regular(fh)
        if not may_write(st.st_mode, st.st_uid, st.st_gid, caller):
            raise FsError(nfsstat3.NFS3ERR_ACCES)
        if offset < 0 or offset + length > MAX_SIZE:
            raise FsError(nfsstat3.NFS3ERR_FBIG)
        return fd, cfh, st, meta

    def _write_plan(self, fd, st, meta, caller, offset, length, stable):
        end = offset + length
        # Nothing changes for a write its data server cannot take now.
        self.datapath.ready(meta, offset, length)
        pre = WccAttr(meta.size, st.st_mtime_ns, st.st_ctime_ns)
        key = (st.st_dev, st.st_ino)
        if end > meta.size:
            meta = meta.replace(size=end)
            self._store(fd, meta, bool(stable))
            if not stable:
                self._meta_unsynced.add(key)
        _set_times(fd, None, SET_TO_SERVER_TIME)
        self._drop_privs(fd, caller)
        st = os.fstat(fd)
        # Only this process writes metafiles, and it keeps the cache current
        # when it does: a cached entry is the metafile's content.
        hit = self._meta.get(key)
        if hit is not None:
            meta = hit[3]
            self._remember(key, st, meta)
        else:
            meta = self._metafile(fd, st)
        committed = FILE_SYNC if stable else UNSTABLE
        return WritePlan(meta, st.st_ino, offset, length, bool(stable), committed,
                         Wcc(pre, self._attr(fd, st, meta)))

    @_maps_oserror
    async def write_data(self, plan, data):
        """Move a WritePlan's data to the data path; returns the write verifier
        to report (taken after the data landed: an answer may reveal that a
        data server restarted)."""
        if data:
            await self.datapath.write(plan.meta, plan.ino, plan.offset, data, plan.stable)
        return self.datapath.verifier

    async def write(self, fh, caller, offset, data, stable):
        plan = await self.write_plan(fh, caller, offset, len(data), stable)
        verf = await self.write_data(plan, data)
        return len(data), plan.committed, verf, plan.wcc

    # -- forwarding (the data server answers the client; UDP only) -------------------

    @property
    def forwards(self):
        return self.datapath.forwards

    @property
    def verifier(self):
        return self.datapath.verifier

    def max_io(self, transport):
        return self.datapath.max_io(transport)

    def forward_read(self, plan, head, ctx, on_error):
        """Have the data server send the READ reply (``head`` + data) to the
        client. False when it cannot be forwarded (the caller relays);
        ``on_error(errno, message)`` gives the reply bytes to send (or None
        for none) if the data server answers an error instead."""
        try:
            return self.datapath.forward_read(plan.meta, plan.ino, plan.offset, plan.count,
                                              head, ctx.client, ctx.local, on_error)
        except OSError as e:
            raise fs_error_of(e) from None

    @_maps_oserror
    def forward_write(self, plan, data, reply, ctx, on_error):
        """Have the data server write and then send ``reply`` to the client."""
        return self.datapath.forward_write(plan.meta, plan.ino, plan.offset, data, plan.stable,
                                           reply, ctx.client, ctx.local, on_error)

    @_maps_oserror
    async def commit(self, fh, caller, offset, count):
        fd, cfh, st, meta = self._regular(fh)
        if meta.trunc_to is not None:
            await self._settle(cfh)
            fd, cfh, st, meta = self._regular(cfh)
        pre = WccAttr(meta.size, st.st_mtime_ns, st.st_ctime_ns)
        key = (st.st_dev, st.st_ino)
        if key in self._meta_unsynced:
            os.fdatasync(fd)
            self._meta_unsynced.discard(key)
        await self.datapath.commit(meta, st.st_ino)
        try:
            fd, cfh, st = self._open(cfh)
        except FsError:
            return self.datapath.verifier, Wcc(pre, None)
        return self.datapath.verifier, Wcc(pre, self._attr(fd, st))
