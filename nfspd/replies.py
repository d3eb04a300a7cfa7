"""NFS replies built before the data exists, for an iod to complete and send.

A forwarded READ carries the reply's head (RPC header, status, attributes,
count, eof, the data's opaque length); the iod appends the data and its XDR
padding. A forwarded WRITE carries the whole reply. A forwarded reply is byte
for byte the one the metaserver would have sent itself
(tests/test_iodpath_replies.py compares them with the codec's encoding); the
NFSv3 READ head, built for every forwarded READ, is one struct.pack.
"""

import struct

from common import nfs2, nfs3, rpc
from common.xdr import Packer

_OK3 = 0
_OK2 = 0
_NS = 1_000_000_000
_U32 = 0xFFFFFFFF

# The 24-byte RPC SUCCESS head is the xid and a constant tail.
_RPC_TAIL = rpc.success_head(0)[4:]
# xid, RPC tail | NFS3_OK, post_op_attr TRUE | fattr3 (type mode nlink uid gid,
# size used, rdev, fsid fileid, 3 x (seconds, nseconds)) | count, eof, opaque length
_READ3_HEAD = struct.Struct(">I20s II IIIII QQ II QQ IIIIII III")


_U32P = struct.Struct(">I").pack
_PRE_OP = struct.Struct(">I Q IIII")          # TRUE, wcc_attr
_POST_OP = struct.Struct(">I IIIII QQ II QQ IIIIII")   # TRUE, fattr3
_WRITE3_TAIL = struct.Struct(">II8s")         # count, committed, verf
_FALSE = _U32P(0)


def encode(xid, res_type, res):
    """A complete RPC SUCCESS reply carrying ``res`` (of XDR type ``res_type``)."""
    if res_type is nfs3.WRITE3res and res.disc == _OK3:
        # Every forwarded WRITE's reply: struct.pack rather than the codec's
        # walk of a dozen nested types. Anything odd goes the codec's way,
        # which says what is wrong.
        try:
            return _write3_ok(xid, res.body)
        except (struct.error, AttributeError, TypeError, ValueError):
            pass
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    res_type.pack(p, res)
    return p.get_buffer()


def _write3_ok(xid, ok):
    wcc, verf = ok.file_wcc, ok.verf
    if type(verf) is not bytes or len(verf) != 8:
        raise ValueError("verf")
    pre, post = wcc.before, wcc.after
    if pre is None:
        before = _FALSE
    else:
        mt, ct = pre.mtime, pre.ctime
        before = _PRE_OP.pack(1, pre.size, mt.seconds, mt.nseconds, ct.seconds, ct.nseconds)
    if post is None:
        after = _FALSE
    else:
        rdev, at, mt, ct = post.rdev, post.atime, post.mtime, post.ctime
        after = _POST_OP.pack(
            1, post.type, post.mode, post.nlink, post.uid, post.gid, post.size, post.used,
            rdev.specdata1, rdev.specdata2, post.fsid, post.fileid,
            at.seconds, at.nseconds, mt.seconds, mt.nseconds, ct.seconds, ct.nseconds)
    return b"".join((_U32P(xid), _RPC_TAIL, _U32P(_OK3), before, after,
                     _WRITE3_TAIL.pack(ok.count, ok.committed, verf)))


def read3_head(xid, attrs, count, eof):
    """READ3res NFS3_OK up to the data's length word; ``attrs`` a fattr3."""
    rdev, at, mt, ct = attrs.rdev, attrs.atime, attrs.mtime, attrs.ctime
    return _READ3_HEAD.pack(
        xid, _RPC_TAIL, _OK3, 1,
        attrs.type, attrs.mode, attrs.nlink, attrs.uid, attrs.gid, attrs.size, attrs.used,
        rdev.specdata1, rdev.specdata2, attrs.fsid, attrs.fileid,
        at.seconds, at.nseconds, mt.seconds, mt.nseconds, ct.seconds, ct.nseconds,
        count, 1 if eof else 0, count)


def read3_head_of(xid, a, count, eof):
    """read3_head from a metafs.Attr, without building the fattr3 first
    (the conversion of nfspd/nfs3.py's fattr: times wrap at 32 bits)."""
    at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
    return _READ3_HEAD.pack(
        xid, _RPC_TAIL, _OK3, 1,
        a.type, a.mode & 0o7777, a.nlink, a.uid, a.gid, a.size, a.used,
        a.rdev_major, a.rdev_minor, a.fsid, a.fileid,
        (at // _NS) & _U32, at % _NS, (mt // _NS) & _U32, mt % _NS, (ct // _NS) & _U32, ct % _NS,
        count, 1 if eof else 0, count)


def read2_head(xid, attrs, count):
    """readres NFS_OK up to the data's length word; ``attrs`` a v2 fattr."""
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    p.pack_uint(_OK2)
    nfs2.fattr.pack(p, attrs)
    p.pack_uint(count)
    return p.get_buffer()


def padding(count):
    return bytes(-count % 4)
