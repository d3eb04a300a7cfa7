"""The MOUNT service (program 100005, versions 1, 2 and 3) over an ExportRegistry.

One function per procedure, named as RFC 1813 appendix I names it (version 3;
versions 1 and 2, RFC 1094 appendix A, have the same procedures and EXPORTALL),
and one table per version. The handlers find the registry in ``ctx.service``.

MNT hands out an export's root handle (or a subdirectory's, like Linux's
mountd), DUMP/UMNT/UMNTALL keep the advisory mount list, EXPORT lists the
exports. Version 2's PATHCONF is not offered (PROC_UNAVAIL); Linux clients
never call it. MNT v3 announces AUTH_SYS only, as mountd does for sec=sys.
"""

from common import mount as m
from common.mount import MOUNTPROC, MOUNTPROC3
from common.rpc import auth_flavor
from common.xdr import Void
from nfspd.dispatch import Program, procedure_table

EIO = 5
AUTH_FLAVORS = [int(auth_flavor.AUTH_SYS)]


def _v1_status(status):
    """fhstatus carries a UNIX errno; mountstat3 shares the errno values except
    its NFS-only codes."""
    return int(status) if int(status) < 1000 else EIO


async def NULL(ctx, args):
    return None


async def MNT(ctx, dirpath):
    """Version 3 answers a mountres3 (handle and auth flavors), versions 1 and 2
    an fhstatus (a 32-byte handle, the status an errno)."""
    status, fh = await ctx.service.mount(ctx, dirpath)
    if ctx.call.vers == m.MOUNT_V3:
        if status != m.mountstat3.MNT3_OK:
            return m.mountres3(status)
        return m.mountres3(status, m.mountres3_ok(bytes(fh), AUTH_FLAVORS))
    if status != m.mountstat3.MNT3_OK:
        return m.fhstatus(_v1_status(status))
    if len(fh) > m.FHSIZE:
        # Cannot happen with nfspd.fs.handles (at most 32 bytes); refuse rather
        # than truncate a handle.
        return m.fhstatus(EIO)
    return m.fhstatus(0, bytes(fh).ljust(m.FHSIZE, b"\0"))


async def DUMP(ctx, args):
    return [m.mountbody(host, path) for host, path in ctx.service.mount_list()]


async def UMNT(ctx, dirpath):
    ctx.service.umount(ctx, dirpath)
    return None


async def UMNTALL(ctx, args):
    ctx.service.umount_all(ctx)
    return None


async def EXPORT(ctx, args):
    return [m.exportnode(path, names) for path, names in ctx.service.exports_list()]


# Nothing is cached: MNT and UMNT are as good done twice, and their replies
# say nothing a retransmission would get wrong.
P1, P3 = MOUNTPROC, MOUNTPROC3
V1 = procedure_table([
    # procedure              arguments  results      handler  cached
    (P1.MOUNTPROC_NULL,      Void,      Void,        NULL,    False),
    (P1.MOUNTPROC_MNT,       m.dirpath, m.fhstatus,  MNT,     False),
    (P1.MOUNTPROC_DUMP,      Void,      m.mountlist, DUMP,    False),
    (P1.MOUNTPROC_UMNT,      m.dirpath, Void,        UMNT,    False),
    (P1.MOUNTPROC_UMNTALL,   Void,      Void,        UMNTALL, False),
    (P1.MOUNTPROC_EXPORT,    Void,      m.exports,   EXPORT,  False),
    (P1.MOUNTPROC_EXPORTALL, Void,      m.exports,   EXPORT,  False),
])
V3 = procedure_table([
    (P3.MOUNTPROC3_NULL,     Void,      Void,        NULL,    False),
    (P3.MOUNTPROC3_MNT,      m.dirpath, m.mountres3, MNT,     False),
    (P3.MOUNTPROC3_DUMP,     Void,      m.mountlist, DUMP,    False),
    (P3.MOUNTPROC3_UMNT,     m.dirpath, Void,        UMNT,    False),
    (P3.MOUNTPROC3_UMNTALL,  Void,      Void,        UMNTALL, False),
    (P3.MOUNTPROC3_EXPORT,   Void,      m.exports,   EXPORT,  False),
])
del P1, P3


def program(registry):
    """The MOUNT Program; ``registry`` is an nfspd.exports.ExportRegistry."""
    return Program(m.MOUNT_PROGRAM, "mount", {m.MOUNTVERS: V1, m.MOUNTVERS_POSIX: V1,
                                              m.MOUNT_V3: V3}, registry)
