"""The runtime exports registry: which MetaFS serves which export, who may use
it and how (common/exports.py parses and matches; this module does the I/O).

- ``resolve(ctx, fh)`` is the shared contract of the NFS services: the export a
  handle belongs to and the squashed Caller, or FsError.
- ``mount(ctx, dirpath)`` answers MNT, ``exports_list()`` EXPORT, and the mount
  list (DUMP) is kept here, persisted to a small rmtab-like file.

Host names: only exports that name hosts or host patterns need them. A client's
name comes from reverse DNS, confirmed forward (the name must resolve back to
the address, as mountd does, so whoever controls a PTR zone cannot claim any
name), in a worker thread; results are cached. An NFS call from a client whose
name is still being looked up gets NFS3ERR_JUKEBOX (v3 clients retry after a
pause; the v2 service drops it and the client retransmits), so the event loop
never waits on DNS for more than ``dns_wait``. MNT, usually a client's first
call, waits longer (without blocking the loop), which warms the cache.
"""

import dataclasses
import json
import logging
import os
import socket
import threading
import time

import trio

from common.exports import ANONYMOUS, ExportsError, normalize_path, parse_exports
from common.mount import MNTNAMLEN, mountstat3
from common.nfs3 import nfsstat3
from common.runtime.resvport import PRIVILEGED_PORTS
from nfspd.fs.handles import export_id_of
from nfspd.fs.types import Caller, FileType, FsError

log = logging.getLogger(__name__)

# --- Host names ------------------------------------------------------------


def reverse_lookup(ip):
    """The client's names (canonical first, then aliases) that resolve back to
    ``ip``; () when there are none. Blocking: call from a worker thread."""
    try:
        name, aliases, _ = socket.gethostbyaddr(ip)
    except (OSError, UnicodeError):
        return ()
    confirmed = []
    for candidate in [name] + list(aliases):
        try:
            infos = socket.getaddrinfo(candidate, None)
        except (OSError, UnicodeError):
            continue
        if any(info[4][0].split("%", 1)[0] == ip for info in infos):
            confirmed.append(candidate.lower().rstrip("."))
    return tuple(dict.fromkeys(confirmed))


class HostnameCache:
    """ip -> names, looked up in worker threads. A stale entry is served while
    it is refreshed, so only a client's first contact ever waits."""

    def __init__(self, lookup=reverse_lookup, ttl=600.0, negative_ttl=60.0,
                 max_entries=4096, max_pending=16, clock=time.monotonic):
        self._lookup = lookup
        self._ttl, self._negative_ttl = ttl, negative_ttl
        self._max_entries, self._max_pending = max_entries, max_pending
        self._clock = clock
        self._cache = {}  # ip -> (expires, names)
        self._pending = {}  # ip -> threading.Event
        self._lock = threading.Lock()

    def _start(self, ip):
        """The Event set when ip's lookup finishes (starting one if needed), or
        None when too many lookups are already running."""
        with self._lock:
            ev = self._pending.get(ip)
            if ev is not None:
                return ev
            if len(self._pending) >= self._max_pending:
                return None
            ev = self._pending[ip] = threading.Event()
        threading.Thread(target=self._run, args=(ip, ev), daemon=True,
                         name=f"rdns {ip}").start()
        return ev

    def _run(self, ip, ev):
        try:
            names = tuple(self._lookup(ip))
        except Exception:  # a resolver bug must not kill the cache
            log.exception("reverse lookup of %s failed", ip)
            names = ()
        ttl = self._ttl if names else self._negative_ttl
        with self._lock:
            if len(self._cache) >= self._max_entries and ip not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[ip] = (self._clock() + ttl, names)
            del self._pending[ip]
        ev.set()

    def peek(self, ip):
        """Cached names (even stale) or None; never starts a lookup."""
        with self._lock:
            hit = self._cache.get(ip)
        return None if hit is None else hit[1]

    def get(self, ip, wait):
        """(known, names): known is False when a first lookup is still running
        after ``wait`` seconds (blocking)."""
        with self._lock:
            hit = self._cache.get(ip)
        if hit is not None:
            if hit[0] <= self._clock():
                self._start(ip)
            return True, hit[1]
        ev = self._start(ip)
        if ev is None:
            return True, ()
        if wait > 0:
            ev.wait(wait)
        if not ev.is_set():
            return False, ()
        return True, self.peek(ip) or ()

    async def aget(self, ip, wait):
        """get() that waits in a worker thread instead of the event loop."""
        known, names = self.get(ip, 0)
        if known:
            return known, names
        ev = self._start(ip)
        if ev is not None:
            await trio.to_thread.run_sync(ev.wait, wait, abandon_on_cancel=True)
        return self.get(ip, 0)


# --- Mount list ------------------------------------------------------------


class MountList:
    """Who mounted what (DUMP), as (host, ip, dirpath) entries; persisted to
    ``path`` (if given) with a rename so a crash never leaves half a file. The
    list is advisory (clients need not UMNT), hence bounded: the oldest go."""

    def __init__(self, path=None, max_entries=1024):
        self.path = path
        self.max_entries = max_entries
        self._entries = []  # [(host str, ip str, dirpath bytes)]
        if path is not None:
            self._load()

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            entries = [(str(h), str(ip), os.fsencode(str(d))) for h, ip, d in raw]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as e:
            log.warning("%s: ignoring unreadable mount list: %s", self.path, e)
            return
        self._entries = entries[-self.max_entries:]

    def _save(self):
        if self.path is None:
            return
        tmp = f"{self.path}.tmp"
        data = [[h, ip, os.fsdecode(d)] for h, ip, d in self._entries]
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("%s: cannot save the mount list: %s", self.path, e)

    def add(self, host, ip, dirpath):
        entry = (host, ip, bytes(dirpath))
        self._entries = [e for e in self._entries if e[1:] != entry[1:]]
        self._entries.append(entry)
        del self._entries[:-self.max_entries]
        self._save()

    def remove(self, ip, dirpath):
        before = len(self._entries)
        self._entries = [e for e in self._entries if (e[1], e[2]) != (ip, bytes(dirpath))]
        if len(self._entries) != before:
            self._save()

    def remove_client(self, ip):
        before = len(self._entries)
        self._entries = [e for e in self._entries if e[1] != ip]
        if len(self._entries) != before:
            self._save()

    def entries(self):
        """[(hostname bytes, dirpath bytes)] for DUMP."""
        return [(h.encode("utf-8", "replace")[:MNTNAMLEN], d) for h, _, d in self._entries]


# --- The registry ----------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    export: object  # common.exports.Export
    fs: object  # MetaFS
    export_id: int


class _Table:
    def __init__(self, entries=()):
        self.entries = list(entries)
        self.by_id = {e.export_id: e for e in self.entries}
        self.by_path = {e.export.path: e for e in self.entries}
        self.match_cache = {}  # (export_id, ip) -> ExportOptions|None, address-only exports
        # (export_id, ip, privileged port, cred) -> (MetaFS, Caller): what resolve()
        # found for an address-only export; a reload makes a new table.
        self.resolved = {}
        self.by_hostname = {e.export_id: e.export.needs_hostname for e in self.entries}


_ROOT = Caller(0, 0, (), readonly=True)
_MATCH_CACHE_MAX = 4096


def _close(fs):
    close = getattr(fs, "close", None)
    if close is not None:
        close()


class ExportRegistry:
    def __init__(self, exports_file, make_fs, rmtab_path=None, hostnames=None,
                 dns_wait=0.2, mount_dns_wait=3.0, max_mounts=1024):
        self.exports_file = exports_file
        self._make_fs = make_fs
        self._table = _Table()
        self.hostnames = hostnames if hostnames is not None else HostnameCache()
        self.dns_wait = dns_wait
        self.mount_dns_wait = mount_dns_wait
        self.mounts = MountList(rmtab_path, max_mounts)

    # -- loading -------------------------------------------------------------

    def load(self):
        """Read and apply the exports file. Raises (OSError, ExportsError, or
        whatever make_fs raises) and leaves the current table alone on error."""
        with open(self.exports_file, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        exports = parse_exports(text, self.exports_file)
        old = self._table
        entries = []
        created = []
        try:
            for export in exports:
                for w in export.warnings:
                    log.warning("%s", w)
                prev = old.by_path.get(export.path)
                if prev is not None:
                    fs, eid = prev.fs, prev.export_id
                else:
                    where = f"{export.filename}:{export.lineno}"
                    try:
                        fs = self._make_fs(export.path)
                    except ExportsError:
                        raise
                    except (OSError, FsError, ValueError) as e:
                        raise ExportsError(f"{where}: cannot export {export.path}: {e}") from e
                    created.append(fs)
                    eid = export_id_of(fs.root_fh)
                    if eid is None:
                        raise ExportsError(f"{where}: {export.path}: its root handle names no export")
                for other in entries:
                    if other.export_id == eid:
                        raise ExportsError(f"{export.filename}:{export.lineno}: {export.path} and "
                                           f"{other.export.path} have the same export id {eid:#x}")
                entries.append(_Entry(export, fs, eid))
        except BaseException:
            for fs in created:  # a refused file must not leak what it opened
                _close(fs)
            raise
        if not entries:
            log.warning("%s: no exports", self.exports_file)
        self._table = _Table(entries)
        kept = {id(e.fs) for e in entries}
        for e in old.entries:
            if id(e.fs) not in kept:
                _close(e.fs)  # a dropped export's cached descriptors go with it

    def reload(self):
        """load(), but a bad file keeps the table in force: log, return False."""
        try:
            self.load()
        except ExportsError as e:
            log.error("exports not reloaded: %s", e)
            return False
        except (OSError, FsError, ValueError) as e:
            log.error("exports not reloaded: %s: %s", self.exports_file, e)
            return False
        return True

    def export_paths(self):
        return [e.export.path for e in self._table.entries]

    def exports_list(self):
        """[(dirpath bytes, [group name bytes])] for EXPORT; no groups means
        everyone (mountd's convention, which showmount prints as "(everyone)")."""
        out = []
        for e in self._table.entries:
            clients = e.export.clients
            if any(c.kind == ANONYMOUS for c in clients):
                names = []
            else:
                names = [c.text.encode() for c in clients if len(c.text.encode()) <= MNTNAMLEN]
            out.append((os.fsencode(e.export.path), names))
        return out

    # -- client matching ---------------------------------------------------

    def _options(self, table, entry, ip, wait):
        """ExportOptions for this client, None if not allowed; raises
        FsError(JUKEBOX) while its host name is still being looked up."""
        export = entry.export
        if not export.needs_hostname:
            key = (entry.export_id, ip)
            try:
                return table.match_cache[key]
            except KeyError:
                pass
            opts = export.match(ip, None)
            if len(table.match_cache) >= _MATCH_CACHE_MAX:
                table.match_cache.clear()
            table.match_cache[key] = opts
            return opts
        known, names = self.hostnames.get(ip, wait)
        if not known:
            raise FsError(nfsstat3.NFS3ERR_JUKEBOX, f"host name of {ip} not known yet")
        return export.match(ip, names)

    def resolve(self, ctx, fh):
        """(MetaFS, Caller) for a request on handle ``fh``: the shared contract."""
        eid = export_id_of(fh)
        if eid is None:
            raise FsError(nfsstat3.NFS3ERR_BADHANDLE, "not a handle of this server")
        table = self._table
        ip, port = ctx.client[0], ctx.client[1]
        key = (eid, ip, port < PRIVILEGED_PORTS, ctx.cred)
        hit = table.resolved.get(key)
        if hit is not None:
            return hit
        entry = table.by_id.get(eid)
        if entry is None:
            raise FsError(nfsstat3.NFS3ERR_STALE, "export no longer exported")
        opts = self._options(table, entry, ip, self.dns_wait)
        if opts is None:
            # STALE, as Linux's nfsd answers (and RFC 1813: access "revoked"):
            # ACCES would confirm to a stranger that the handle names a live export.
            raise FsError(nfsstat3.NFS3ERR_STALE, f"{ip} may not use {entry.export.path}")
        if opts.secure and port >= PRIVILEGED_PORTS:
            # Linux's nfsd answers nfserr_perm for an insecure source port.
            raise FsError(nfsstat3.NFS3ERR_PERM,
                          f"{ip}:{port} is not a privileged port ('insecure' not set)")
        cred = ctx.cred
        if cred is None:
            uid, gid, gids = opts.anonymous()
        else:
            uid, gid, gids = opts.squash(cred.uid, cred.gid, cred.gids)
        found = entry.fs, Caller(uid, gid, gids, readonly=opts.readonly, sync=opts.sync)
        if not table.by_hostname[eid]:
            if len(table.resolved) >= _MATCH_CACHE_MAX:
                table.resolved.clear()
            table.resolved[key] = found
        return found

    def secure_port_required(self, ctx, fh):
        """Whether the export of ``fh`` wants this client on a port below 1024
        (`secure`, the default): a pNFS data server holds it to that too."""
        table = self._table
        entry = table.by_id.get(export_id_of(fh))
        if entry is None:
            return True
        opts = self._options(table, entry, ctx.client[0], self.dns_wait)
        return opts is None or bool(opts.secure)

    def pnfs_allowed(self, ctx, fh):
        """Whether the export gives this client pNFS layouts (``no_pnfs``:
        not, say for clients that cannot reach the iods)."""
        table = self._table
        entry = table.by_id.get(export_id_of(fh))
        if entry is None:
            return False
        opts = self._options(table, entry, ctx.client[0], self.dns_wait)
        return opts is not None and bool(opts.pnfs)

    def visible_exports(self, ctx):
        """[(export path, MetaFS)] that this client may mount (MNT's client
        rules), for the NFSv4 pseudo root; JUKEBOX while a host name needed to
        decide is still being looked up. The port ('secure') is checked when a
        handle of the export is used (resolve), as for NFSv3."""
        table = self._table
        ip = ctx.client[0]
        return [(e.export.path, e.fs) for e in table.entries
                if self._options(table, e, ip, self.dns_wait) is not None]

    # -- MOUNT ---------------------------------------------------------------

    async def mount(self, ctx, dirpath):
        """MNT: (mountstat3, root handle or None). The path may be an export or a
        directory inside one (the longest export path that lets this client in
        is used, as mountd does). Errors follow nfs-utils' mountd: ACCES for a
        client that is not allowed or uses an unprivileged port on a 'secure'
        export; NOENT for a path inside no export or missing; NOTDIR."""
        ip, port = ctx.client[0], ctx.client[1]
        path = os.fsdecode(bytes(dirpath)) or "/"
        norm = normalize_path(path)
        if norm is None:
            log.info("refused mount request from %s for %r: not an absolute path", ip, path)
            return mountstat3.MNT3ERR_NOENT, None
        table = self._table
        candidates = [e for e in table.entries if _within(norm, e.export.path)]
        if not candidates:
            log.info("refused mount request from %s for %s: not exported", ip, norm)
            return mountstat3.MNT3ERR_NOENT, None
        candidates.sort(key=lambda e: len(e.export.path), reverse=True)
        names = ()
        if any(e.export.needs_hostname for e in candidates):
            # If the name is still unknown after the wait, match by address only.
            _, names = await self.hostnames.aget(ip, self.mount_dns_wait)
        entry = opts = None
        for cand in candidates:
            opts = cand.export.match(ip, names)
            if opts is not None:
                entry = cand
                break
        if entry is None:
            log.info("refused mount request from %s for %s: client not allowed", ip, norm)
            return mountstat3.MNT3ERR_ACCES, None
        if opts.secure and port >= PRIVILEGED_PORTS:
            log.info("refused mount request from %s for %s: illegal port %d", ip, norm, port)
            return mountstat3.MNT3ERR_ACCES, None
        status, fh = self._walk(entry, norm)
        if status != mountstat3.MNT3_OK:
            log.info("mount request from %s for %s failed: %s", ip, norm, status.name)
            return status, None
        names = self.hostnames.peek(ip)
        self.mounts.add(names[0] if names else ip, ip, dirpath)
        log.info("authenticated mount request from %s:%d for %s (%s)", ip, port, norm,
                 entry.export.path)
        return mountstat3.MNT3_OK, fh

    def _walk(self, entry, norm):
        """The handle of ``norm`` inside the export, looked up component by
        component (so symlinks are never followed out of the export)."""
        fh = entry.fs.root_fh
        rest = norm[len(entry.export.path):].strip("/")
        if not rest:
            return mountstat3.MNT3_OK, fh
        try:
            for part in rest.split("/"):
                fh, attr, _ = entry.fs.lookup(fh, os.fsencode(part), _ROOT)
            if attr.type != FileType.DIR:
                return mountstat3.MNT3ERR_NOTDIR, None
        except FsError as e:
            try:
                return mountstat3(int(e.status)), None
            except ValueError:
                return mountstat3.MNT3ERR_SERVERFAULT, None
        return mountstat3.MNT3_OK, fh

    def umount(self, ctx, dirpath):
        self.mounts.remove(ctx.client[0], dirpath)

    def umount_all(self, ctx):
        self.mounts.remove_client(ctx.client[0])

    def mount_list(self):
        return self.mounts.entries()


def _within(path, export_path):
    return (path == export_path or export_path == "/" or
            path.startswith(export_path + "/"))


__all__ = ["ExportRegistry", "HostnameCache", "MountList", "reverse_lookup"]
