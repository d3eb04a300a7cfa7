"""Pre-encoded READ heads: head + data + padding (what the iod sends) is the
very reply the metaserver would send itself; the WRITE reply a forwarded
WRITE carries is the codec's, byte for byte."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import nfs2, nfs3, rpc
from common.xdr import Packer, Unpacker, XdrError
from nfspd import replies
from nfspd.fs.types import Attr, FileType, Wcc, WccAttr
from nfspd import nfs2attrs, nfs3attrs

FIELDS = dict(type=FileType.REG, mode=0o640, nlink=2, uid=1000, gid=100,
              size=5 << 30, used=5 << 30, rdev_major=0, rdev_minor=0, fsid=77,
              fileid=123456789, atime_ns=1_700_000_000_123_456_789,
              mtime_ns=1_700_000_001_000_000_000, ctime_ns=1_700_000_002_000_000_001)
ATTR = Attr(**FIELDS)


u32 = st.integers(0, 0xFFFFFFFF)
times = st.integers(0, (1 << 34) * 1_000_000_000)   # past 2106: nfstime3 seconds wrap


@given(st.binary(max_size=300), st.booleans(), u32, times, st.integers(0, 1 << 62))
def test_read3_head_plus_data_is_the_full_reply(data, eof, xid, mtime, size):
    attr = Attr(**{**FIELDS, "mtime_ns": mtime, "size": size})
    attrs = nfs3attrs.fattr(attr)
    head = replies.read3_head(xid, attr, len(data), eof)
    full = replies.encode(xid, nfs3.READ3res,
                          nfs3.READ3res(nfs3.nfsstat3.NFS3_OK,
                                        nfs3.READ3resok(attrs, len(data), eof, data)))
    assert head + data + replies.padding(len(data)) == full
    reply = rpc.decode_reply(full)
    res = nfs3.READ3res.unpack(Unpacker(reply.body))
    assert reply.xid == xid and res.body.data == data and res.body.eof == eof


@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_read2_head_plus_data_is_the_full_reply(data, xid):
    attrs = nfs2attrs.fattr(ATTR)
    head = replies.read2_head(xid, attrs, len(data))
    full = replies.encode(xid, nfs2.readres,
                          nfs2.readres(nfs2.nfsstat.NFS_OK, nfs2.readokres(attrs, data)))
    assert head + data + replies.padding(len(data)) == full




def _codec(xid, res_type, res):
    p = Packer()
    p.pack_raw(rpc.success_head(xid))
    res_type.pack(p, res)
    return p.get_buffer()


@given(u32, st.booleans(), st.booleans(), st.integers(0, 1 << 62), u32,
       st.sampled_from(list(nfs3.stable_how)), st.binary(min_size=8, max_size=8), times, times)
def test_write3_replies_are_the_codecs(xid, with_pre, with_post, size, count, how, verf, mt, ct):
    pre = WccAttr(size, mt, ct)
    post = Attr(**{**FIELDS, "mtime_ns": mt, "ctime_ns": ct}) if with_post else None
    w = Wcc(pre if with_pre else None, post)
    ok = nfs3.WRITE3res(nfs3.nfsstat3.NFS3_OK,
                        nfs3.WRITE3resok(nfs3attrs.wcc(w), count, how, verf))
    assert replies.write3_ok(xid, w, count, how, verf) == _codec(xid, nfs3.WRITE3res, ok)
    assert replies.encode(xid, nfs3.WRITE3res, ok) == _codec(xid, nfs3.WRITE3res, ok)
    fail = nfs3.WRITE3res(nfs3.nfsstat3.NFS3ERR_NOSPC, nfs3.WRITE3resfail(nfs3attrs.wcc(w)))
    assert replies.encode(xid, nfs3.WRITE3res, fail) == _codec(xid, nfs3.WRITE3res, fail)


def test_a_write3_reply_the_codec_refuses_is_refused():
    ok = nfs3.WRITE3res(nfs3.nfsstat3.NFS3_OK, nfs3.WRITE3resok(
        nfs3attrs.wcc(Wcc(None, ATTR)), 1 << 32, nfs3.stable_how.UNSTABLE, b"12345678"))
    with pytest.raises(XdrError):
        replies.encode(1, nfs3.WRITE3res, ok)
    short_verf = nfs3.WRITE3res(nfs3.nfsstat3.NFS3_OK, nfs3.WRITE3resok(
        nfs3attrs.wcc(Wcc(None, ATTR)), 1, nfs3.stable_how.UNSTABLE, b"1234"))
    with pytest.raises(XdrError):
        replies.encode(1, nfs3.WRITE3res, short_verf)
    with pytest.raises(ValueError):
        replies.write3_ok(1, Wcc(None, ATTR), 1 << 32, 0, b"12345678")
    with pytest.raises(ValueError):
        replies.write3_ok(1, Wcc(None, ATTR), 1, 0, b"1234")
