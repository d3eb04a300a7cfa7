"""Between MetaFS values and the RFC 1813 types the NFSv3 procedures carry:
attributes (fattr3, wcc_data, sattr3), times and statuses.

The wire encoding itself is common/nfs3.py's, including the one-struct.pack
fattr3 encoder (fattr3_bytes) the hot replies use instead of fattr().
"""

import struct

from common.nfs3 import (fattr3, fattr3_bytes, ftype3, nfsstat3, nfstime3, specdata3, time_how,
                         wcc_attr, wcc_data)
from nfspd.fs.types import SET_TO_SERVER_TIME, FileType, FsError, SetAttr

OK = nfsstat3.NFS3_OK

_NS = 1_000_000_000
_U32_MAX = 0xFFFFFFFF
_new = object.__new__  # XDR structs have __slots__; skips the generic __init__ on hot paths
_FTYPE3 = {int(t): ftype3(int(t)) for t in FileType}


def time3(ns):
    """nfstime3 seconds are unsigned 32 bits: times outside 1970..2106 wrap, as
    Linux's nfsd sends them (rather than failing the whole reply)."""
    s, n = divmod(ns, _NS)
    t = _new(nfstime3)
    t.seconds = s & _U32_MAX
    t.nseconds = n
    return t


def time_ns(t):
    if t.nseconds >= _NS:
        raise FsError(nfsstat3.NFS3ERR_INVAL, "nseconds out of range")
    return t.seconds * _NS + t.nseconds


def fattr(a):
    """Attr -> fattr3 (called for nearly every reply, hence by hand)."""
    f = _new(fattr3)
    f.type = _FTYPE3[a.type]
    f.mode = a.mode & 0o7777
    f.nlink = a.nlink
    f.uid = a.uid
    f.gid = a.gid
    f.size = a.size
    f.used = a.used
    rdev = f.rdev = _new(specdata3)
    rdev.specdata1 = a.rdev_major
    rdev.specdata2 = a.rdev_minor
    f.fsid = a.fsid
    f.fileid = a.fileid
    f.atime = time3(a.atime_ns)
    f.mtime = time3(a.mtime_ns)
    f.ctime = time3(a.ctime_ns)
    return f


def post_op(a):
    return None if a is None else fattr(a)


def wcc(w):
    """Wcc -> wcc_data."""
    pre = w.pre
    before = None if pre is None else wcc_attr(pre.size, time3(pre.mtime_ns), time3(pre.ctime_ns))
    return wcc_data(before, post_op(w.post))


# A present wcc_attr with its value-follows word: size, mtime, ctime.
_wcc_attr_bytes = struct.Struct(">IQIIII").pack
_FALSE = b"\0\0\0\0"
_TRUE = b"\0\0\0\1"


def wcc_bytes(w):
    """Wcc -> the XDR of its wcc_data, what packing wcc(w) gives, straight
    from the values: every namespace change's reply carries one or two."""
    pre, post = w.pre, w.post
    if pre is None:
        head = _FALSE
    else:
        mt, ct = pre.mtime_ns, pre.ctime_ns
        head = _wcc_attr_bytes(1, pre.size, (mt // _NS) & _U32_MAX, mt % _NS,
                               (ct // _NS) & _U32_MAX, ct % _NS)
    return head + (_FALSE if post is None else _TRUE + fattr3_bytes(post))


def _set_time(how):
    if how.disc == time_how.SET_TO_CLIENT_TIME:
        return time_ns(how.body)
    if how.disc == time_how.SET_TO_SERVER_TIME:
        return SET_TO_SERVER_TIME
    return None


def to_setattr(s):
    """sattr3 -> SetAttr. File type bits in a mode are ignored, as the
    mode3 of an existing object cannot change its type."""
    return SetAttr(mode=None if s.mode is None else s.mode & 0o7777, uid=s.uid, gid=s.gid,
                   size=s.size, atime=_set_time(s.atime), mtime=_set_time(s.mtime))


def status_of(e):
    """The nfsstat3 of an FsError. One claiming success would select the resok
    arm for a resfail body."""
    return e.status if e.status != OK else nfsstat3.NFS3ERR_SERVERFAULT
