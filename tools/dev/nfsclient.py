"""The project's own NFS client: MOUNT, then NFSv3 or NFSv2 over UDP or TCP.

For what real clients cannot reach in tests (NFSv2, every procedure, every
error path, retransmissions) and for tools. Results are the codecs' own
objects: a call returns the procedure's result union (``res.disc`` is the
status, ``res.body`` the resok/resfail struct).
"""

from common import mount, nfs2, nfs3
from tools.rpcclient import RpcCallError, RpcClient, getport


class NfsError(Exception):
    def __init__(self, proc, status):
        super().__init__(f"{proc}: {status.name}")
        self.status = status


def _call(rpc, prog, vers, proc, args_type, args, res_type, **kw):
    return rpc.call_typed(prog, vers, proc, args_type, args, res_type, **kw)


def mount_export(host, path, *, vers=3, transport="udp", port=None, cred=None,
                 reserved_port=True, timeout=5.0):
    """MNT: the export's root file handle (bytes). Raises NfsError on refusal."""
    if port is None:
        port = getport(host, mount.MOUNT_PROGRAM, vers, transport)
    with RpcClient(host, port, transport, timeout=timeout, reserved_port=reserved_port,
                   cred=cred if cred is not None else RpcClient.default_cred()) as c:
        if vers == 3:
            res = _call(c, mount.MOUNT_PROGRAM, 3, mount.MOUNTPROC3.MOUNTPROC3_MNT, mount.dirpath,
                        path.encode() if isinstance(path, str) else path, mount.mountres3)
            if res.disc != mount.mountstat3.MNT3_OK:
                raise NfsError("MNT", res.disc)
            return res.body.fhandle
        res = _call(c, mount.MOUNT_PROGRAM, vers, mount.MOUNTPROC.MOUNTPROC_MNT, mount.dirpath,
                    path.encode() if isinstance(path, str) else path, mount.fhstatus)
        if res.disc != 0:
            raise NfsError("MNT", mount.mountstat3(res.disc))
        return res.body


class Nfs3:
    """NFSv3 calls by procedure: ``c.call(NFSPROC3.GETATTR, GETATTR3args(fh))``."""

    vers = 3

    def __init__(self, rpc):
        self.rpc = rpc

    def call(self, proc, args, **kw):
        name, args_type, res_type = nfs3.PROCEDURES[proc]
        return _call(self.rpc, nfs3.NFS_PROGRAM, 3, proc, args_type, args, res_type, **kw)

    def ok(self, proc, args, **kw):
        """Call and require NFS3_OK; return the resok body."""
        res = self.call(proc, args, **kw)
        if res.disc != nfs3.nfsstat3.NFS3_OK:
            raise NfsError(nfs3.PROCEDURES[proc][0], res.disc)
        return res.body

    # Conveniences used by tests and tools.

    def lookup(self, dir_fh, name):
        return self.ok(nfs3.NFSPROC3.LOOKUP, nfs3.LOOKUP3args(nfs3.diropargs3(dir_fh, name))).object

    def walk(self, root_fh, path):
        fh = root_fh
        for part in [p for p in path.split("/") if p]:
            fh = self.lookup(fh, part.encode())
        return fh

    def getattr(self, fh):
        return self.ok(nfs3.NFSPROC3.GETATTR, nfs3.GETATTR3args(fh)).obj_attributes

    def create(self, dir_fh, name, mode=0o644):
        how = nfs3.createhow3(nfs3.createmode3.UNCHECKED, nfs3.sattr3.unchanged().replace(mode=mode))
        return self.ok(nfs3.NFSPROC3.CREATE, nfs3.CREATE3args(nfs3.diropargs3(dir_fh, name), how)).obj

    def write(self, fh, offset, data, stable=nfs3.stable_how.FILE_SYNC):
        return self.ok(nfs3.NFSPROC3.WRITE, nfs3.WRITE3args(fh, offset, len(data), stable, data))

    def read(self, fh, offset, count):
        body = self.ok(nfs3.NFSPROC3.READ, nfs3.READ3args(fh, offset, count))
        return body.data, body.eof

    def write_all(self, fh, data, chunk=32768):
        for off in range(0, len(data), chunk):
            self.write(fh, off, data[off:off + chunk])

    def read_all(self, fh, chunk=32768):
        out, off = [], 0
        while True:
            data, eof = self.read(fh, off, chunk)
            out.append(data)
            off += len(data)
            if eof or not data:
                return b"".join(out)

    def listdir(self, dir_fh, count=4096):
        names, cookie, verf = [], 0, b"\0" * 8
        while True:
            body = self.ok(nfs3.NFSPROC3.READDIR, nfs3.READDIR3args(dir_fh, cookie, verf, count))
            for e in body.reply.entries:
                names.append(e.name)
                cookie = e.cookie
            verf = body.cookieverf
            if body.reply.eof:
                return names


class Nfs2:
    """NFSv2 calls by procedure: ``c.call(NFSPROC.GETATTR, fh)``."""

    vers = 2

    def __init__(self, rpc):
        self.rpc = rpc

    def call(self, proc, args, **kw):
        args_type, res_type = nfs2.PROCEDURE_TYPES[proc][-2:]
        return _call(self.rpc, nfs2.NFS_PROGRAM, 2, proc, args_type, args, res_type, **kw)


def connect(host, export, *, vers=3, transport="udp", port=2049, uid=0, gid=0, gids=None,
            reserved_port=True, timeout=5.0):
    """Mount ``export`` and return (client, root handle)."""
    cred = RpcClient.default_cred(uid, gid, gids if gids is not None else [gid])
    root = mount_export(host, export, vers=3 if vers == 3 else 1, transport=transport,
                        cred=cred, timeout=timeout)
    rpc = RpcClient(host, port, transport, timeout=timeout, cred=cred, reserved_port=reserved_port)
    client = Nfs3(rpc) if vers == 3 else Nfs2(rpc)
    return client, root


__all__ = ["NfsError", "RpcCallError", "mount_export", "Nfs3", "Nfs2", "connect"]
