"""NFS replies built before the data exists, for an iod to complete and send.

A forwarded READ carries the reply's head (RPC header, status, attributes,
count, eof, the data's opaque length); the iod appends the data and its XDR
padding. A forwarded WRITE carries the whole reply. A forwarded reply is byte
for byte the one the metaserver would have sent itself
(tests/test_iodpath_replies.py compares them with the codec's encoding); the
NFSv3 READ head and WRITE reply, built for every forwarded call, are made
straight from MetaFS's values with a few struct.packs, rather than building
the RFC types and walking them with the codec.
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
_U32P = struct.Struct(">I").pack
_READ3_OK = struct.Struct(">I20s II")         # xid, RPC tail, NFS3_OK, post_op_attr TRUE
_READ3_TAIL = struct.Struct(">III")           # count, eof, the data's opaque length
_WRITE3_HEAD = struct.Struct(">I20s I")       # xid, RPC tail, NFS3_OK
_PRE_OP = struct.Struct(">I Q IIII")          # TRUE, wcc_attr
_WRITE3_TAIL = struct.Struct(">II8s")         # count, committed, verf
_TRUE = _U32P(1)
_FALSE = _U32P(0)


def encode(xid, res_type, res):
    """A complete RPC SUCCESS reply carrying ``res`` (of XDR type ``res_type``)."""
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    res_type.pack(p, res)
    return p.get_buffer()


def write3_ok(xid, wcc, count, committed, verf):
    """The WRITE3res NFS3_OK reply, from a Wcc (nfspd/fs/types.py): what encoding
    WRITE3resok(wcc_data of it, count, committed, verf) gives."""
    if count > _U32 or type(verf) is not bytes or len(verf) != 8:
        raise ValueError(f"WRITE3resok: count {count}, verf {verf!r}")
    pre, post = wcc.pre, wcc.post
    if pre is None:
        before = _FALSE
    else:
        mt, ct = pre.mtime_ns, pre.ctime_ns
        before = _PRE_OP.pack(1, pre.size, (mt // _NS) & _U32, mt % _NS,
                              (ct // _NS) & _U32, ct % _NS)
    after = _FALSE if post is None else _TRUE + nfs3.fattr3_bytes(post)
    return b"".join((_WRITE3_HEAD.pack(xid, _RPC_TAIL, _OK3), before, after,
                     _WRITE3_TAIL.pack(count, committed, verf)))


def read3_head(xid, attr, count, eof):
    """READ3res NFS3_OK up to the data's length word, from an Attr (nfspd/fs/types.py): what
    encoding READ3resok(the fattr3 of it, count, eof, data) gives, up to the data."""
    return b"".join((_READ3_OK.pack(xid, _RPC_TAIL, _OK3, 1), nfs3.fattr3_bytes(attr),
                     _READ3_TAIL.pack(count, 1 if eof else 0, count)))


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
