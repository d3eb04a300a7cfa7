"""Which data store each iod of iods.conf serves (STATE_DIR/iod-stores.json).

An iod that comes back with another store (a disk that failed to mount, a
replaced or wiped disk, a wrong --data-dir) would serve its stripes as zeros:
its link stays down (clients get JUKEBOX and wait) until its own store is
back, or the admin accepts the new one (`nfsp accept-iod-store HOST:PORT`).

Each iod's store id (common/runtime/datastore.py, reported in every PONG) is
remembered by nfspd the first time it is seen; unlinkd applies the same rule
to the same file (StoreCheck), so that a PURGE acknowledged by an iod on the
wrong store never counts as done. The file is small and rarely written (a
first sight, an accept): written whole, atomically (a temporary file, fsynced,
renamed over the old one, the directory fsynced), so a crash leaves the old or
the new version, never half of one.

    {"version": 1, "stores": {"10.0.0.1:2050": "<32 hex digits>", ...}}

A file that does not parse is moved aside (iod-stores.json.bad) with an
ERROR line and the ids are learnt afresh, as on a first start: refusing to
serve at all over a damaged bookkeeping file would be worse than the window
it leaves. A failed write keeps the ids in memory (this run still checks)
and says so once.

The same store id under two iods.conf entries is refused too: a disk moved
from one iod to another, or a cloned one, would serve another index's
stripes (wrong data rather than zeros).
"""

import json
import logging
import os
import threading

log = logging.getLogger(__name__)

FILE_NAME = "iod-stores.json"
VERSION = 1
STORE_ID_SIZE = 16


class IodStoresError(ValueError):
    """iod-stores.json does not hold what this module writes."""


class IodStores:
    """``names``: the iods.conf entries ("host:port") in use; a store id
    remembered for one of them is refused for another. Safe to call from
    a worker thread (trio.to_thread) and the trio thread at once."""

    def __init__(self, path, names=()):
        self.path = path
        self.names = set(names)
        self._lock = threading.Lock()
        self._write_failed = False
        self.ids = _load(path)

    def known(self, name):
        """The store id remembered for ``name`` (bytes), or None."""
        return self.ids.get(name)

    def would_remember(self, name, store):
        """Whether check(name, store) would write the file (a first sight):
        the caller may then run it in a thread, off the event loop."""
        return store is not None and name not in self.ids

    def check(self, name, store):
        """None if ``store`` (from a PONG) is this iod's; else why not (one phrase).
        A first sight is remembered."""
        with self._lock:
            why = refusal(self.ids, self.names, name, store)
            if why is None and store is not None and name not in self.ids:
                self.ids[name] = store
                self._save()
                log.info("iod %s: remembering its data store %s", name, store.hex())
            return why

    def accept(self, name):
        """Forget ``name``'s store: its next PONG's store is remembered.
        Returns the store id forgotten, or None."""
        with self._lock:
            old = self.ids.pop(name, None)
            self._save()
        if old is not None:
            log.warning("iod %s: forgot its data store %s (accepted by the admin); the "
                        "store it serves next is remembered", name, old.hex())
        return old

    def _save(self):
        try:
            write(self.path, self.ids)
        except OSError as e:
            if not self._write_failed:
                log.error("%s: cannot save the iods' store ids (%s); they are checked for "
                          "this run only", self.path, e)
            self._write_failed = True
        else:
            self._write_failed = False


def refusal(ids, names, name, store):
    """Why the iods.conf entry ``name``, whose PONG says it serves ``store``, may
    not be used (one phrase), or None. ``ids``: the remembered {name: store id};
    ``names``: the entries in use, whose remembered stores no other may serve."""
    known = ids.get(name)
    if store is None:
        if known is None:
            return None   # an iod older than the field, or one lost before first seen
        return (f"reports no usable data store (lost under it, or an iod older "
                f"than store ids: see its log) where it had store {known.hex()}")
    if known is None:
        for other, theirs in ids.items():
            if theirs == store and other != name and other in names:
                return (f"serves data store {store.hex()}, which is iod {other}'s "
                        f"(a disk moved or cloned between iods?)")
        return None
    if store == known:
        return None
    return (f"serves data store {store.hex()} where it had store {known.hex()} "
            f"(its data directory replaced, wiped or not mounted?)")


class StoreCheck:
    """The same rule for a process that only reads the file nfspd keeps
    (unlinkd): the file is read again at every check (it is small, and checks
    come once a connection), so an admin's accept-iod-store or nfspd's first
    sight of a store counts from the next one. An iod nfspd has not seen yet is
    judged as nfspd would judge it; nfspd alone writes the file."""

    def __init__(self, path, names):
        self.path = path
        self.names = set(names)

    def check(self, name, store):
        """None if ``name`` may be used; else why not (one phrase)."""
        try:
            with open(self.path, "rb") as f:
                ids = parse(f.read(1 << 20))
        except FileNotFoundError:
            ids = {}
        except (OSError, IodStoresError) as e:
            return f"cannot be checked against {self.path}: {e}"
        return refusal(ids, self.names, name, store)


def _load(path):
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        return {}
    try:
        return parse(raw)
    except IodStoresError as e:
        aside = path + ".bad"
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError as e2:
            where = f"and cannot be moved aside: {e2}"
        log.error("%s: %s (%s); every iod's data store is learnt afresh from its next "
                  "PONG: check that each iod serves its own disk", path, e, where)
        return {}


def parse(raw):
    """{name: store id} from the file's bytes (IodStoresError if malformed)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise IodStoresError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION \
            or not isinstance(doc.get("stores"), dict):
        raise IodStoresError(f'expected {{"version": {VERSION}, "stores": {{...}}}}')
    out = {}
    for name, hexid in doc["stores"].items():
        try:
            store = bytes.fromhex(hexid) if isinstance(hexid, str) else None
        except ValueError:
            store = None
        if store is None or len(store) != STORE_ID_SIZE:
            raise IodStoresError(f"iod {name[:64]!r}: store id is not {2 * STORE_ID_SIZE} "
                                 f"hex digits")
        out[name] = store
    return out


def write(path, ids):
    """Replace the file at ``path`` with ``ids``, atomically and durably."""
    data = json.dumps({"version": VERSION,
                       "stores": {name: ids[name].hex() for name in sorted(ids)}},
                      indent=1).encode() + b"\n"
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def forget(path, name):
    """Drop ``name`` from the file at ``path`` (nfspd not running: `nfsp
    accept-iod-store`). Returns the store id dropped, or None. Raises
    IodStoresError for a malformed file, OSError when it cannot be written."""
    try:
        with open(path, "rb") as f:
            ids = parse(f.read(1 << 20))
    except FileNotFoundError:
        return None
    old = ids.pop(name, None)
    if old is not None:
        write(path, ids)
    return old
