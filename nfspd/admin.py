"""The metaserver's local admin socket: what `nfsp status` reads.

A Unix stream socket (STATE_DIR/admin.sock, mode 0600) that only root (or
nfspd's own user) may connect to: the socket mode keeps others out, and the
peer's credentials (SO_PEERCRED) are checked again, so a socket whose mode was
loosened by hand still answers nobody else.

The protocol is one JSON object per line each way:

    -> {"command": "status"}
    <- {"ok": true, "status": {...}}
    -> {"command": "accept-iod-store", "name": "HOST:PORT"}
    <- {"ok": true, "accept-iod-store": {"name": ..., "forgotten": HEX|null, "store": HEX|null}}
    <- {"ok": false, "error": "unknown command 'x'"}

Requests are bounded in size, connections in number and time: the socket is
local and root-only, but a stuck or misbehaving tool must not hold nfspd's
resources.
"""

import json
import logging
import os
import platform
import socket
import stat
import sys
import time
import struct

import trio

from common.runtime import schedstat
from common.runtime.iodclient import iod_name
from common.runtime.purgejournal import list_segments, load_progress
from common.runtime.version import VERSION
from nfspd.fs.syscalls import O_PATH

log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"
MAX_REQUEST = 4096          # bytes in one request line
MAX_CONNECTIONS = 8
IDLE_TIMEOUT = 30.0         # seconds a connection may wait between requests
SEND_TIMEOUT = 10.0
_ucred = struct.Struct("=iII")  # pid, uid, gid
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)  # Linux's; PyPy 3.9's socket lacks it
_TOO_LONG = object()


class CommandError(ValueError):
    """A command refused for a reason its caller can fix (answered as is, no traceback)."""


def socket_path(state_dir):
    return os.path.join(state_dir, SOCKET_NAME)


def peer_uid(sock):
    data = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _ucred.size)
    return _ucred.unpack(data)[1]


def _bind(path):
    """A listening socket at ``path`` that never exists with a wider mode:
    the umask applies at bind time, before any client could connect."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket; not replacing it")
        if _answers(path):
            raise OSError(f"{path}: another nfspd answers on it (same --state-dir?)")
        os.unlink(path)  # stale, from a run that did not exit cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with _short(path) as short:
            sock.bind(short)
        os.chmod(path, 0o600)
        sock.listen(MAX_CONNECTIONS)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return trio.socket.from_stdlib_socket(sock)


def _answers(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, _short(path) as short:
        try:
            s.connect(short)
            return True
        except OSError:
            return False


class _short:
    """A name for ``path`` that fits sockaddr_un (108 bytes): deep state
    directories go through /proc/self/fd/N of the directory."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if len(os.fsencode(self.path)) < 100:
            return self.path
        self.fd = os.open(os.path.dirname(self.path) or ".", O_PATH | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{os.path.basename(self.path)}"

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


class AdminServer:
    """``commands`` maps a command name to a function of the request dict that
    returns something JSON-serialisable (the reply's value under that name)."""

    def __init__(self, path, commands, allowed_uids=None):
        self.path = path
        self.commands = dict(commands)
        self.allowed_uids = set(allowed_uids if allowed_uids is not None else {0, os.geteuid()})
        self._slots = trio.CapacityLimiter(MAX_CONNECTIONS)
        self.refused = 0

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        try:
            sock = _bind(self.path)
        except OSError as e:
            # Monitoring must not keep the file service down.
            log.error("admin socket %s: %s; `nfsp status` will not answer", self.path, e)
            task_status.started(None)
            return
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                while True:
                    stream = await listener.accept()
                    try:
                        self._slots.acquire_on_behalf_of_nowait(stream)
                    except trio.WouldBlock:
                        self.refused += 1
                        nursery.start_soon(self._refuse, stream, "too many admin connections")
                        continue
                    nursery.start_soon(self._serve, stream)
        finally:
            # No await here: a cancelled task would stop at it.
            try:
                os.unlink(self.path)
            except OSError:
                pass
            sock.close()

    async def _refuse(self, stream, why):
        async with stream:
            with trio.move_on_after(1.0):
                await stream.send_all(_line({"ok": False, "error": why}))

    async def _serve(self, stream):
        try:
            async with stream:
                uid = peer_uid(stream.socket)
                if uid not in self.allowed_uids:
                    self.refused += 1
                    log.warning("admin socket: refused a connection from uid %d", uid)
                    return
                buf = bytearray()
                while True:
                    line = None
                    with trio.move_on_after(IDLE_TIMEOUT):
                        line = await self._read_line(stream, buf)
                    if line is None:
                        return
                    reply = self._answer(line)
                    with trio.move_on_after(SEND_TIMEOUT):
                        await stream.send_all(_line(reply))
                        if line is not _TOO_LONG:
                            continue
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._slots.release_on_behalf_of(stream)

    async def _read_line(self, stream, buf):
        """The next request line, _TOO_LONG for one over the bound (the
        connection is closed after the answer), None at end of stream."""
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                return line
            if len(buf) > MAX_REQUEST:
                return _TOO_LONG
            data = await stream.receive_some(MAX_REQUEST + 1)
            if not data:
                return None
            buf += data

    def _answer(self, line):
        if line is _TOO_LONG:
            return {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": f"not JSON: {e}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'expected {"command": NAME}'}
        name = request["command"]
        fn = self.commands.get(name)
        if fn is None:
            return {"ok": False, "error": f"unknown command {name[:64]!r}; known: "
                                          f"{', '.join(sorted(self.commands))}"}
        try:
            return {"ok": True, name: fn(request)}
        except CommandError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            log.exception("admin command %s failed", name)
            return {"ok": False, "error": f"{name} failed: {e}"}


def _line(obj):
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def request(path, command="status", timeout=5.0, **fields):
    """Client side (blocking): send one command, return the reply dict.
    Raises OSError when nfspd cannot be reached, ValueError on a bad reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        with _short(path) as short:
            s.connect(short)
        s.sendall(_line({"command": command, **fields}))
        buf = bytearray()
        limit = 64 << 20
        while b"\n" not in buf:
            data = s.recv(1 << 16)
            if not data:
                break
            buf += data
            if len(buf) > limit:
                raise ValueError(f"reply longer than {limit} bytes")
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise ValueError("nfspd closed the admin connection without answering")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError("reply is not a JSON object")
    return reply


# --- what "status" answers ---------------------------------------------------------



def _rate(hits, lookups):
    return {"hits": hits, "lookups": lookups,
            "rate": round(hits / lookups, 4) if lookups else None}


def _iods(datapath):
    links = getattr(datapath, "links", None)
    if links is None:
        return []
    queued = [i.get("purge_pending", 0) for i in datapath.status()["iods"]]
    out = []
    for link in links:
        out.append({
            "index": link.index, "address": link.name, "state": link.state, "up": link.up,
            "rtt_ms": round(link.rtt * 1e3, 3) if link.rtt is not None else None,
            "version": link.version, "free": link.free, "total": link.total,
            "restarts": link.restarts, "timeouts": link.timeouts,
            # Direct purges (--unlinkd off) wait per iod in the data path.
            "purge_queued": queued[link.index],
            # Counted at the metaserver's end of the link (nfspd/iodlink.py).
            "requests": link.requests, "read_bytes": link.read_bytes,
            "written_bytes": link.written_bytes, "bytes_out": link.bytes_out,
            "bytes_in": link.bytes_in,
            "clock_offset": (round(link.clock_offset, 3) if link.clock_offset is not None
                             else None),
            # common/runtime/iodstores.py: the store its last PONG named, and why it is refused.
            "store": link.store.hex() if link.store is not None else None,
            "wrong_store": link.wrong_store,
            # Its pNFS data server's port (its PONG), None: it serves none.
            "ds_port": link.ds_port,
        })
    return out


def accept_iod_store(server, request):
    """`nfsp accept-iod-store NAME`: forget iod NAME's store id, so that the
    store its next PONG names (within a heartbeat) is taken as its own."""
    name = request.get("name")
    if not isinstance(name, str):
        raise CommandError('expected {"command": "accept-iod-store", "name": "HOST:PORT"}')
    stores = server.iod_stores
    links = getattr(server.datapath, "links", None) or []
    link = next((link for link in links if link.name == name), None)
    if stores is None or link is None:
        known = ", ".join(link.name for link in links) or "none (no --iods)"
        raise CommandError(f"no iod {name[:64]!r} in iods.conf; iods: {known}")
    old = stores.accept(name)
    return {"name": name, "forgotten": old.hex() if old is not None else None,
            "store": link.store.hex() if link.store is not None else None}


def _purges(server):
    """The purge journal: records appended against each iod's acknowledged
    watermark as unlinkd last saved it (its progress file: a small JSON)."""
    queue = server.purges
    if queue is None:
        dp = server.datapath
        pending = dp.purge_pending() if hasattr(dp, "purge_pending") else 0
        return {"mode": "direct" if hasattr(dp, "links") else "local", "pending": pending}
    tail = queue.next_seq
    segments = list_segments(queue.directory)
    # Sequence numbers start far above 0 (common/runtime/purgejournal.py): count from the
    # oldest record still kept.
    oldest = segments[0][0] if segments else tail
    acked = load_progress(queue.directory)
    per_iod = {}
    for link in server.datapath.links:
        mark = acked.get(iod_name(link.host, link.port), 0)
        if mark > tail:  # stale watermark: unlinkd resends from the oldest record
            mark = 0
        per_iod[link.name] = {"pending": tail - max(mark, oldest)}
    return {"mode": "journal", "journal": queue.directory,
            # Whether a flush commits its removals and their records at once
            # (the journal on the exports' ext3/ext4: nfspd/fs/commit.py).
            "with_removals": queue.appended_on() is not None,
            "appended": queue.appended,   # since this nfspd started
            "kept": tail - oldest,        # records in the journal, acknowledged or not
            "pending": max((v["pending"] for v in per_iod.values()), default=0),
            "iods": per_iod}


def _group_commit(gc):
    """What ``sync`` exports cost nfspd: its flushes, the calls whose reply
    waited for one, and the time they took (its workers' own: under workers)."""
    return {"flushes": gc.batches, "waits": gc.waits, "seconds": round(gc.seconds, 6)}


def _loop(server):
    """The event loop's thread, which answers every call (status_of runs on
    it): its seconds on a core and waiting for one since start, and the
    shares of the last seconds (LOOP_WINDOW) spent so; None where the
    kernel does not say."""
    now = schedstat.read()
    if now is None:
        return None
    now = (time.monotonic(), *now)
    samples = server.loop_samples
    return {"on_cpu_s": round(now[1] / 1e9, 3), "waiting_s": round(now[2] / 1e9, 3),
            "recent_s": round(now[0] - samples[0][0], 1) if samples else None,
            "recent": schedstat.shares(samples[0], now) if samples else None}


def status_of(server):
    """The metaserver's state for `nfsp status` (nfspd/server.py Metaserver)."""
    exported = set(server.registry.export_paths())
    fss = [fs for fs in list(server._filesystems) if fs.export_path in exported]
    drc = server.drc
    data_counters = dict(getattr(server.datapath, "counters", {}) or {})
    return {
        "version": VERSION,
        "pid": os.getpid(),
        # Every call is Python from receive to reply: the interpreter's own
        # build moves nfspd's CPU per call (README: troubleshooting).
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "uptime": round(time.time() - server.started, 3),
        "state_dir": os.path.abspath(server.config.state_dir),
        "exports": sorted(exported),
        "iods": _iods(server.datapath),
        "layout_gen": getattr(server.datapath, "layout_gen", 0),
        "pnfs": server.pnfs is not None,
        "purges": _purges(server),
        "drc": {**_rate(drc.hits, drc.lookups), "entries": len(drc)},
        "metafile_cache": _rate(sum(fs.meta_hits for fs in fss),
                                sum(fs.meta_lookups for fs in fss)),
        # Entries listed (READDIRPLUS, NFSv4 READDIR) and those given from
        # lookups kept while nothing changed (nfspd/fs/attrcache.py).
        "listing_cache": _rate(sum(fs.listing_counts[1] for fs in fss),
                               sum(fs.listing_counts[0] for fs in fss)),
        "clients": [{"host": host, "ip": ip, "path": os.fsdecode(path)}
                    for host, ip, path in server.registry.mounts._entries],
        "v4_clients": server.v4.clients(),
        "workers": server.workers.status() if server.workers is not None else None,
        "group_commit": _group_commit(server.group_commit),
        "loop": _loop(server),
        "counters": {"nfs": server.nfs.counters.as_dict(),
                     "mount": server.mount.counters.as_dict(),
                     "data": data_counters},
    }
