"""The datafile store: file data kept by (inode, seed) in a local directory (paper 5.5.1).

Shared by the iods and by the metaserver's local mode. A datafile is known only
by the inode and seed of its metafile; its name is derived from both, under two
levels of 256 subdirectories picked by the inode's low bytes, so a million files
make ~15 per directory. Datafiles are sparse and hold the data at its real
offsets (with striping an iod simply never writes the other stripes' ranges).

All methods block on disk I/O and are thread-safe. Open descriptors are kept in
a bounded LRU; an fd is only closed once no thread is using it. ENOSPC and the
like surface as OSError for the caller to map.

Everything is reached through a descriptor of the store's directory opened at
construction (openat and friends), so an iod that opened its store as root
and then dropped to an unprivileged user needs no access to the directories
above it (e.g. a 0700 /var/lib/nfsp) -- only to the store itself.
"""

import collections
import ctypes
import os
import re
import threading

_NAME = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{16})$")
_HEX = frozenset("0123456789abcdef")


def _is_hex(name):
    return _HEX.issuperset(name)


class _Open:
    __slots__ = ("fd", "users", "evicted", "dir_synced")

    def __init__(self, fd, dir_synced):
        self.fd, self.users, self.evicted, self.dir_synced = fd, 0, False, dir_synced


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _order(ino, seed):
    """The order list() enumerates in (directory by directory)."""
    return ino & 0xFF, (ino >> 8) & 0xFF, ino, seed


_libc = ctypes.CDLL(None, use_errno=True)


class DataStore:
    def __init__(self, directory, max_open=256):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._dfd = os.open(self.directory, _DIR_FLAGS)
        self._max_open = max_open
        self._open = collections.OrderedDict()  # (ino, seed) -> _Open
        self._lock = threading.Lock()

    # -- naming ----------------------------------------------------------------

    @staticmethod
    def _top(ino):
        return f"{ino & 0xFF:02x}"

    @staticmethod
    def _subdir_rel(ino):
        return f"{ino & 0xFF:02x}/{(ino >> 8) & 0xFF:02x}"

    @staticmethod
    def _rel(ino, seed):
        """The datafile's name relative to the store's directory."""
        return f"{DataStore._subdir_rel(ino)}/{ino:016x}.{seed:016x}"

    def path(self, ino, seed):
        return os.path.join(self.directory, self._rel(ino, seed))

    def _makedirs(self, ino):
        """Create the datafile's two directory levels; each new entry is made
        durable in its parent (a datafile synced later is then reachable)."""
        for rel, parent in ((self._top(ino), None), (self._subdir_rel(ino), self._top(ino))):
            try:
                os.mkdir(rel, 0o700, dir_fd=self._dfd)
            except FileExistsError:
                continue
            self._fsync_dir(parent)

    def _fsync_dir(self, rel):
        if rel is None:
            os.fsync(self._dfd)
            return
        dfd = os.open(rel, _DIR_FLAGS, dir_fd=self._dfd)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- descriptor cache --------------------------------------------------------

    def _acquire(self, ino, seed, create):
        """An _Open for the datafile (marked in use), or None if it does not exist
        and create is false."""
        key = (ino, seed)
        with self._lock:
            entry = self._open.get(key)
            if entry is not None:
                self._open.move_to_end(key)
                entry.users += 1
                return entry
        rel = self._rel(ino, seed)
        created = False
        try:
            fd = os.open(rel, os.O_RDWR | os.O_CLOEXEC, dir_fd=self._dfd)
        except FileNotFoundError:
            if not create:
                return None
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            try:
                fd = os.open(rel, flags, 0o600, dir_fd=self._dfd)
            except FileNotFoundError:
                self._makedirs(ino)
                fd = os.open(rel, flags, 0o600, dir_fd=self._dfd)
            created = True
        entry = _Open(fd, dir_synced=not created)
        with self._lock:
            other = self._open.get(key)
            if other is not None:
                # Another thread opened it meanwhile; use theirs.
                os.close(fd)
                entry = other
                if created:
                    entry.dir_synced = False
            else:
                self._open[key] = entry
            entry.users += 1
            self._evict_locked()
        return entry

    def _evict_locked(self):
        while len(self._open) > self._max_open:
            _, victim = self._open.popitem(last=False)
            victim.evicted = True
            if victim.users == 0:
                os.close(victim.fd)

    def _release(self, entry):
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                os.close(entry.fd)

    def _drop(self, ino, seed):
        with self._lock:
            entry = self._open.pop((ino, seed), None)
            if entry is not None:
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)

    # -- operations --------------------------------------------------------------

    def read(self, ino, seed, offset, count):
        """Bytes at [offset, offset+count): zeros in holes, short (possibly empty)
        at the datafile's end."""
        entry = self._acquire(ino, seed, create=False)
        if entry is None:
            return b""
        try:
            return os.pread(entry.fd, count, offset)
        finally:
            self._release(entry)

    def write(self, ino, seed, offset, data, sync=False):
        entry = self._acquire(ino, seed, create=True)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(entry.fd, view, offset)
                view, offset = view[n:], offset + n
            if sync:
                os.fdatasync(entry.fd)
                self._sync_dir(entry, ino)
        finally:
            self._release(entry)

    def commit(self, ino, seed):
        entry = self._acquire(ino, seed, create=False)
        if entry is None:
            return
        try:
            os.fsync(entry.fd)
            self._sync_dir(entry, ino)
        finally:
            self._release(entry)

    def _sync_dir(self, entry, ino):
        """A new datafile is durable only once its directory entry is."""
        if entry.dir_synced:
            return
        self._fsync_dir(self._subdir_rel(ino))
        entry.dir_synced = True

    def truncate(self, ino, seed, size):
        entry = self._acquire(ino, seed, create=False)
        if entry is None:
            return
        try:
            os.ftruncate(entry.fd, size)
        finally:
            self._release(entry)

    def size(self, ino, seed):
        """(apparent size, allocated bytes) of the datafile; (0, 0) if absent."""
        entry = self._acquire(ino, seed, create=False)
        if entry is None:
            return 0, 0
        try:
            st = os.fstat(entry.fd)
            return st.st_size, st.st_blocks * 512
        finally:
            self._release(entry)

    def purge(self, ino, seed):
        """Forget the file's data. Returns whether a datafile existed."""
        self._drop(ino, seed)
        try:
            os.unlink(self._rel(ino, seed), dir_fd=self._dfd)
            return True
        except FileNotFoundError:
            return False

    def sync_removals(self):
        """Make unlinks durable. One syncfs for a whole PURGE batch: fsyncing
        each datafile's directory would cost up to one fsync per file."""
        if _libc.syncfs(self._dfd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def list(self, after=None):
        """Every (ino, seed) this store holds data for, in a fixed order; with
        ``after`` (an (ino, seed) pair, present or not), only those that come
        after it, so a long listing can be resumed from where it stopped
        without rereading the directories before that point."""
        start = _order(*after) if after is not None else None
        for top in self._listdir(None, 2):
            t = int(top, 16)
            if start is not None and t < start[0]:
                continue
            for sub in self._listdir(top, 2):
                s = int(sub, 16)
                if start is not None and (t, s) < start[:2]:
                    continue
                for name in self._listdir(f"{top}/{sub}", None):
                    m = _NAME.match(name)
                    if not m:
                        continue
                    pair = int(m.group(1), 16), int(m.group(2), 16)
                    if start is None or _order(*pair) > start:
                        yield pair

    def _listdir(self, rel, name_len):
        """Sorted names in a directory of the store (missing or not a
        directory: none); with name_len, only the hex subdirectory names."""
        # A descriptor of its own even for the top: a directory's read
        # position is shared by every dup of a descriptor, and listings may
        # run in several threads at once.
        try:
            fd = os.open(rel or ".", _DIR_FLAGS, dir_fd=self._dfd)
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            with os.scandir(fd) as it:
                names = [e.name for e in it
                         if name_len is None or (len(e.name) == name_len and _is_hex(e.name)
                                                 and e.is_dir(follow_symlinks=False))]
        finally:
            os.close(fd)
        return sorted(names)

    def chown(self, uid, gid):
        """Give the store's directory and what it holds of the store's own
        layout (hex subdirectories, datafiles) to uid:gid, never following
        symlinks and leaving anything else alone (e.g. lost+found). Used when
        an iod first runs as an unprivileged user. Returns entries changed."""
        changed = 0

        def give(rel):
            nonlocal changed
            st = os.stat(rel, dir_fd=self._dfd, follow_symlinks=False)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(rel, uid, gid, dir_fd=self._dfd, follow_symlinks=False)
                changed += 1
        give(".")
        for top in self._listdir(None, 2):
            give(top)
            for sub in self._listdir(top, 2):
                give(f"{top}/{sub}")
                for name in self._listdir(f"{top}/{sub}", None):
                    if _NAME.match(name):
                        give(f"{top}/{sub}/{name}")
        return changed

    def statvfs(self):
        """(total bytes, free bytes, bytes available to unprivileged users,
        total inodes, free inodes, available inodes)."""
        st = os.fstatvfs(self._dfd)
        return (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize,
                st.f_files, st.f_ffree, st.f_favail)

    def close(self):
        with self._lock:
            for entry in self._open.values():
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)
            self._open.clear()
            if self._dfd is not None:
                os.close(self._dfd)
                self._dfd = None

