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

Store identity (open_store, used by the iod)
--------------------------------------------
A missing datafile reads as zeros, which is right for a hole and silent data
corruption for a whole data directory that is not the one it should be: a
disk that failed to mount leaves its empty mount point, a replaced or wiped
disk is empty, a mistyped --data-dir points elsewhere. So an iod's data
directory carries a marker, MARKER (.nfsp-store): a few text lines with the
format (MARKER_FORMAT) and a random 128-bit store id, written once, atomically
(a temporary file, fsynced, linked into place without replacing anything, the
directory fsynced). open_store opens a directory only if

- it carries a marker that parses (a corrupt one is refused: the store's
  identity is unknown), or
- it does not exist: it is created and initialised there and then, which
  keeps `nfsp up`, `nfsp launch` and a plain first `iod --data-dir D`
  working without a step of their own, or
- it exists and init (iod --init) is given, and it is empty (lost+found
  aside: a fresh ext4), or holds only the store's own layout (a store from a
  release before markers: adopted under a new id).

Without --init an existing unmarked directory is refused with one line saying
what to do, empty ones included: an empty existing directory is exactly what
a failed mount leaves behind. Anything else in an unmarked directory is
refused even with --init (not a store). The decision is ceph-osd's (explicit
mkfs) softened for the case that cannot be a failed mount: a directory that
does not exist is no mount point. Not caught here: a data directory *below*
a mount point that failed (/mnt/disk1/nfsp with /mnt/disk1 unmounted) is
created afresh on the wrong disk. The iod reports its store id in every PONG
so that the metaserver, remembering each iod's, can tell (put the data
directory at the mount point itself, or use systemd's RequiresMountsFor).

While it serves, the iod holds the marker open and flock()ed (a second iod on
the same directory is refused) and calls identity_problem() now and then: the
directory it opened must still carry that very marker (same inode), the file
system it lives on must still be mounted (its mount id, from
/proc/self/fdinfo, still in /proc/self/mountinfo: `umount -l` detaches it),
and, where the path can still be looked up after dropping root, the path
must still lead to it. Reads through the directory descriptor would go on
working on a lazily unmounted file system, but whatever is written there is
gone (tmpfs) or out of reach once the iod lets go: a lost store must fail
loudly, not serve. Not caught: `rm -rf DIR/*` (the glob spares the dotfile
marker) under a stopped iod.
"""

import collections
import ctypes
import errno
import fcntl
import os
import re
import secrets
import stat
import threading

_NAME = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{16})$")
_HEX = frozenset("0123456789abcdef")


def _is_hex(name):
    return _HEX.issuperset(name)


class _Open:
    __slots__ = ("fd", "users", "evicted", "dir_synced")

    def __init__(self, fd, dir_synced):
        self.fd, self.users, self.evicted, self.dir_synced = fd, 0, False, dir_synced


class Pinned:
    """A datafile held open: ``fd`` stays valid until close() (once)."""
    __slots__ = ("fd", "_store", "_entry")

    def __init__(self, store, entry):
        self._store, self._entry, self.fd = store, entry, entry.fd

    def close(self):
        if self._entry is not None:
            self._store._release(self._entry)
            self._entry = None


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _order(ino, seed):
    """The order list() enumerates in (directory by directory)."""
    return ino & 0xFF, (ino >> 8) & 0xFF, ino, seed


_libc = ctypes.CDLL(None, use_errno=True)

MARKER = ".nfsp-store"
MARKER_FORMAT = 1
STORE_ID_BYTES = 16
_MARKER_MAX = 4096
_MARKER_TMP = MARKER + ".tmp-"
_IGNORED = frozenset(("lost+found",))   # what mkfs leaves in a fresh file system


class StoreError(Exception):
    """A data directory that must not be served; the message is one line
    for the admin, saying what to do."""


class DataStore:
    def __init__(self, directory, max_open=256):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._dfd = os.open(self.directory, _DIR_FLAGS)
        self._max_open = max_open
        self._open = collections.OrderedDict()  # (ino, seed) -> _Open
        self._lock = threading.Lock()
        # Identity (open_store): unset for a plain DataStore (nfspd's local
        # store, tools, tests), which then never reports a problem.
        self.store_id = None
        self.initialised = None       # "new" or "adopted" when open_store just marked it
        self._marker_fd = None
        self._marker_key = None       # (st_dev, st_ino) of the marker we hold
        self._mount_id = None

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

    def pin(self, ino, seed):
        """The datafile's descriptor, kept open until the Pinned is closed
        (for os.sendfile: zero-copy reads), or None if there is no datafile."""
        entry = self._acquire(ino, seed, create=False)
        return None if entry is None else Pinned(self, entry)

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

    # -- identity (see the module docstring) -----------------------------------------

    def identity_problem(self):
        """None while this is still the store that was opened; otherwise why
        it is not (one line). Costs a few stats and a read of
        /proc/self/mountinfo: call it now and then, not per request."""
        if self._marker_key is None:
            return None
        if self._mount_id is not None:
            try:
                mounted = _mount_listed(self._mount_id)
            except OSError:
                mounted = True      # cannot tell; the other checks still run
            if not mounted:
                return (f"the file system holding {self.directory} was unmounted under the "
                        f"iod")
        try:
            st = os.stat(MARKER, dir_fd=self._dfd, follow_symlinks=False)
        except FileNotFoundError:
            return f"{self.directory}/{MARKER} was removed (the directory wiped or deleted?)"
        except OSError as e:
            return f"cannot stat {self.directory}/{MARKER}: {e.strerror}"
        if (st.st_dev, st.st_ino) != self._marker_key:
            return f"{self.directory}/{MARKER} was replaced by another file"
        try:
            here = os.stat(self.directory)
        except (PermissionError, NotADirectoryError):
            return None             # the path is not ours to look up (root dropped)
        except FileNotFoundError:
            return f"{self.directory} is gone from its path"
        except OSError as e:
            return f"cannot stat {self.directory}: {e.strerror}"
        opened = os.fstat(self._dfd)
        if (here.st_dev, here.st_ino) != (opened.st_dev, opened.st_ino):
            return (f"{self.directory} now leads to another directory (a file system mounted "
                    f"over it, or it was moved?)")
        return None

    def _identify(self, init):
        fd = self._open_marker()
        if fd is None:
            kind, example = self._contents()
            where = self.directory
            if kind == "other":
                raise StoreError(
                    f"{where} is not an iod data store: it holds {example!r} and no {MARKER} "
                    f"marker; point --data-dir at the store's own directory, or at a new or "
                    f"empty one")
            if not init:
                if kind == "empty":
                    raise StoreError(
                        f"{where} exists but is empty and has no {MARKER} marker: if a disk "
                        f"belongs there, it is not mounted (mount it, then start the iod); to "
                        f"start a new, empty store there, run the iod once with --init")
                raise StoreError(
                    f"{where} holds datafiles but no {MARKER} marker (a store made before "
                    f"markers existed?): run the iod once with --init to adopt it")
            self._write_marker(secrets.token_bytes(STORE_ID_BYTES))
            self.initialised = "new" if kind == "empty" else "adopted"
            fd = self._open_marker()
            if fd is None:
                raise StoreError(f"{where}/{MARKER} vanished right after it was written")
        try:
            store_id = self._read_marker(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.directory} is in use by another iod (its {MARKER} is "
                                 f"locked): give each iod a data directory of its own") from None
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._marker_fd = fd
        self._marker_key = (st.st_dev, st.st_ino)
        self._mount_id = _mount_id(self._dfd)
        self.store_id = store_id

    def _open_marker(self):
        try:
            return os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                           dir_fd=self._dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{self.directory}/{MARKER} is a symbolic link, not the "
                                 f"store's marker") from None
            raise StoreError(f"cannot open {self.directory}/{MARKER}: {e.strerror}") from None

    def _read_marker(self, fd):
        path = f"{self.directory}/{MARKER}"

        def corrupt(why):
            return StoreError(
                f"{path} is corrupt ({why}), so this store's identity is unknown: restore the "
                f"file from a backup, or, to serve this directory as a new store, remove it "
                f"and run the iod once with --init")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise corrupt("not a regular file")
        try:
            data = os.pread(fd, _MARKER_MAX + 1, 0)
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None
        if len(data) > _MARKER_MAX:
            raise corrupt(f"longer than {_MARKER_MAX} bytes")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise corrupt("not text") from None
        fields = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            if key in fields:
                raise corrupt(f"{key!r} given twice")
            fields[key] = value.strip()
        version = fields.get("format")
        if version is None or not version.isdigit():
            raise corrupt("no format line")
        if int(version) != MARKER_FORMAT:
            raise StoreError(f"{path} is of format {version}, which this iod does not know "
                             f"(it reads format {MARKER_FORMAT}): run a newer NFSP release")
        store_id = fields.get("id", "")
        if len(store_id) != 2 * STORE_ID_BYTES or not _is_hex(store_id):
            raise corrupt(f"no id line of {2 * STORE_ID_BYTES} lowercase hex digits")
        return bytes.fromhex(store_id)

    def _contents(self):
        """("empty" | "store" | "other", an example name of "other")."""
        kind = "empty"
        for name in sorted(self._listdir(None, None)):
            if name in _IGNORED or name.startswith(_MARKER_TMP):
                continue
            try:
                st = os.stat(name, dir_fd=self._dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if len(name) == 2 and _is_hex(name) and stat.S_ISDIR(st.st_mode):
                kind = "store"
            else:
                return "other", name
        return kind, None

    def _write_marker(self, store_id):
        text = (f"# NFSP iod data store. The iod serves this directory only while this file is\n"
                f"# here; it travels with the data (cp -a). Do not edit or remove it.\n"
                f"format {MARKER_FORMAT}\n"
                f"id {store_id.hex()}\n")
        tmp = f"{_MARKER_TMP}{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o444, dir_fd=self._dfd)
        try:
            try:
                os.fchmod(fd, 0o444)
                view = memoryview(text.encode())
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link, not rename: it never replaces a marker another iod
                # starting at the same moment put there first (theirs stands).
                os.link(tmp, MARKER, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
            except FileExistsError:
                pass
        finally:
            try:
                os.unlink(tmp, dir_fd=self._dfd)
            except FileNotFoundError:
                pass
        os.fsync(self._dfd)

    def close(self):
        with self._lock:
            for entry in self._open.values():
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)
            self._open.clear()
            if self._marker_fd is not None:
                os.close(self._marker_fd)
                self._marker_fd = None
            if self._dfd is not None:
                os.close(self._dfd)
                self._dfd = None


def open_store(directory, init=False, max_open=256):
    """The DataStore of an iod's data directory, its identity checked (see
    the module docstring): creates and marks a directory that does not
    exist; with ``init``, also marks an existing empty one or adopts one of
    unmarked datafiles. Raises StoreError (a line for the admin) or OSError."""
    directory = os.path.abspath(directory)
    made = False
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        try:
            os.makedirs(directory)
            made = True
        except FileExistsError:
            pass
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{directory} is not a directory")
    store = DataStore(directory, max_open)
    try:
        store._identify(init or made)
    except BaseException:
        store.close()
        raise
    return store


def _mount_id(fd):
    """The id of the mount ``fd`` lives on (None where /proc cannot tell)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return line.split()[1]
    except (OSError, IndexError):
        pass
    return None


def _mount_listed(mount_id):
    """Whether a mount of that id is still attached in our mount namespace."""
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read()
    return any(line.split(b" ", 1)[0] == mount_id for line in data.splitlines())
