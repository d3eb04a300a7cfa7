"""The metafiles of one export, read once and kept while they stay unchanged.

A regular file of the export is a small metafile (common/metafile.py) holding
the real size, a seed and the stripe parameters, its record in an extended
attribute where it can be (common/runtime/metarecord.py). Nearly every reply
carries a file's size, and a stat tells it (``size``: the metafile's length)
except for a metafile sized by its record. The record itself is needed by READ, WRITE and
SETATTR; it is cached under (dev, ino) with the mtime, ctime and st_size it
had: a change to any of them means the file was written by someone else, and
it is read again. Only this process writes metafiles and it updates the cache
when it does, so a cached entry is the metafile's content.

``reads`` counts the metafiles read (for tests: a listing reads none).
"""

import collections
import errno
import logging
import os

from common.metafile import HEADER as META_HEADER
from common.metafile import SIZE as META_SIZE
from common.metafile import MetafileError
from common.nfs3 import nfsstat3
from common.runtime import metarecord
from nfspd.fs.syscalls import O_TMPFILE, link_fd
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
        self.reads = 0

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
        self.reads += 1
        try:
            meta = metarecord.load(fd, st.st_size)
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

    def store(self, fd, meta, sync, st=None):
        """Rewrite a metafile (fd open for writing, ``st`` its current stat if
        known); returns its new stat. Usually a size change is one ftruncate
        and nothing else (the record stays as it is); a pending truncation is
        written into the record first and then made to count by the switch to
        the form sized by its record (see common/metafile.py), so that a crash
        leaves the change entirely undone or entirely done."""
        if st is None:
            st = os.fstat(fd)
        hit = self._cache.get((st.st_dev, st.st_ino))
        old = hit[3] if hit is not None else None
        length = st.st_size
        if meta.trunc_to is None:
            by_length = length >= META_HEADER
            if by_length and (old is None or not _same_record(old, meta)):
                metarecord.store(fd, meta)  # its size field is ignored
            try:
                if length != META_HEADER + meta.size:
                    os.ftruncate(fd, META_HEADER + meta.size)
                if not by_length:
                    # Now sized by its length; the record's stale fields are
                    # ignored until this tidies them.
                    metarecord.store(fd, meta)
            except OSError as e:
                if e.errno != errno.EFBIG:
                    raise
                # Beyond the largest file here: the record keeps the size.
                metarecord.store(fd, meta)
                if length != META_SIZE:
                    os.ftruncate(fd, META_SIZE)
        else:
            metarecord.store(fd, meta)
            if length != META_SIZE:
                os.ftruncate(fd, META_SIZE)
        if sync:
            os.fsync(fd)  # (not fdatasync: the record may be in the attribute, metadata)
        st = os.fstat(fd)
        self.remember(st, meta)
        return st

    def make(self, dir_fd, name, mode, meta, sync, owner=None):
        """Create the metafile ``name`` in dir_fd with ``mode`` and content
        ``meta``: (fd open O_RDWR | O_NOATIME, stat, whether its record is in
        the attribute, common/runtime/metarecord.py). Written before it gets
        its name (an O_TMPFILE linked in), so nobody ever sees a half-made
        metafile, even after a crash. The caller's credentials apply
        (creds.as_caller around this); FileExistsError when the name exists.
        With ``owner``, (uid, gid, the directory's gid), made as root instead
        and given to uid and gid before it gets its name, or to uid alone
        where the kernel handed the directory's group down (a setgid
        directory, a grpid mount), as it would have for that owner; None
        where there is no O_TMPFILE (the name would exist as root's)."""
        try:
            # O_NOATIME: the fd goes to the handle cache as it is (see
            # HandleCodec.adopt); the caller owns the new file, so it may.
            fd = os.open(".", O_TMPFILE | os.O_RDWR | os.O_NOATIME | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            if owner is not None:
                return None
            fd = None
        if fd is None:
            # No O_TMPFILE here: the name exists for a moment with no content.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOATIME | os.O_CLOEXEC
            fd = os.open(name, flags, mode, dir_fd=dir_fd)
            try:
                in_xattr = _fill(fd, meta, sync)
            except BaseException:
                os.unlink(name, dir_fd=dir_fd)
                os.close(fd)
                raise
        else:
            try:
                if owner is not None:
                    uid, gid, dir_gid = owner
                    os.fchown(fd, uid, -1 if os.fstat(fd).st_gid == dir_gid else gid)
                in_xattr = _fill(fd, meta, sync)
                link_fd(fd, dir_fd, name)
            except BaseException:
                os.close(fd)
                raise
        # The daemon's umask (or the directory's default ACL) must not apply:
        # checked on the stat the reply needs anyway, one system call less
        # than a check of its own before the link. Until the fchmod the name
        # has fewer permission bits than asked, never more.
        st = os.fstat(fd)
        if st.st_mode & 0o7777 != mode:
            try:
                os.fchmod(fd, mode)
                if sync:
                    os.fsync(fd)
            except BaseException:
                os.unlink(name, dir_fd=dir_fd)
                os.close(fd)
                raise
            st = os.fstat(fd)
        self.remember(st, meta)
        return fd, st, in_xattr

    def forget(self, st):
        """The object lost its last link."""
        key = (st.st_dev, st.st_ino)
        self._cache.pop(key, None)
        self.unsynced.discard(key)


def _same_record(a, b):
    """Whether two Metafiles differ at most in size (a record sized by its
    length need not be rewritten then)."""
    return (a.seed, a.stripe_unit, a.layout_gen, a.create_verf, a.trunc_to, a.no_data) == \
        (b.seed, b.stripe_unit, b.layout_gen, b.create_verf, b.trunc_to, b.no_data)


def _fill(fd, meta, sync):
    """A new metafile's record, and its length telling its size: whether the
    record is in the attribute."""
    in_xattr = metarecord.store(fd, meta)
    os.ftruncate(fd, META_HEADER + meta.size)
    if sync:
        os.fsync(fd)  # (not fdatasync: the attribute is metadata)
    return in_xattr
