"""NFS replies built before the data exists, for an iod to complete and send.

A forwarded READ carries the reply's head (RPC header, status, attributes,
count, eof, the data's opaque length); the iod appends the data and its XDR
padding. A forwarded WRITE carries the whole reply. Built with the same codec
types as every other reply, so a forwarded reply is byte for byte the one the
metaserver would have sent itself.
"""

from common import nfs2, nfs3, rpc
from common.xdr import Packer

_OK3 = 0
_OK2 = 0


def encode(xid, res_type, res):
    """A complete RPC SUCCESS reply carrying ``res`` (of XDR type ``res_type``)."""
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    res_type.pack(p, res)
    return p.get_buffer()


def read3_head(xid, attrs, count, eof):
    """READ3res NFS3_OK up to the data's length word; ``attrs`` a fattr3."""
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    p.pack_uint(_OK3)
    nfs3.post_op_attr.pack(p, attrs)
    p.pack_uint(count)
    p.pack_bool(eof)
    p.pack_uint(count)
    return p.get_buffer()


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
