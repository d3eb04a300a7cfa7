"""NFS version 3 (RFC 1813): constants and XDR types, sans-IO.

Names are the RFC's (sections 2.5 and 3.3), so each type can be held against
the text. Representation choices:

* ``nfs_fh3`` is the handle's bytes: the RFC wraps ``opaque data<64>`` in a
  one-field struct, which is the same on the wire.
* Bool-discriminated unions with a void FALSE arm (post_op_attr, pre_op_attr,
  post_op_fh3, set_mode3 ... set_size3, sattrguard3) are xdr.Optional: None
  or the value.
* ``entry *nextentry`` chains are xdr.LinkedList: a Python list of entries
  (entry3 / entryplus3 therefore have no ``nextentry`` field).
* RENAME3args' ``from`` is a Python keyword and is spelled ``from_``.
"""

import enum
import struct

from common.xdr import (
    Bool, Enum, FixedOpaque, Int64, LinkedList, Opaque, Optional, String, Struct, UInt32, UInt64,
    Union, Void, XdrError,
)

NFS_PROGRAM = 100003
NFS_V3 = 3

NFS3_FHSIZE = 64
NFS3_COOKIEVERFSIZE = 8
NFS3_CREATEVERFSIZE = 8
NFS3_WRITEVERFSIZE = 8

# The RFC leaves filename3/nfspath3 unbounded. Names longer than NAME_MAX still
# decode so that the service can answer NFS3ERR_NAMETOOLONG rather than
# GARBAGE_ARGS; the bound only keeps a hostile length from mattering.
FILENAME3_MAX = 4096
NFSPATH3_MAX = 4096

ACCESS3_READ = 0x0001
ACCESS3_LOOKUP = 0x0002
ACCESS3_MODIFY = 0x0004
ACCESS3_EXTEND = 0x0008
ACCESS3_DELETE = 0x0010
ACCESS3_EXECUTE = 0x0020

FSF3_LINK = 0x0001
FSF3_SYMLINK = 0x0002
FSF3_HOMOGENEOUS = 0x0008
FSF3_CANSETTIME = 0x0010


class NFSPROC3(enum.IntEnum):
    NULL = 0
    GETATTR = 1
    SETATTR = 2
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    CREATE = 8
    MKDIR = 9
    SYMLINK = 10
    MKNOD = 11
    REMOVE = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    READDIR = 16
    READDIRPLUS = 17
    FSSTAT = 18
    FSINFO = 19
    PATHCONF = 20
    COMMIT = 21


class nfsstat3(enum.IntEnum):
    NFS3_OK = 0
    NFS3ERR_PERM = 1
    NFS3ERR_NOENT = 2
    NFS3ERR_IO = 5
    NFS3ERR_NXIO = 6
    NFS3ERR_ACCES = 13
    NFS3ERR_EXIST = 17
    NFS3ERR_XDEV = 18
    NFS3ERR_NODEV = 19
    NFS3ERR_NOTDIR = 20
    NFS3ERR_ISDIR = 21
    NFS3ERR_INVAL = 22
    NFS3ERR_FBIG = 27
    NFS3ERR_NOSPC = 28
    NFS3ERR_ROFS = 30
    NFS3ERR_MLINK = 31
    NFS3ERR_NAMETOOLONG = 63
    NFS3ERR_NOTEMPTY = 66
    NFS3ERR_DQUOT = 69
    NFS3ERR_STALE = 70
    NFS3ERR_REMOTE = 71
    NFS3ERR_BADHANDLE = 10001
    NFS3ERR_NOT_SYNC = 10002
    NFS3ERR_BAD_COOKIE = 10003
    NFS3ERR_NOTSUPP = 10004
    NFS3ERR_TOOSMALL = 10005
    NFS3ERR_SERVERFAULT = 10006
    NFS3ERR_BADTYPE = 10007
    NFS3ERR_JUKEBOX = 10008


class ftype3(enum.IntEnum):
    NF3REG = 1
    NF3DIR = 2
    NF3BLK = 3
    NF3CHR = 4
    NF3LNK = 5
    NF3SOCK = 6
    NF3FIFO = 7


class time_how(enum.IntEnum):
    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


class stable_how(enum.IntEnum):
    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class createmode3(enum.IntEnum):
    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


# --- Basic data types (2.5) ----------------------------------------------

uint64 = UInt64
int64 = Int64
uint32 = UInt32
filename3 = String(FILENAME3_MAX)
nfspath3 = String(NFSPATH3_MAX)
fileid3 = UInt64
cookie3 = UInt64
cookieverf3 = FixedOpaque(NFS3_COOKIEVERFSIZE)
createverf3 = FixedOpaque(NFS3_CREATEVERFSIZE)
writeverf3 = FixedOpaque(NFS3_WRITEVERFSIZE)
uid3 = UInt32
gid3 = UInt32
size3 = UInt64
offset3 = UInt64
mode3 = UInt32
count3 = UInt32
nfs_fh3 = Opaque(NFS3_FHSIZE)


class specdata3(Struct):
    specdata1: UInt32
    specdata2: UInt32


class nfstime3(Struct):
    seconds: UInt32
    nseconds: UInt32


_ftype3_by_value = {m.value: m for m in ftype3}
# type mode nlink uid gid | size used | rdev.1 rdev.2 | fsid fileid | 3 x (sec, nsec):
# the one statement of fattr3's layout for the hand packers below.
_FATTR3 = "IIIII QQ II QQ IIIIII"
_fattr3_wire = struct.Struct(">" + _FATTR3)
assert _fattr3_wire.size == 84
fattr3_wire = _fattr3_wire
"""fattr3 as one struct.Struct, fields in wire order (the nested specdata3 and
nfstime3 flattened): for servers encoding attributes from plain values."""
_fattr3_pack = _fattr3_wire.pack
_NS = 1_000_000_000
_U32_MAX = 0xFFFFFFFF


def fattr3_bytes(a):
    """The XDR of the fattr3 of a server's attributes, straight from their
    values: ``a`` has type, mode, nlink, uid, gid, size, used, rdev_major,
    rdev_minor, fsid, fileid and atime_ns, mtime_ns, ctime_ns (nanoseconds
    since the epoch). The mode loses its file-type bits; times outside
    1970..2106 wrap at 32 bits, as Linux's nfsd sends them. What building the
    fattr3 and packing it gives (tests/test_nfs3_codec.py), in one
    struct.pack: GETATTR, LOOKUP and ACCESS replies and forwarded READ and WRITE
    replies are built with it."""
    at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
    return _fattr3_pack(a.type, a.mode & 0o7777, a.nlink, a.uid, a.gid, a.size, a.used,
                        a.rdev_major, a.rdev_minor, a.fsid, a.fileid,
                        (at // _NS) & _U32_MAX, at % _NS, (mt // _NS) & _U32_MAX, mt % _NS,
                        (ct // _NS) & _U32_MAX, ct % _NS)



# entryplus3 and entry3 packed by hand (READDIRPLUS sends hundreds a call).
_entry_head = struct.Struct(">IQI")  # value follows (of the list), fileid, name length
_entry_pad = (b"", b"\0\0\0", b"\0\0", b"\0")
_TRUE = b"\0\0\0\1"
_FALSE = b"\0\0\0\0"
_u64 = struct.Struct(">Q").pack


def entryplus3_bytes(fileid, name, cookie, a, fh):
    """The XDR of one entryplus3 of a dirlistplus3 (the value-follows word
    before it included), with the fattr3 of ``a`` (as fattr3_bytes takes it)
    and handle ``fh``, either None for none: what packing
    entryplus3(fileid, name, cookie, fattr, fh) in a LinkedList gives."""
    if a is not None and fh is not None:
        return entryplus3_values(fileid, name, cookie, fh, a.type, a.mode, a.nlink, a.uid, a.gid,
                                 a.size, a.used, a.rdev_major, a.rdev_minor, a.fsid, a.fileid,
                                 a.atime_ns, a.mtime_ns, a.ctime_ns)
    n = len(name)
    if n > FILENAME3_MAX or (fh is not None and len(fh) > NFS3_FHSIZE):
        raise XdrError("entryplus3: name or handle too long")
    return b"".join((
        _entry_head.pack(1, fileid, n), name, _entry_pad[n & 3], _u64(cookie),
        _FALSE if a is None else _TRUE + fattr3_bytes(a),
        _FALSE if fh is None else _TRUE + struct.pack(">I", len(fh)) + fh + _entry_pad[len(fh) & 3]))


def entryplus3_values(fileid, name, cookie, fh, ftype, mode, nlink, uid, gid, size, used,
                      rdev_major, rdev_minor, fsid, attr_fileid, atime_ns, mtime_ns, ctime_ns):
    """entryplus3_bytes of an entry with attributes and a handle, the
    attributes given as their values (as fattr3_bytes reads them from an
    object, ``attr_fileid`` its fileid): for a server that has them at hand
    without building an object per entry."""
    n = len(name)
    m = len(fh)
    if n > FILENAME3_MAX or m > NFS3_FHSIZE:
        raise XdrError("entryplus3: name or handle too long")
    key = (n + 3) >> 2 << 5 | (m + 3) >> 2  # their lengths in XDR words
    pack = _entryplus3_packs.get(key)
    if pack is None:
        pack = _entryplus3_packs[key] = _entryplus3_pack(n, m)
    asec, ansec = divmod(atime_ns, _NS)
    msec, mnsec = divmod(mtime_ns, _NS)
    csec, cnsec = divmod(ctime_ns, _NS)
    return pack(1, fileid, n, name, cookie, 1, ftype, mode & 0o7777, nlink, uid, gid, size, used,
                rdev_major, rdev_minor, fsid, attr_fileid, asec & _U32_MAX, ansec,
                msec & _U32_MAX, mnsec, csec & _U32_MAX, cnsec, 1, m, fh)


def _entryplus3_pack(n, m):
    # The whole entry in one pack, the name and the handle zero-padded by
    # their "s" fields: one struct per pair of lengths in words (at most
    # 64 x 17 of them).
    return struct.Struct(f">IQI{(n + 3) & ~3}sQI {_FATTR3} II{(m + 3) & ~3}s").pack


_entryplus3_packs = {}


def entry3_bytes(fileid, name, cookie):
    """The XDR of one entry3 of a dirlist3, value-follows word included."""
    n = len(name)
    if n > FILENAME3_MAX:
        raise XdrError("entry3: name too long")
    return _entry_head.pack(1, fileid, n) + name + _entry_pad[n & 3] + _u64(cookie)


def dirlist_end(eof):
    """What ends a dirlist3 or dirlistplus3: no more entries, then eof."""
    return _FALSE + (_TRUE if eof else _FALSE)

class fattr3(Struct):
    type: Enum(ftype3)
    mode: mode3
    nlink: UInt32
    uid: uid3
    gid: gid3
    size: size3
    used: size3
    rdev: specdata3
    fsid: UInt64
    fileid: fileid3
    atime: nfstime3
    mtime: nfstime3
    ctime: nfstime3

    # Every GETATTR, LOOKUP, READ and WRITE reply carries one or more fattr3,
    # so they are packed with one struct.Struct call instead of 18 field-wise
    # packs (about 5x faster; see tests/test_nfs3_codec.py).
    @classmethod
    def pack(cls, p, v):
        try:
            rdev, at, mt, ct = v.rdev, v.atime, v.mtime, v.ctime
            p.buf += _fattr3_wire.pack(
                v.type, v.mode, v.nlink, v.uid, v.gid, v.size, v.used,
                rdev.specdata1, rdev.specdata2, v.fsid, v.fileid,
                at.seconds, at.nseconds, mt.seconds, mt.nseconds, ct.seconds, ct.nseconds)
        except (struct.error, TypeError, AttributeError) as e:
            raise XdrError(f"fattr3: {e}") from None

    @classmethod
    def unpack(cls, u):
        (t, mode, nlink, uid, gid, size, used, r1, r2, fsid, fileid,
         a_s, a_ns, m_s, m_ns, c_s, c_ns) = _fattr3_wire.unpack_from(u.data, u._take(84))
        try:
            ftype = _ftype3_by_value[t]
        except KeyError:
            raise XdrError(f"ftype3: unknown value {t}") from None
        obj = cls.__new__(cls)
        obj.type, obj.mode, obj.nlink, obj.uid, obj.gid = ftype, mode, nlink, uid, gid
        obj.size, obj.used, obj.rdev = size, used, specdata3(r1, r2)
        obj.fsid, obj.fileid = fsid, fileid
        obj.atime = nfstime3(a_s, a_ns)
        obj.mtime = nfstime3(m_s, m_ns)
        obj.ctime = nfstime3(c_s, c_ns)
        return obj


post_op_attr = Optional(fattr3)


class wcc_attr(Struct):
    size: size3
    mtime: nfstime3
    ctime: nfstime3


pre_op_attr = Optional(wcc_attr)


class wcc_data(Struct):
    before: pre_op_attr
    after: post_op_attr


post_op_fh3 = Optional(nfs_fh3)

set_mode3 = Optional(mode3)
set_uid3 = Optional(uid3)
set_gid3 = Optional(gid3)
set_size3 = Optional(size3)


class set_atime(Union, switch=Enum(time_how)):
    arms = {time_how.SET_TO_CLIENT_TIME: nfstime3}
    default = Void


class set_mtime(Union, switch=Enum(time_how)):
    arms = {time_how.SET_TO_CLIENT_TIME: nfstime3}
    default = Void


class sattr3(Struct):
    mode: set_mode3
    uid: set_uid3
    gid: set_gid3
    size: set_size3
    atime: set_atime
    mtime: set_mtime

    @classmethod
    def unchanged(cls):
        """A sattr3 that sets nothing."""
        return cls(None, None, None, None,
                   set_atime(time_how.DONT_CHANGE), set_mtime(time_how.DONT_CHANGE))


class diropargs3(Struct):
    dir: nfs_fh3
    name: filename3


def _res(name, resok, resfail):
    """``union <name> switch (nfsstat3 status) { case NFS3_OK: resok; default: resfail; }``"""
    return type(name, (Union,), {
        "arms": {nfsstat3.NFS3_OK: resok}, "default": resfail, "__module__": __name__,
        "__qualname__": name, "__slots__": ()},
        switch=Enum(nfsstat3))


# --- GETATTR (3.3.1) -----------------------------------------------------

class GETATTR3args(Struct):
    object: nfs_fh3


class GETATTR3resok(Struct):
    obj_attributes: fattr3


GETATTR3res = _res("GETATTR3res", GETATTR3resok, Void)


# --- SETATTR (3.3.2) -----------------------------------------------------

sattrguard3 = Optional(nfstime3)  # switch (bool check) { TRUE: nfstime3 obj_ctime }


class SETATTR3args(Struct):
    object: nfs_fh3
    new_attributes: sattr3
    guard: sattrguard3


class SETATTR3resok(Struct):
    obj_wcc: wcc_data


class SETATTR3resfail(Struct):
    obj_wcc: wcc_data


SETATTR3res = _res("SETATTR3res", SETATTR3resok, SETATTR3resfail)


# --- LOOKUP (3.3.3) ------------------------------------------------------

class LOOKUP3args(Struct):
    what: diropargs3


class LOOKUP3resok(Struct):
    object: nfs_fh3
    obj_attributes: post_op_attr
    dir_attributes: post_op_attr


class LOOKUP3resfail(Struct):
    dir_attributes: post_op_attr


LOOKUP3res = _res("LOOKUP3res", LOOKUP3resok, LOOKUP3resfail)


# --- ACCESS (3.3.4) ------------------------------------------------------

class ACCESS3args(Struct):
    object: nfs_fh3
    access: UInt32


class ACCESS3resok(Struct):
    obj_attributes: post_op_attr
    access: UInt32


class ACCESS3resfail(Struct):
    obj_attributes: post_op_attr


ACCESS3res = _res("ACCESS3res", ACCESS3resok, ACCESS3resfail)


# --- READLINK (3.3.5) ----------------------------------------------------

class READLINK3args(Struct):
    symlink: nfs_fh3


class READLINK3resok(Struct):
    symlink_attributes: post_op_attr
    data: nfspath3


class READLINK3resfail(Struct):
    symlink_attributes: post_op_attr


READLINK3res = _res("READLINK3res", READLINK3resok, READLINK3resfail)


# --- READ (3.3.6) --------------------------------------------------------

class READ3args(Struct):
    file: nfs_fh3
    offset: offset3
    count: count3


class READ3resok(Struct):
    file_attributes: post_op_attr
    count: count3
    eof: Bool
    data: Opaque()


class READ3resfail(Struct):
    file_attributes: post_op_attr


READ3res = _res("READ3res", READ3resok, READ3resfail)


# --- WRITE (3.3.7) -------------------------------------------------------

class WRITE3args(Struct):
    file: nfs_fh3
    offset: offset3
    count: count3
    stable: Enum(stable_how)
    data: Opaque()  # bounded by the received record, which the transport bounds


class WRITE3resok(Struct):
    file_wcc: wcc_data
    count: count3
    committed: Enum(stable_how)
    verf: writeverf3


class WRITE3resfail(Struct):
    file_wcc: wcc_data


WRITE3res = _res("WRITE3res", WRITE3resok, WRITE3resfail)


# --- CREATE (3.3.8) ------------------------------------------------------

class createhow3(Union, switch=Enum(createmode3)):
    arms = {
        createmode3.UNCHECKED: sattr3,
        createmode3.GUARDED: sattr3,
        createmode3.EXCLUSIVE: createverf3,
    }


class CREATE3args(Struct):
    where: diropargs3
    how: createhow3


class CREATE3resok(Struct):
    obj: post_op_fh3
    obj_attributes: post_op_attr
    dir_wcc: wcc_data


class CREATE3resfail(Struct):
    dir_wcc: wcc_data


CREATE3res = _res("CREATE3res", CREATE3resok, CREATE3resfail)


# --- MKDIR (3.3.9) -------------------------------------------------------

class MKDIR3args(Struct):
    where: diropargs3
    attributes: sattr3


class MKDIR3resok(Struct):
    obj: post_op_fh3
    obj_attributes: post_op_attr
    dir_wcc: wcc_data


class MKDIR3resfail(Struct):
    dir_wcc: wcc_data


MKDIR3res = _res("MKDIR3res", MKDIR3resok, MKDIR3resfail)


# --- SYMLINK (3.3.10) ----------------------------------------------------

class symlinkdata3(Struct):
    symlink_attributes: sattr3
    symlink_data: nfspath3


class SYMLINK3args(Struct):
    where: diropargs3
    symlink: symlinkdata3


class SYMLINK3resok(Struct):
    obj: post_op_fh3
    obj_attributes: post_op_attr
    dir_wcc: wcc_data


class SYMLINK3resfail(Struct):
    dir_wcc: wcc_data


SYMLINK3res = _res("SYMLINK3res", SYMLINK3resok, SYMLINK3resfail)


# --- MKNOD (3.3.11) ------------------------------------------------------

class devicedata3(Struct):
    dev_attributes: sattr3
    spec: specdata3


class mknoddata3(Union, switch=Enum(ftype3)):
    arms = {
        ftype3.NF3CHR: devicedata3,
        ftype3.NF3BLK: devicedata3,
        ftype3.NF3SOCK: sattr3,
        ftype3.NF3FIFO: sattr3,
    }
    default = Void


class MKNOD3args(Struct):
    where: diropargs3
    what: mknoddata3


class MKNOD3resok(Struct):
    obj: post_op_fh3
    obj_attributes: post_op_attr
    dir_wcc: wcc_data


class MKNOD3resfail(Struct):
    dir_wcc: wcc_data


MKNOD3res = _res("MKNOD3res", MKNOD3resok, MKNOD3resfail)


# --- REMOVE (3.3.12) -----------------------------------------------------

class REMOVE3args(Struct):
    object: diropargs3


class REMOVE3resok(Struct):
    dir_wcc: wcc_data


class REMOVE3resfail(Struct):
    dir_wcc: wcc_data


REMOVE3res = _res("REMOVE3res", REMOVE3resok, REMOVE3resfail)


# --- RMDIR (3.3.13) ------------------------------------------------------

class RMDIR3args(Struct):
    object: diropargs3


class RMDIR3resok(Struct):
    dir_wcc: wcc_data


class RMDIR3resfail(Struct):
    dir_wcc: wcc_data


RMDIR3res = _res("RMDIR3res", RMDIR3resok, RMDIR3resfail)


# --- RENAME (3.3.14) -----------------------------------------------------

class RENAME3args(Struct):
    from_: diropargs3  # RFC: "from"
    to: diropargs3


class RENAME3resok(Struct):
    fromdir_wcc: wcc_data
    todir_wcc: wcc_data


class RENAME3resfail(Struct):
    fromdir_wcc: wcc_data
    todir_wcc: wcc_data


RENAME3res = _res("RENAME3res", RENAME3resok, RENAME3resfail)


# --- LINK (3.3.15) -------------------------------------------------------

class LINK3args(Struct):
    file: nfs_fh3
    link: diropargs3


class LINK3resok(Struct):
    file_attributes: post_op_attr
    linkdir_wcc: wcc_data


class LINK3resfail(Struct):
    file_attributes: post_op_attr
    linkdir_wcc: wcc_data


LINK3res = _res("LINK3res", LINK3resok, LINK3resfail)


# --- READDIR (3.3.16) ----------------------------------------------------

class READDIR3args(Struct):
    dir: nfs_fh3
    cookie: cookie3
    cookieverf: cookieverf3
    count: count3


class entry3(Struct):
    fileid: fileid3
    name: filename3
    cookie: cookie3


class dirlist3(Struct):
    entries: LinkedList(entry3)
    eof: Bool


class READDIR3resok(Struct):
    dir_attributes: post_op_attr
    cookieverf: cookieverf3
    reply: dirlist3


class READDIR3resfail(Struct):
    dir_attributes: post_op_attr


READDIR3res = _res("READDIR3res", READDIR3resok, READDIR3resfail)


# --- READDIRPLUS (3.3.17) ------------------------------------------------

class READDIRPLUS3args(Struct):
    dir: nfs_fh3
    cookie: cookie3
    cookieverf: cookieverf3
    dircount: count3
    maxcount: count3


class entryplus3(Struct):
    fileid: fileid3
    name: filename3
    cookie: cookie3
    name_attributes: post_op_attr
    name_handle: post_op_fh3


class dirlistplus3(Struct):
    entries: LinkedList(entryplus3)
    eof: Bool


class READDIRPLUS3resok(Struct):
    dir_attributes: post_op_attr
    cookieverf: cookieverf3
    reply: dirlistplus3


class READDIRPLUS3resfail(Struct):
    dir_attributes: post_op_attr


READDIRPLUS3res = _res("READDIRPLUS3res", READDIRPLUS3resok, READDIRPLUS3resfail)


# --- FSSTAT (3.3.18) -----------------------------------------------------

class FSSTAT3args(Struct):
    fsroot: nfs_fh3


class FSSTAT3resok(Struct):
    obj_attributes: post_op_attr
    tbytes: size3
    fbytes: size3
    abytes: size3
    tfiles: size3
    ffiles: size3
    afiles: size3
    invarsec: UInt32


class FSSTAT3resfail(Struct):
    obj_attributes: post_op_attr


FSSTAT3res = _res("FSSTAT3res", FSSTAT3resok, FSSTAT3resfail)


# --- FSINFO (3.3.19) -----------------------------------------------------

class FSINFO3args(Struct):
    fsroot: nfs_fh3


class FSINFO3resok(Struct):
    obj_attributes: post_op_attr
    rtmax: UInt32
    rtpref: UInt32
    rtmult: UInt32
    wtmax: UInt32
    wtpref: UInt32
    wtmult: UInt32
    dtpref: UInt32
    maxfilesize: size3
    time_delta: nfstime3
    properties: UInt32


class FSINFO3resfail(Struct):
    obj_attributes: post_op_attr


FSINFO3res = _res("FSINFO3res", FSINFO3resok, FSINFO3resfail)


# --- PATHCONF (3.3.20) ---------------------------------------------------

class PATHCONF3args(Struct):
    object: nfs_fh3


class PATHCONF3resok(Struct):
    obj_attributes: post_op_attr
    linkmax: UInt32
    name_max: UInt32
    no_trunc: Bool
    chown_restricted: Bool
    case_insensitive: Bool
    case_preserving: Bool


class PATHCONF3resfail(Struct):
    obj_attributes: post_op_attr


PATHCONF3res = _res("PATHCONF3res", PATHCONF3resok, PATHCONF3resfail)


# --- COMMIT (3.3.21) -----------------------------------------------------

class COMMIT3args(Struct):
    file: nfs_fh3
    offset: offset3
    count: count3


class COMMIT3resok(Struct):
    file_wcc: wcc_data
    verf: writeverf3


class COMMIT3resfail(Struct):
    file_wcc: wcc_data


COMMIT3res = _res("COMMIT3res", COMMIT3resok, COMMIT3resfail)


# Procedure number -> (name, args type, result type): the whole of section 3.
PROCEDURES = {
    NFSPROC3.NULL: ("NULL", Void, Void),
    NFSPROC3.GETATTR: ("GETATTR", GETATTR3args, GETATTR3res),
    NFSPROC3.SETATTR: ("SETATTR", SETATTR3args, SETATTR3res),
    NFSPROC3.LOOKUP: ("LOOKUP", LOOKUP3args, LOOKUP3res),
    NFSPROC3.ACCESS: ("ACCESS", ACCESS3args, ACCESS3res),
    NFSPROC3.READLINK: ("READLINK", READLINK3args, READLINK3res),
    NFSPROC3.READ: ("READ", READ3args, READ3res),
    NFSPROC3.WRITE: ("WRITE", WRITE3args, WRITE3res),
    NFSPROC3.CREATE: ("CREATE", CREATE3args, CREATE3res),
    NFSPROC3.MKDIR: ("MKDIR", MKDIR3args, MKDIR3res),
    NFSPROC3.SYMLINK: ("SYMLINK", SYMLINK3args, SYMLINK3res),
    NFSPROC3.MKNOD: ("MKNOD", MKNOD3args, MKNOD3res),
    NFSPROC3.REMOVE: ("REMOVE", REMOVE3args, REMOVE3res),
    NFSPROC3.RMDIR: ("RMDIR", RMDIR3args, RMDIR3res),
    NFSPROC3.RENAME: ("RENAME", RENAME3args, RENAME3res),
    NFSPROC3.LINK: ("LINK", LINK3args, LINK3res),
    NFSPROC3.READDIR: ("READDIR", READDIR3args, READDIR3res),
    NFSPROC3.READDIRPLUS: ("READDIRPLUS", READDIRPLUS3args, READDIRPLUS3res),
    NFSPROC3.FSSTAT: ("FSSTAT", FSSTAT3args, FSSTAT3res),
    NFSPROC3.FSINFO: ("FSINFO", FSINFO3args, FSINFO3res),
    NFSPROC3.PATHCONF: ("PATHCONF", PATHCONF3args, PATHCONF3res),
    NFSPROC3.COMMIT: ("COMMIT", COMMIT3args, COMMIT3res),
}
