"""The datafile store: file data kept by (inode, seed) in a local directory (paper 5.5.1).

Shared by the iods and by the metaserver's local mode. A datafile is known only
by the inode and seed of its metafile; its name is derived from both, under two
levels of 256 subdirectories picked by the inode's low bytes, so a million files
make ~15 per directory. Datafiles are sparse and hold the data at its real
offsets (with striping an iod simply never writes the other stripes' ranges).

All methods block on disk I/O and are thread-safe. Open descriptors are kept in
a bounded LRU; an fd is only closed once no thread is using it. ENOSPC and the
like surface as OSError for the caller to map.
"""

import collections
import os
import re
import threading

_NAME = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{16})$")


class _Open:
    __slots__ = ("fd", "users", "evicted", "dir_synced")

    def __init__(self, fd, dir_synced):
        self.fd, self.users, self.evicted, self.dir_synced = fd, 0, False, dir_synced


class DataStore:
    def __init__(self, directory, max_open=256):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._max_open = max_open
        self._open = collections.OrderedDict()  # (ino, seed) -> _Open
        self._lock = threading.Lock()

    # -- naming ----------------------------------------------------------------

    def _subdir(self, ino):
        return os.path.join(self.directory, f"{ino & 0xFF:02x}", f"{(ino >> 8) & 0xFF:02x}")

    def path(self, ino, seed):
        return os.path.join(self._subdir(ino), f"{ino:016x}.{seed:016x}")

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
        path = self.path(ino, seed)
        created = False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(self._subdir(ino), exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        dfd = os.open(self._subdir(ino), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
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
            os.unlink(self.path(ino, seed))
            return True
        except FileNotFoundError:
            return False

    def list(self):
        """Every (ino, seed) this store holds data for."""
        for top in sorted(os.listdir(self.directory)):
            tpath = os.path.join(self.directory, top)
            if len(top) != 2 or not os.path.isdir(tpath):
                continue
            for sub in sorted(os.listdir(tpath)):
                spath = os.path.join(tpath, sub)
                if len(sub) != 2 or not os.path.isdir(spath):
                    continue
                for name in sorted(os.listdir(spath)):
                    m = _NAME.match(name)
                    if m:
                        yield int(m.group(1), 16), int(m.group(2), 16)

    def statvfs(self):
        """(total bytes, free bytes, bytes available to unprivileged users,
        total inodes, free inodes, available inodes)."""
        st = os.statvfs(self.directory)
        return (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize,
                st.f_files, st.f_ffree, st.f_favail)

    def close(self):
        with self._lock:
            for entry in self._open.values():
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)
            self._open.clear()

