"""Pre-encoded READ heads: head + data + padding (what the iod sends) is the
very reply the metaserver would send itself."""

from hypothesis import given
from hypothesis import strategies as st

from common import nfs2, nfs3, rpc
from common.xdr import Unpacker
from nfspd import metafs, replies
from nfspd import nfs2 as service2
from nfspd import nfs3 as service3

ATTR = metafs.Attr(type=metafs.FileType.REG, mode=0o640, nlink=2, uid=1000, gid=100,
                   size=5 << 30, used=5 << 30, rdev_major=0, rdev_minor=0, fsid=77,
                   fileid=123456789, atime_ns=1_700_000_000_123_456_789,
                   mtime_ns=1_700_000_001_000_000_000, ctime_ns=1_700_000_002_000_000_001)


@given(st.binary(max_size=300), st.booleans(), st.integers(0, 0xFFFFFFFF))
def test_read3_head_plus_data_is_the_full_reply(data, eof, xid):
    attrs = service3.fattr(ATTR)
    head = replies.read3_head(xid, attrs, len(data), eof)
    full = replies.encode(xid, nfs3.READ3res,
                          nfs3.READ3res(nfs3.nfsstat3.NFS3_OK,
                                        nfs3.READ3resok(attrs, len(data), eof, data)))
    assert head + data + replies.padding(len(data)) == full
    reply = rpc.decode_reply(full)
    res = nfs3.READ3res.unpack(Unpacker(reply.body))
    assert reply.xid == xid and res.body.data == data and res.body.eof == eof


@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_read2_head_plus_data_is_the_full_reply(data, xid):
    attrs = service2.fattr(ATTR)
    head = replies.read2_head(xid, attrs, len(data))
    full = replies.encode(xid, nfs2.readres,
                          nfs2.readres(nfs2.nfsstat.NFS_OK, nfs2.readokres(attrs, data)))
    assert head + data + replies.padding(len(data)) == full
