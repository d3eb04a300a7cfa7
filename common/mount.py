"""MOUNT protocol (RFC 1094 appendix A for version 1, RFC 1813 section 5 for
version 3), sans-IO.

Version 2 (MOUNTVERS_POSIX, from Sun's mount.x) is version 1 plus PATHCONF;
nfspd answers PATHCONF with PROC_UNAVAIL, so its types are not described here.
EXPORTALL (procedure 6 of versions 1 and 2 in mount.x) has EXPORT's types.

Paths and names are byte strings, like everything else NFS puts on the wire.
"""

import enum

from common.xdr import (
    Array,
    Enum,
    FixedOpaque,
    Int32,
    LinkedList,
    Opaque,
    String,
    Struct,
    UInt32,
    Union,
    Void,
)

MOUNT_PROGRAM = 100005
MOUNTVERS = 1
MOUNTVERS_POSIX = 2
MOUNT_V3 = 3

MNTPATHLEN = 1024
MNTNAMLEN = 255
FHSIZE = 32
FHSIZE3 = 64


class MOUNTPROC(enum.IntEnum):
    """Versions 1 and 2."""
    MOUNTPROC_NULL = 0
    MOUNTPROC_MNT = 1
    MOUNTPROC_DUMP = 2
    MOUNTPROC_UMNT = 3
    MOUNTPROC_UMNTALL = 4
    MOUNTPROC_EXPORT = 5
    MOUNTPROC_EXPORTALL = 6
    MOUNTPROC_PATHCONF = 7  # version 2 only


class MOUNTPROC3(enum.IntEnum):
    MOUNTPROC3_NULL = 0
    MOUNTPROC3_MNT = 1
    MOUNTPROC3_DUMP = 2
    MOUNTPROC3_UMNT = 3
    MOUNTPROC3_UMNTALL = 4
    MOUNTPROC3_EXPORT = 5


class mountstat3(enum.IntEnum):
    MNT3_OK = 0
    MNT3ERR_PERM = 1
    MNT3ERR_NOENT = 2
    MNT3ERR_IO = 5
    MNT3ERR_ACCES = 13
    MNT3ERR_NOTDIR = 20
    MNT3ERR_INVAL = 22
    MNT3ERR_NAMETOOLONG = 63
    MNT3ERR_NOTSUPP = 10004
    MNT3ERR_SERVERFAULT = 10006


fhandle = FixedOpaque(FHSIZE)
fhandle3 = Opaque(FHSIZE3)
dirpath = String(MNTPATHLEN)
name = String(MNTNAMLEN)


class fhstatus(Union, switch=UInt32):
    """Version 1/2 MNT result: status 0 carries the handle; any other status is
    a UNIX errno (the values mountstat3 shares with errno)."""
    arms = {0: fhandle}
    default = Void


# RFC 1813 leaves auth_flavors<> unbounded; real servers send one to three.
# The bound only protects a client decoding a hostile reply.
MAX_AUTH_FLAVORS = 64


class mountres3_ok(Struct):
    fhandle: fhandle3
    auth_flavors: Array(Int32, MAX_AUTH_FLAVORS)


class mountres3(Union, switch=Enum(mountstat3)):
    arms = {mountstat3.MNT3_OK: mountres3_ok}
    default = Void


class mountbody(Struct):
    """One DUMP entry; ml_next is the LinkedList chain."""
    ml_hostname: name
    ml_directory: dirpath


mountlist = LinkedList(mountbody)

groups = LinkedList(name)
"""groupnode chain: the clients an export is offered to; empty means everyone."""


class exportnode(Struct):
    """One EXPORT entry; ex_next is the LinkedList chain."""
    ex_dir: dirpath
    ex_groups: groups


exports = LinkedList(exportnode)


__all__ = [
    "MOUNT_PROGRAM", "MOUNTVERS", "MOUNTVERS_POSIX", "MOUNT_V3", "MNTPATHLEN", "MNTNAMLEN",
    "FHSIZE", "FHSIZE3", "MOUNTPROC", "MOUNTPROC3", "mountstat3", "fhandle", "fhandle3",
    "dirpath", "name", "fhstatus", "mountres3_ok", "mountres3", "mountbody", "mountlist",
    "groups", "exportnode", "exports", "MAX_AUTH_FLAVORS",
]
