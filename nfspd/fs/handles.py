"""NFS file handles built on the kernel's own (name_to_handle_at/open_by_handle_at).

A handle names an inode, not a path, so it survives renames of the object and
of every directory above it, and a restart of the daemon (the kernel handle
carries the inode generation, so a reused inode yields ESTALE, not a stranger's
file). Layout, at most 32 bytes so that it fits NFSv2's fixed fhandle::

    version u8 (=1) | export_id u32 | handle_type u8 | n u8 | kernel handle (n bytes) |
    HMAC-SHA256 truncated to mac_len(n) bytes

mac_len(n) = min(16, 25 - n) and must be >= 8, so the length of a handle follows
from its first 7 bytes; NFSv2 pads it with zeros to 32 bytes, and those trailing
zeros are accepted (and nothing else is).

open_by_handle_at opens ANY inode of the file system, so the MAC (keyed by the
export's persistent secret) is what keeps a guessed or forged handle from
reaching a file outside the export; objects not on the export's device are
refused as well.
"""

import collections
import errno
import hashlib
import hmac
import os
import resource
import struct
import threading

from common import hmacsha256
from common.nfs3 import nfsstat3
from nfspd.fs.syscalls import O_PATH, name_to_handle, open_by_handle, proc_path
from nfspd.fs.types import FsError

FHSIZE2 = 32
NFS3_FHSIZE = 64
VERSION = 1
_HEADER = struct.Struct(">BIBB")  # version, export_id, handle_type, n
MIN_MAC = 8
MAX_MAC = 16
MAX_KERNEL_HANDLE = FHSIZE2 - _HEADER.size - MIN_MAC  # 17
# Handles made lately, by kernel handle (the whole input of the MAC, so a hit
# is exactly what sealing again gives; the MAC, an HMAC-SHA256, costs 0.6 us
# from prepared states, common/hmacsha256.py)
# and by inode and ctime (see HandleCodec.known): a READDIRPLUS needs one per
# entry, the same ones each time a directory is listed again. Each cache is
# bounded to this many rows of ~200 bytes.
SEALED_CACHED = 16384


def mac_len(n):
    return min(MAX_MAC, FHSIZE2 - _HEADER.size - n)


def _bounded_put(cache, key, value):
    """cache[key] = value, the oldest entry dropped beyond SEALED_CACHED, first
    in, first out: no LRU bookkeeping on the hit path (which is every entry
    of a listing read again). ``cache`` is an OrderedDict, which gives its
    oldest entry in constant time: a dict finds its first entry by scanning
    past the slots of those deleted before it, thousands once it is full and
    turning over (a put into a full cache 4.1 us, against 0.37, measured;
    every new handle is a put)."""
    if len(cache) >= SEALED_CACHED:
        try:
            cache.popitem(last=False)
        except KeyError:
            pass  # (another thread emptied it meanwhile)
    cache[key] = value


def export_id_for_path(path):
    """A stable u32 naming an export, derived from its absolute path."""
    p = os.fsencode(os.path.abspath(os.fsdecode(path)))
    return int.from_bytes(hashlib.sha256(b"nfsp-export\0" + p).digest()[:4], "big")


def _split(fh):
    """(export_id, handle_type, kernel_bytes, canonical_length) or None when fh is not
    shaped like one of our handles (MAC not checked)."""
    if type(fh) is not bytes:
        if not isinstance(fh, (bytes, bytearray, memoryview)):
            return None
        fh = bytes(fh)
    size = len(fh)
    if size < _HEADER.size:
        return None
    version, export_id, htype, n = _HEADER.unpack_from(fh)
    if version != VERSION or not 0 < n <= MAX_KERNEL_HANDLE:
        return None
    length = _LENGTH[n]
    if not length <= size <= NFS3_FHSIZE or (size != length and fh[length:].strip(b"\0")):
        return None
    return export_id, htype, fh[_HEADER.size:_HEADER.size + n], length


_LENGTH = {n: _HEADER.size + n + mac_len(n) for n in range(1, MAX_KERNEL_HANDLE + 1)}


def export_id_of(fh):
    """The export a handle claims to belong to, or None if it is malformed."""
    if type(fh) is bytes and len(fh) >= _HEADER.size:
        # Every call's handle, usually as this server made it (no NFSv2
        # padding): _split's answer without slicing out the kernel handle.
        version, export_id, _, n = _HEADER.unpack_from(fh)
        if version == VERSION and 0 < n <= MAX_KERNEL_HANDLE and _LENGTH[n] == len(fh):
            return export_id
    parts = _split(fh)
    return None if parts is None else parts[0]


def _fd_budget():
    """The process's descriptor limit, raised to the hard limit (a server keeps
    many files open; the soft default of 1024 is meant for interactive use)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class HandleCodec:
    """Makes and opens the handles of one export.

    ``mount_fd`` is any fd (not O_PATH) on the export's file system, ``dev``
    its st_dev. Opened objects are kept as fds in a bounded LRU keyed by the
    canonical handle; ``open()`` returns a borrowed fd valid until the next call
    that may evict (callers use it at once, on one thread, and never keep it).
    """

    def __init__(self, export_id, key, mount_fd, dev=None, cache_size=4096):
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("handle key must be at least 16 bytes")
        if not 0 <= export_id < 1 << 32:
            raise ValueError("export id must be a u32")
        self.export_id = export_id
        self.mount_fd = mount_fd
        self.dev = os.fstat(mount_fd).st_dev if dev is None else dev
        self._mac = hmacsha256.Prepared(hmac.digest(key, b"nfsp file handle v1", "sha256"))
        self._cache = collections.OrderedDict()  # canonical fh -> (fd, ino)
        self._by_ino = {}  # ino -> set of canonical fh, to drop a removed object
        # Callers use two borrowed fds at once (a directory and an entry): at
        # least that many must survive one insertion. At most a quarter of the
        # descriptors the process may have, so the cache never causes EMFILE.
        self._cache_size = max(16, min(cache_size, _fd_budget() // 4))
        self._lock = threading.Lock()
        # First in, first out (_bounded_put):
        self._sealed = collections.OrderedDict()  # (htype, kernel handle) -> canonical fh
        self._minted = collections.OrderedDict()  # ino -> (ctime_ns, canonical fh)

    # -- making handles ------------------------------------------------------

    def _seal(self, htype, data):
        sealed = self._sealed
        fh = sealed.get((htype, data))
        if fh is not None:
            return fh
        fh = self._mac_seal(htype, data)
        _bounded_put(sealed, (htype, data), fh)
        return fh

    def _mac_seal(self, htype, data):
        n = len(data)
        if n > MAX_KERNEL_HANDLE or not 0 <= htype < 256:
            # A file system with long handles (e.g. btrfs with 64-bit subvolume
            # ids) cannot be exported within NFSv2's 32 bytes.
            raise FsError(nfsstat3.NFS3ERR_NOTSUPP, f"kernel handle of {n} bytes is too long")
        body = _HEADER.pack(VERSION, self.export_id, htype, n) + data
        return body + self._mac.digest(body)[:mac_len(n)]

    def known(self, st):
        """The handle made lately (remember()) for the object whose lstat is
        ``st``, or None. An inode number alone could have been freed and
        given to a new object since; with its ctime it names one object: the
        ctime changes when the object loses a link, and a new object's ctime
        is later still (Linux >= 6.13 hands out a finer timestamp once one
        was looked at, see listings.Listing.stamp). Older kernels may repeat a
        ctime within one clock tick: an object removed here is forgotten
        (forget_ino), so only a removal and re-creation made outside this
        server within one tick can reach that window, and it costs the
        client an ESTALE and a new LOOKUP."""
        hit = self._minted.get(st.st_ino)
        if hit is not None and hit[0] == st.st_ctime_ns:
            return hit[1]
        return None

    def remember(self, st, fh):
        """Note that ``fh`` is the handle of the object whose lstat, taken
        before and after the handle was made and the same both times, is ``st``."""
        _bounded_put(self._minted, st.st_ino, (st.st_ctime_ns, fh))

    def encode_fd(self, fd):
        """The handle of the object fd refers to."""
        return self._seal(*name_to_handle(fd))

    def encode_at(self, dir_fd, name):
        """The handle of name in dir_fd, not following a symlink."""
        return self._seal(*name_to_handle(dir_fd, name))

    # -- opening them --------------------------------------------------------

    def canonical(self, fh):
        """fh without NFSv2 padding, its MAC verified; BADHANDLE otherwise."""
        parts = _split(fh)
        if parts is None:
            raise FsError(nfsstat3.NFS3ERR_BADHANDLE, "malformed handle")
        export_id, htype, data, length = parts
        fh = bytes(fh[:length])
        if export_id != self.export_id:
            raise FsError(nfsstat3.NFS3ERR_BADHANDLE, "handle of another export")
        if self._sealed.get((htype, data)) == fh:
            return fh  # we made it: its MAC is right
        n = len(data)
        body_len = _HEADER.size + n
        want = self._mac.digest(fh[:body_len])[:mac_len(n)]
        if not hmac.compare_digest(want, fh[body_len:]):
            raise FsError(nfsstat3.NFS3ERR_BADHANDLE, "handle authentication failed")
        return fh

    def open(self, fh):
        """(fd, canonical fh) for a handle: an O_PATH fd (O_RDWR for regular files
        when possible), borrowed from the cache. BADHANDLE if forged/malformed,
        STALE if the object is gone or outside the export's file system."""
        if type(fh) is not bytes:
            if not isinstance(fh, (bytearray, memoryview)):
                raise FsError(nfsstat3.NFS3ERR_BADHANDLE, "handle is not bytes")
            fh = bytes(fh)
        cache = self._cache
        with self._lock:
            hit = cache.get(fh)
            if hit is not None:
                cache.move_to_end(fh)
                return hit[0], fh
        parts = _split(fh)
        if parts is not None and parts[3] != len(fh):
            # NFSv2 padding: only authenticated handles are cache keys, so a
            # hit on the unpadded prefix is as good as a verified MAC.
            prefix = bytes(fh[:parts[3]])
            with self._lock:
                hit = cache.get(prefix)
                if hit is not None:
                    cache.move_to_end(prefix)
                    return hit[0], prefix
        cfh = self.canonical(fh)
        htype, n = cfh[5], cfh[6]
        try:
            fd = open_by_handle(self.mount_fd, htype, cfh[7:7 + n], O_PATH)
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ENOENT):
                raise FsError(nfsstat3.NFS3ERR_STALE, "object no longer exists") from None
            if e.errno in (errno.EINVAL, errno.EOVERFLOW):
                # Authentic but the kernel does not take it: not ours any more.
                raise FsError(nfsstat3.NFS3ERR_STALE, str(e)) from None
            raise
        return self.adopt(fd, cfh), cfh

    def adopt(self, fd, cfh, st=None, readwrite=False):
        """Put an fd we opened ourselves (O_PATH, or ``readwrite``: a regular
        file's, open O_RDWR | O_NOATIME already) into the cache under its
        canonical handle; the cache owns it from now on. Returns the cached fd
        (perhaps a reopened one, or one that was there already)."""
        with self._lock:
            old = self._cache.get(cfh)
            if old is not None:
                self._cache.move_to_end(cfh)
                os.close(fd)
                return old[0]
        try:
            if st is None:
                st = os.fstat(fd)
            if st.st_dev != self.dev:
                raise FsError(nfsstat3.NFS3ERR_STALE, "object is not on the export")
            if st.st_nlink == 0:
                raise FsError(nfsstat3.NFS3ERR_STALE, "object was removed")
            if (st.st_mode & 0o170000) == 0o100000 and not readwrite:
                # Regular files are metafiles that we read and rewrite: keep a
                # read-write descriptor instead of the O_PATH one.
                # O_NOATIME: reading a metafile must not set its atime, which is
                # the file's atime as clients see it (relatime would bump it).
                for mode in (os.O_RDWR | os.O_NOATIME, os.O_RDWR, os.O_RDONLY | os.O_NOATIME,
                             os.O_RDONLY):
                    try:
                        rfd = os.open(proc_path(fd), mode | os.O_CLOEXEC)
                    except OSError:
                        continue
                    os.close(fd)
                    fd = rfd
                    break
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            old = self._cache.get(cfh)
            if old is not None:
                os.close(fd)
                self._cache.move_to_end(cfh)
                return old[0]
            self._cache[cfh] = (fd, st.st_ino)
            self._by_ino.setdefault(st.st_ino, set()).add(cfh)
            while len(self._cache) > self._cache_size:
                victim, (vfd, vino) = self._cache.popitem(last=False)
                self._unindex(victim, vino)
                os.close(vfd)
        return fd

    def cached_inode(self, ino):
        """(fd, canonical fh) of a cached object with this inode number, or None.
        The cached fd keeps its inode alive, so the number cannot have been
        reused by another object meanwhile: no handle needs to be made."""
        if ino not in self._by_ino:
            return None  # (most entries of a big listing: no lock for them)
        with self._lock:
            keys = self._by_ino.get(ino)
            if not keys:
                return None
            cfh = next(iter(keys))
            self._cache.move_to_end(cfh)
            return self._cache[cfh][0], cfh

    def _unindex(self, cfh, ino):
        keys = self._by_ino.get(ino)
        if keys is not None:
            keys.discard(cfh)
            if not keys:
                del self._by_ino[ino]

    def forget(self, fh):
        """Drop a cached fd (the object went away)."""
        with self._lock:
            hit = self._cache.pop(fh, None)
            if hit is not None:
                self._unindex(fh, hit[1])
                os.close(hit[0])

    def forget_ino(self, ino, close=os.close):
        """The object lost its last link: its cached descriptors go, through
        ``close`` (the last one frees the inode: see GroupCommit.close_later)."""
        self._minted.pop(ino, None)
        with self._lock:
            for cfh in self._by_ino.pop(ino, ()):
                hit = self._cache.pop(cfh, None)
                if hit is not None:
                    close(hit[0])

    def close(self):
        with self._lock:
            for fd, _ in self._cache.values():
                os.close(fd)
            self._cache.clear()
            self._by_ino.clear()
