"""NFS version 2 (RFC 1094 section 2.3): constants and XDR types, sans-IO.

Names are the RFC's, so the code can be held against its text. Where the RFC
leaves a struct inside a union arm unnamed, the arm's name is used (diropok,
readdirok) or, where the arm has no name either, rpcgen's usual one
(readokres, statfsokres).

Additions the RFC does not have, kept because real peers send them:
nfsstat.NFSERR_INVAL (22; old servers sent it) and ftype NFSOCK/NFBAD/NFFIFO
(Sun's and Linux's extensions; a Linux server reports a FIFO as NFCHR with rdev
NFS2_FIFO_DEV instead, which is what nfspd does too).
"""

import enum

from common.xdr import (Bool, Enum, FixedOpaque, LinkedList, Opaque, String, Struct, UInt32,
                        Union, Void)

NFS_PROGRAM = 100003
NFS_VERSION = 2

NFS_MAXDATA = 8192
NFS_MAXPATHLEN = 1024
NFS_MAXNAMLEN = 255
NFS_COOKIESIZE = 4
NFS_FHSIZE = 32

# A sattr field holding this means "leave it alone" (RFC 1094 2.3.6).
SATTR_UNSET = 0xFFFFFFFF
# timeval.useconds of a sattr time meaning "the server's current time"
# (the Sun convention Linux's client and server follow).
SATTR_USECONDS_SERVER_TIME = 1000000
# rdev of an NFCHR that is really a FIFO (Sun convention, Linux's NFS2_FIFO_DEV).
NFS2_FIFO_DEV = 0xFFFFFFFF


class nfsstat(enum.IntEnum):
    """RFC 1094 calls this enum ``stat``."""
    NFS_OK = 0
    NFSERR_PERM = 1
    NFSERR_NOENT = 2
    NFSERR_IO = 5
    NFSERR_NXIO = 6
    NFSERR_ACCES = 13
    NFSERR_EXIST = 17
    NFSERR_NODEV = 19
    NFSERR_NOTDIR = 20
    NFSERR_ISDIR = 21
    NFSERR_INVAL = 22
    NFSERR_FBIG = 27
    NFSERR_NOSPC = 28
    NFSERR_ROFS = 30
    NFSERR_NAMETOOLONG = 63
    NFSERR_NOTEMPTY = 66
    NFSERR_DQUOT = 69
    NFSERR_STALE = 70
    NFSERR_WFLUSH = 99


stat = nfsstat  # the RFC's name


class ftype(enum.IntEnum):
    NFNON = 0
    NFREG = 1
    NFDIR = 2
    NFBLK = 3
    NFCHR = 4
    NFLNK = 5
    NFSOCK = 6
    NFBAD = 7
    NFFIFO = 8


class NFSPROC(enum.IntEnum):
    NULL = 0
    GETATTR = 1
    SETATTR = 2
    ROOT = 3
    LOOKUP = 4
    READLINK = 5
    READ = 6
    WRITECACHE = 7
    WRITE = 8
    CREATE = 9
    REMOVE = 10
    RENAME = 11
    LINK = 12
    SYMLINK = 13
    MKDIR = 14
    RMDIR = 15
    READDIR = 16
    STATFS = 17


nfsstat_t = Enum(nfsstat)
fhandle = FixedOpaque(NFS_FHSIZE)
nfscookie = FixedOpaque(NFS_COOKIESIZE)
filename = String(NFS_MAXNAMLEN)
path = String(NFS_MAXPATHLEN)
nfsdata = Opaque(NFS_MAXDATA)


class timeval(Struct):
    seconds: UInt32
    useconds: UInt32


class fattr(Struct):
    type: Enum(ftype)
    mode: UInt32
    nlink: UInt32
    uid: UInt32
    gid: UInt32
    size: UInt32
    blocksize: UInt32
    rdev: UInt32
    blocks: UInt32
    fsid: UInt32
    fileid: UInt32
    atime: timeval
    mtime: timeval
    ctime: timeval


class sattr(Struct):
    """SATTR_UNSET in a field (both halves of a timeval) leaves it unchanged."""
    mode: UInt32
    uid: UInt32
    gid: UInt32
    size: UInt32
    atime: timeval
    mtime: timeval


def sattr_unset():
    """A sattr that changes nothing; ``.replace(...)`` the fields to set."""
    none = timeval(SATTR_UNSET, SATTR_UNSET)
    return sattr(SATTR_UNSET, SATTR_UNSET, SATTR_UNSET, SATTR_UNSET, none, none)


class attrstat(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: fattr}
    default = Void


class sattrargs(Struct):
    file: fhandle
    attributes: sattr


class diropargs(Struct):
    dir: fhandle
    name: filename


class diropok(Struct):
    file: fhandle
    attributes: fattr


class diropres(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: diropok}
    default = Void


class readlinkres(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: path}
    default = Void


class readargs(Struct):
    file: fhandle
    offset: UInt32
    count: UInt32
    totalcount: UInt32  # unused (RFC 1094 2.2.7)


class readokres(Struct):
    attributes: fattr
    data: nfsdata


class readres(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: readokres}
    default = Void


class writeargs(Struct):
    file: fhandle
    beginoffset: UInt32  # unused (RFC 1094 2.2.9)
    offset: UInt32
    totalcount: UInt32  # unused
    data: nfsdata


class createargs(Struct):
    where: diropargs
    attributes: sattr


class renameargs(Struct):
    # "from" is a Python keyword; the RFC's names are from/to.
    from_: diropargs
    to: diropargs


class linkargs(Struct):
    from_: fhandle
    to: diropargs


class symlinkargs(Struct):
    from_: diropargs
    to: path
    attributes: sattr


class readdirargs(Struct):
    dir: fhandle
    cookie: nfscookie
    count: UInt32


class entry(Struct):
    """One READDIR entry; the RFC's ``entry *nextentry`` chain is the
    LinkedList in readdirok."""
    fileid: UInt32
    name: filename
    cookie: nfscookie


class readdirok(Struct):
    entries: LinkedList(entry)
    eof: Bool


class readdirres(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: readdirok}
    default = Void


class statfsokres(Struct):
    """The RFC's unnamed ``info`` arm of statfsres."""
    tsize: UInt32
    bsize: UInt32
    blocks: UInt32
    bfree: UInt32
    bavail: UInt32


class statfsres(Union, switch=nfsstat_t):
    arms = {nfsstat.NFS_OK: statfsokres}
    default = Void


# Procedure number -> (argument type, result type), RFC 1094 section 2.2.
PROCEDURE_TYPES = {
    NFSPROC.NULL: (Void, Void),
    NFSPROC.GETATTR: (fhandle, attrstat),
    NFSPROC.SETATTR: (sattrargs, attrstat),
    NFSPROC.ROOT: (Void, Void),
    NFSPROC.LOOKUP: (diropargs, diropres),
    NFSPROC.READLINK: (fhandle, readlinkres),
    NFSPROC.READ: (readargs, readres),
    NFSPROC.WRITECACHE: (Void, Void),
    NFSPROC.WRITE: (writeargs, attrstat),
    NFSPROC.CREATE: (createargs, diropres),
    NFSPROC.REMOVE: (diropargs, nfsstat_t),
    NFSPROC.RENAME: (renameargs, nfsstat_t),
    NFSPROC.LINK: (linkargs, nfsstat_t),
    NFSPROC.SYMLINK: (symlinkargs, nfsstat_t),
    NFSPROC.MKDIR: (createargs, diropres),
    NFSPROC.RMDIR: (diropargs, nfsstat_t),
    NFSPROC.READDIR: (readdirargs, readdirres),
    NFSPROC.STATFS: (fhandle, statfsres),
}
