"""The whole-dispatcher target: a fuzzed RPC message through nfspd's real
dispatchers (NFS v2/v3 and MOUNT v1-3 as nfspd.server.Metaserver assembles
them, and the embedded portmapper) on a MetaFS over a temporary directory.

No input may raise out of Dispatcher.handle, and none may be answered with
SYSTEM_ERR: that reply means a handler raised, i.e. a bug. A reply, when
there is one, must be a REPLY to the call's xid.

Handles and paths differ from one directory to the next, so inputs name them
by placeholders that the target replaces before dispatching (corpus files stay
valid on any machine):

- ``00 00 00 04 FE FE 03 k``: an NFSv3 handle (opaque<64>, length included)
  of object k of World.objects;
- ``FE FE 02 k`` + 28 bytes: an NFSv2 handle (32 bytes, zero-padded), same k;
- ``00 00 00 04 FE FE 50 k``: a MOUNT dirpath (string, length included), path k.

The calls are made from 127.0.0.1 port 800 (a privileged port), over TCP when
the xid is odd and UDP when even (they differ in the largest READ/WRITE).
"""

import logging
import os
import re
import shutil
import stat
import tempfile
import types

import trio

from common import mount, nfs2, nfs3, portmap, rpc
from common.xdr import decode, encode
from tools.dev.fuzz import targets

M3 = b"\xfe\xfe\x03"
M2 = b"\xfe\xfe\x02"
MP = b"\xfe\xfeP"
_RE3 = re.compile(re.escape(b"\x00\x00\x00\x04" + M3) + b"(.)", re.DOTALL)
_RE2 = re.compile(re.escape(M2) + b"(.)(.{0,28})", re.DOTALL)
_REP = re.compile(re.escape(b"\x00\x00\x00\x04" + MP) + b"(.)", re.DOTALL)

ROOT = rpc.AuthSys(1, b"fuzz", 0, 0, [])
USER = rpc.AuthSys(2, b"fuzz", 1000, 1000, [1000, 100])
CLIENT = ("127.0.0.1", 800)
SETUP_CLIENT = ("127.0.0.1", 801)

# The names seeds use: existing objects, and one that does not exist yet.
NAMES = [b"f", b"d", b"new", b"l", b".."]


class SystemErr(AssertionError):
    """A handler raised, so the dispatcher answered SYSTEM_ERR; ``cause`` is the
    exception it logged (what tools/dev/fuzz/run.py tells bugs apart by)."""

    def __init__(self, text, cause=None):
        super().__init__(text)
        self.cause = cause


class _Failures(logging.Handler):
    """Keeps what the dispatcher logs for SYSTEM_ERR: the text, for the report,
    and the exception."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []
        self.exceptions = []

    def emit(self, record):
        self.records.append(self.format(record))
        if record.exc_info and record.exc_info[1] is not None:
            self.exceptions.append(record.exc_info[1])


class World:
    """A Metaserver's dispatchers on a fresh directory, with a few objects of
    every kind made through NFSv3 calls. ``objects`` are the handles the
    placeholders name: root, file, directory, symlink, fifo, a user's file in
    the directory, the read-only export's root, a removed file (stale), junk."""

    def __init__(self, base=None):
        from nfspd import portmapper
        from nfspd.dispatch import Dispatcher
        from nfspd.server import Config, Metaserver

        self.base = base or tempfile.mkdtemp(prefix="nfsp-fuzz-dispatch-")
        self.export = os.path.join(self.base, "export")
        self.ro = os.path.join(self.base, "ro")
        for d in (self.export, self.ro):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o777)
        exports = os.path.join(self.base, "exports")
        with open(exports, "w") as f:
            f.write(f"{self.export} 127.0.0.0/8(rw,no_root_squash,insecure) 10.0.0.0/8(ro)\n"
                    f"{self.ro} 127.0.0.1(ro,all_squash,anonuid=1000,anongid=1000)\n")
        self.server = Metaserver(Config(exports, os.path.join(self.base, "state"), portmap="off"))
        self.portmap = Dispatcher([portmapper.program(portmapper.PortTable())])
        self.dispatchers = (self.server.nfs, self.server.mount, self.portmap)
        self.failures = _Failures()
        logging.getLogger("nfspd").addHandler(self.failures)
        self.paths = [self.export, os.path.join(self.export, "d"), self.ro, "/",
                      os.path.join(self.export, "f"), self.base]
        self.xid = 0
        self.calls = 0
        self._populate()

    def reset(self):
        """Back to the objects _populate makes (the fuzzer removes and renames
        them), through the real procedures so that the data path purges what
        goes. The same Metaserver: a new one would start another purge thread
        that nothing stops."""
        root = self.objects[0]
        self._empty(root, os.fsencode(self.export))
        for name in os.listdir(self.export):  # what the procedures could not remove
            child = os.path.join(self.export, name)
            if os.path.isdir(child) and not os.path.islink(child):
                shutil.rmtree(child, ignore_errors=True)
            else:
                os.unlink(child)
        os.chown(self.export, 0, 0)
        os.chmod(self.export, 0o777)
        self.calls = 0
        self._populate()

    def _empty(self, dir_fh, path):
        P = nfs3.NFSPROC3
        for name in os.listdir(path):
            where = nfs3.diropargs3(dir_fh, name)
            try:
                if stat.S_ISDIR(os.lstat(os.path.join(path, name)).st_mode):
                    sub = self._v3(P.LOOKUP, nfs3.LOOKUP3args(where)).object
                    self._empty(sub, os.path.join(path, name))
                    self._v3(P.RMDIR, nfs3.RMDIR3args(where))
                else:
                    self._v3(P.REMOVE, nfs3.REMOVE3args(where))
            except (RuntimeError, OSError):
                pass  # reset() removes it directly

    def close(self):
        logging.getLogger("nfspd").removeHandler(self.failures)
        for entry in self.server.registry._table.entries:
            entry.fs.close()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- setting up, through the real procedures -------------------------------

    def _v3(self, proc, args, cred=ROOT):
        self.xid += 2
        _, args_type, res_type = nfs3.PROCEDURES[proc]
        msg = rpc.encode_call(self.xid, nfs3.NFS_PROGRAM, 3, proc, encode(args_type, args), cred)
        # From a port of its own, so that the duplicate request cache never
        # mixes these calls up with the fuzzer's.
        ctx = self._ctx("tcp", SETUP_CLIENT)
        r = rpc.decode_reply(trio.run(self.server.nfs.handle, msg, ctx))
        res = decode(res_type, r.body)
        if res.disc != nfs3.nfsstat3.NFS3_OK:
            raise RuntimeError(f"setting up the fuzz world: {nfs3.PROCEDURES[proc][0]}: "
                               f"{res.disc!r}")
        return res.body

    def _ctx(self, transport, client=CLIENT):
        from nfspd.dispatch import CallContext
        return CallContext(client, ("127.0.0.1", 2049), transport)

    def _populate(self):
        P, S = nfs3.NFSPROC3, nfs3.sattr3.unchanged()
        mode = S.replace(mode=0o644)
        status, root = trio.run(self.server.registry.mount, self._ctx("udp"),
                                os.fsencode(self.export))
        status_ro, ro_root = trio.run(self.server.registry.mount, self._ctx("udp"),
                                      os.fsencode(self.ro))
        assert status == status_ro == mount.mountstat3.MNT3_OK, (status, status_ro)
        where = nfs3.diropargs3
        f = self._v3(P.CREATE, nfs3.CREATE3args(where(root, b"f"), nfs3.createhow3(
            nfs3.createmode3.UNCHECKED, mode))).obj
        self._v3(P.WRITE, nfs3.WRITE3args(f, 0, 5000, nfs3.stable_how.FILE_SYNC, b"x" * 5000))
        d = self._v3(P.MKDIR, nfs3.MKDIR3args(where(root, b"d"), S.replace(mode=0o777))).obj
        sl = self._v3(P.SYMLINK, nfs3.SYMLINK3args(where(root, b"l"), nfs3.symlinkdata3(
            S, b"f"))).obj
        fifo = self._v3(P.MKNOD, nfs3.MKNOD3args(where(root, b"p"), nfs3.mknoddata3(
            nfs3.ftype3.NF3FIFO, mode))).obj
        g = self._v3(P.CREATE, nfs3.CREATE3args(where(d, b"g"), nfs3.createhow3(
            nfs3.createmode3.GUARDED, S.replace(mode=0o600))), cred=USER).obj
        gone = self._v3(P.CREATE, nfs3.CREATE3args(where(root, b"gone"), nfs3.createhow3(
            nfs3.createmode3.UNCHECKED, mode))).obj
        self._v3(P.REMOVE, nfs3.REMOVE3args(where(root, b"gone")))
        self.objects = [root, f, d, sl, fifo, g, ro_root, gone, b"\x01" * 32, b""]

    # -- one fuzz input ----------------------------------------------------------

    def substitute(self, data):
        objs, paths = self.objects, self.paths

        def obj(m):
            return objs[m.group(1)[0] % len(objs)]

        def path(m):
            return os.fsencode(paths[m.group(1)[0] % len(paths)])

        data = _RE3.sub(lambda m: encode(nfs3.nfs_fh3, obj(m)), data)
        data = _RE2.sub(lambda m: obj(m).ljust(32, b"\0")[:len(m.group(0))], data)
        return _REP.sub(lambda m: encode(mount.dirpath, path(m)), data)

    def handle(self, data):
        msg = self.substitute(data)
        prog = int.from_bytes(msg[12:16], "big") if len(msg) >= 16 else 0
        dispatcher = {mount.MOUNT_PROGRAM: self.server.mount,
                      portmap.PMAP_PROGRAM: self.portmap}.get(prog, self.server.nfs)
        xid = rpc.peek_xid(msg)
        transport = "tcp" if xid is not None and xid & 1 else "udp"
        errors_before = sum(d.counters.system_err for d in self.dispatchers)
        del self.failures.records[:], self.failures.exceptions[:]
        self.calls += 1
        reply = trio.run(dispatcher.handle, msg, self._ctx(transport))
        if sum(d.counters.system_err for d in self.dispatchers) != errors_before:
            raise SystemErr("SYSTEM_ERR:\n" + "\n".join(self.failures.records),
                            (self.failures.exceptions or [None])[-1])
        if reply is not None:
            r = rpc.decode_reply(reply)
            if r.xid != xid:
                raise AssertionError(f"reply to xid {r.xid:#x} for a call with xid {xid:#x}")
            if r.accepted and r.stat == rpc.accept_stat.SYSTEM_ERR:
                raise SystemErr("SYSTEM_ERR reply")


# The fuzzing process keeps one World and resets it now and then, so that the
# objects the placeholders name exist again (the fuzzer removes them).
RESET_AFTER = 5000
_world = None


def _ensure_world():
    global _world
    if _world is None:
        _world = World()
    elif _world.calls >= RESET_AFTER:
        _world.reset()
    return _world


def run(data):
    """A whole RPC message (with placeholders) through nfspd's dispatchers."""
    _ensure_world().handle(data)


# --- seeds: every procedure of every program, with real handles and names ------------


def _overrides(k):
    """Sample values for the dispatcher: handle placeholders for object k,
    real names, export paths."""
    return {
        id(nfs3.nfs_fh3): [M3 + bytes([k])],
        id(nfs2.fhandle): [M2 + bytes([k]) + bytes(28)],
        id(mount.dirpath): [MP + bytes([0]), MP + bytes([1])],
        id(nfs3.filename3): NAMES,
        id(nfs2.filename): NAMES,
    }


def _programs():
    from nfspd import mountd, nfs2proc, nfs3proc, portmapper
    resolver = types.SimpleNamespace(resolve=None)  # only the procedures' types are used
    return [(nfs3.NFS_PROGRAM, {2: nfs2proc.PROCEDURES, 3: nfs3proc.PROCEDURES}),
            (mount.MOUNT_PROGRAM, mountd.program(resolver).versions),
            (portmap.PMAP_PROGRAM, portmapper.program(portmapper.PortTable()).versions)]


def seeds():
    xid = 0
    for prog, versions in _programs():
        for vers, procs in versions.items():
            for num, proc in procs.items():
                for k in (0, 1, 2):
                    if k and prog != nfs3.NFS_PROGRAM:
                        continue
                    for args in targets.encodings(proc.args_type, _overrides(k))[:3]:
                        for cred in (ROOT, USER, None)[:1 if k else 3]:
                            xid += 1
                            yield rpc.encode_call(xid, prog, vers, num, args, cred)


TARGET = targets.Target("dispatch", run, seeds, max_len=16384, alloc=(64, 16 << 20),
                        doc=run.__doc__, setup=_ensure_world)
