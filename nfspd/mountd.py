"""The MOUNT service (program 100005, versions 1, 2 and 3) over an ExportRegistry.

MNT hands out an export's root handle (or a subdirectory's, like Linux's
mountd), DUMP/UMNT/UMNTALL keep the advisory mount list, EXPORT lists the
exports. Version 2's PATHCONF is not offered (PROC_UNAVAIL); Linux clients
never call it. MNT v3 announces AUTH_SYS only, as mountd does for sec=sys.
"""

from common import mount as m
from common.rpc import auth_flavor
from common.xdr import Void
from nfspd.dispatch import Procedure, Program

EIO = 5
AUTH_FLAVORS = [int(auth_flavor.AUTH_SYS)]


def _v1_status(status):
    """fhstatus carries a UNIX errno; mountstat3 shares the errno values except
    its NFS-only codes."""
    return int(status) if int(status) < 1000 else EIO


def program(registry):
    """The MOUNT Program; ``registry`` is an nfspd.exports.ExportRegistry."""

    async def null(ctx, args):
        return None

    async def mnt_v1(ctx, dirpath):
        status, fh = await registry.mount(ctx, dirpath)
        if status != m.mountstat3.MNT3_OK:
            return m.fhstatus(_v1_status(status))
        if len(fh) > m.FHSIZE:
            # Cannot happen with nfspd.handles (at most 32 bytes); refuse rather
            # than truncate a handle.
            return m.fhstatus(EIO)
        return m.fhstatus(0, bytes(fh).ljust(m.FHSIZE, b"\0"))

    async def mnt_v3(ctx, dirpath):
        status, fh = await registry.mount(ctx, dirpath)
        if status != m.mountstat3.MNT3_OK:
            return m.mountres3(status)
        return m.mountres3(status, m.mountres3_ok(bytes(fh), AUTH_FLAVORS))

    async def dump(ctx, args):
        return [m.mountbody(host, path) for host, path in registry.mount_list()]

    async def umnt(ctx, dirpath):
        registry.umount(ctx, dirpath)
        return None

    async def umntall(ctx, args):
        registry.umount_all(ctx)
        return None

    async def export(ctx, args):
        return [m.exportnode(path, names) for path, names in registry.exports_list()]

    def common(mnt_res, mnt):
        return {
            0: Procedure("NULL", Void, Void, null),
            1: Procedure("MNT", m.dirpath, mnt_res, mnt),
            2: Procedure("DUMP", Void, m.mountlist, dump),
            3: Procedure("UMNT", m.dirpath, Void, umnt),
            4: Procedure("UMNTALL", Void, Void, umntall),
            5: Procedure("EXPORT", Void, m.exports, export),
        }

    v1 = common(m.fhstatus, mnt_v1)
    v1[m.MOUNTPROC.MOUNTPROC_EXPORTALL] = Procedure("EXPORTALL", Void, m.exports, export)
    v3 = common(m.mountres3, mnt_v3)
    return Program(m.MOUNT_PROGRAM, "mount", {
        m.MOUNTVERS: v1,
        m.MOUNTVERS_POSIX: dict(v1),
        m.MOUNT_V3: v3,
    })


__all__ = ["program", "AUTH_FLAVORS"]
