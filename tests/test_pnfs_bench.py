"""The pnfs benchmark's load generator (tools/dev/benchmarks/pnfsload.py)
writes its calls and reads its replies by hand, for speed: its calls are
byte for byte what common/nfs4.py and common/nfs3.py encode, its reply
parsing finds what those codecs put in a reply, and a reply that failed is
an error, never a figure. Then the benchmark itself, small (one client per
server), end to end: every server measured, no reply failed its checks."""

import pytest

from common import nfs3, nfs4, rpc
from common.nfs3 import nfsstat3
from common.nfs4 import nfs_opnum4 as O
from common.nfs4 import nfsstat4
from common.xdr import encode
from tools.dev import netns
from tools.dev.benchmarks import ganesha, pnfs
from tools.dev.benchmarks import pnfsload as L
from tools.dev.benchmarks.harness import Context, Params
from tools.dev.nfs4client import op

CRED = rpc.AuthSys(7, b"client", 0, 0, [0])
SESSION = b"S" * 16
FH = b"F" * 23                 # not a multiple of 4: the padding counts
STATEID = nfs4.stateid4(3, b"A" * 12)
V41 = L.V41(CRED, SESSION, FH, STATEID, window=1)


def joined(call):
    _xid, parts = call
    raw = b"".join(bytes(p) for p in parts)
    assert int.from_bytes(raw[:4], "big") == 0x80000000 | (len(raw) - 4)   # one last fragment
    return raw[4:]


def compound(*ops):
    return nfs4.encode_compound(nfs4.COMPOUND4args(b"", 1, list(ops)))


def sequence(seqid, slot, highest):
    return op(O.OP_SEQUENCE, nfs4.SEQUENCE4args(SESSION, seqid, slot, highest, False))


def test_nfsv41_calls_are_what_the_codec_encodes():
    v = L.V41(CRED, SESSION, FH, STATEID, window=4)
    putfh = op(O.OP_PUTFH, nfs4.PUTFH4args(FH))
    cases = [
        (v.read(2, 5 << 20, 65536), compound(sequence(1, 2, 3), putfh, op(
            O.OP_READ, nfs4.READ4args(STATEID, 5 << 20, 65536)))),
        (v.write(2, 7, memoryview(b"abcde")), compound(sequence(2, 2, 3), putfh, op(
            O.OP_WRITE, nfs4.WRITE4args(STATEID, 7, nfs4.stable_how4.UNSTABLE4, b"abcde")))),
        (v.commit(0), compound(sequence(1, 0, 3), putfh, op(O.OP_COMMIT,
                                                             nfs4.COMMIT4args(0, 0)))),
        (v.sequence(0), compound(sequence(2, 0, 3))),
    ]
    for call, args in cases:
        decoded = rpc.decode_call(joined(call))
        assert (decoded.xid, decoded.prog, decoded.vers, decoded.proc) == \
            (call[0], nfs4.NFS4_PROGRAM, 4, 1)
        assert bytes(decoded.args) == args


def test_nfsv3_calls_are_what_the_codec_encodes():
    v = L.V3(CRED, FH, window=2)
    P = nfs3.NFSPROC3
    cases = [
        (v.read(0, 1 << 20, 1 << 20), P.READ,
         encode(nfs3.READ3args, nfs3.READ3args(FH, 1 << 20, 1 << 20))),
        (v.write(0, 9, memoryview(b"xyz")), P.WRITE, encode(
            nfs3.WRITE3args, nfs3.WRITE3args(FH, 9, 3, nfs3.stable_how.UNSTABLE, b"xyz"))),
        (v.commit(0), P.COMMIT, encode(nfs3.COMMIT3args, nfs3.COMMIT3args(FH, 0, 0))),
    ]
    for call, proc, args in cases:
        decoded = rpc.decode_call(joined(call))
        assert (decoded.prog, decoded.vers, decoded.proc) == (nfs3.NFS_PROGRAM, 3, proc)
        assert bytes(decoded.args) == args


def v4_reply(xid, *results, status=nfsstat4.NFS4_OK):
    seq = nfs4.nfs_resop4(O.OP_SEQUENCE, nfs4.SEQUENCE4res(nfsstat4.NFS4_OK, nfs4.SEQUENCE4resok(
        SESSION, 1, 0, 3, 3, 0)))
    putfh = nfs4.nfs_resop4(O.OP_PUTFH, nfs4.PUTFH4res(nfsstat4.NFS4_OK))
    body = nfs4.encode_compound_res(nfs4.COMPOUND4res(status, b"tag", [seq, putfh, *results]))
    return bytearray(rpc.reply_success(xid, body))


def test_nfsv41_replies_are_read_where_the_codec_puts_them():
    data = bytes(range(256)) * 5
    buf = v4_reply(0x11, nfs4.nfs_resop4(O.OP_READ, nfs4.READ4res(
        nfsstat4.NFS4_OK, nfs4.READ4resok(True, data))))
    xid, at, count = V41.read_data(buf, len(buf))
    assert (xid, count, bytes(buf[at:at + count])) == (0x11, len(data), data)
    buf = v4_reply(0x12, nfs4.nfs_resop4(O.OP_WRITE, nfs4.WRITE4res(
        nfsstat4.NFS4_OK, nfs4.WRITE4resok(4096, nfs4.stable_how4.UNSTABLE4, b"verifier"))))
    assert V41.write_result(buf, len(buf)) == (0x12, 4096, b"verifier")
    buf = v4_reply(0x13, nfs4.nfs_resop4(O.OP_COMMIT, nfs4.COMMIT4res(
        nfsstat4.NFS4_OK, nfs4.COMMIT4resok(b"VERIFIER"))))
    assert V41.commit_verifier(buf, len(buf)) == (0x13, b"VERIFIER")


def test_a_failed_compound_or_rpc_is_an_error_not_a_figure():
    buf = v4_reply(0x14, nfs4.nfs_resop4(O.OP_READ, nfs4.READ4res(nfsstat4.NFS4ERR_STALE)),
                   status=nfsstat4.NFS4ERR_STALE)
    with pytest.raises(L.IoError, match="NFS4ERR_STALE at OP_READ"):
        V41.read_data(buf, len(buf))
    buf = bytearray(rpc.reply_accepted_error(0x15, rpc.accept_stat.GARBAGE_ARGS))
    with pytest.raises(L.IoError, match="accept_stat"):
        V41.read_data(buf, len(buf))
    res = encode(nfs3.READ3res, nfs3.READ3res(nfsstat3.NFS3ERR_IO, nfs3.READ3resfail(None)))
    buf = bytearray(rpc.reply_success(0x16, res))
    with pytest.raises(L.IoError, match="NFS3ERR_IO"):
        L.V3(CRED, FH, 1).read_data(buf, len(buf))


def fattr(size):
    t = nfs3.nfstime3(1, 2)
    return nfs3.fattr3(nfs3.ftype3.NF3REG, 0o644, 1, 0, 0, size, size, nfs3.specdata3(0, 0), 1,
                       99, t, t, t)


def test_nfsv3_replies_are_read_where_the_codec_puts_them():
    v = L.V3(CRED, FH, 1)
    data = b"0123456789"
    for attrs in (None, fattr(10)):
        res = encode(nfs3.READ3res, nfs3.READ3res(nfsstat3.NFS3_OK, nfs3.READ3resok(
            attrs, len(data), True, data)))
        buf = bytearray(rpc.reply_success(0x21, res))
        xid, at, count = v.read_data(buf, len(buf))
        assert (xid, bytes(buf[at:at + count])) == (0x21, data)
    t = nfs3.nfstime3(1, 2)
    for wcc in (nfs3.wcc_data(None, None), nfs3.wcc_data(nfs3.wcc_attr(1, t, t), fattr(10))):
        res = encode(nfs3.WRITE3res, nfs3.WRITE3res(nfsstat3.NFS3_OK, nfs3.WRITE3resok(
            wcc, 10, nfs3.stable_how.UNSTABLE, b"verifier")))
        buf = bytearray(rpc.reply_success(0x22, res))
        assert v.write_result(buf, len(buf)) == (0x22, 10, b"verifier")
        res = encode(nfs3.COMMIT3res, nfs3.COMMIT3res(nfsstat3.NFS3_OK, nfs3.COMMIT3resok(
            wcc, b"VERIFIER")))
        buf = bytearray(rpc.reply_success(0x23, res))
        assert v.commit_verifier(buf, len(buf)) == (0x23, b"VERIFIER")


@pytest.mark.netns
def test_the_benchmark_measures_every_server_and_every_reply_passes_its_checks(
        tmp_path, monkeypatch):
    if not netns.available():
        pytest.skip("needs root with unshare and nsenter (network namespaces)")
    monkeypatch.setattr(pnfs, "QUICK_CLIENTS", (1,))
    monkeypatch.setattr(pnfs, "STRIPE_UNITS", (1 << 20,))     # one NFSP cluster is enough
    ctx = Context(str(tmp_path / "out"), Params(), quick=True)
    res = pnfs.run(ctx)
    servers = {"NFSP pNFS 1M", "NFSP v3 relay 1M"}
    if ganesha.available() is None:
        servers.add("ganesha NFSv4.1")
    assert {(r["server"], r["kind"]) for r in res["rows"]} == \
        {(s, k) for s in servers for k in ("write", "read")}
    for r in res["rows"]:
        assert r["error_count"] == 0, r["errors"]
        assert r["MiB"] >= pnfs.QUICK_FILE_MIB or r["kind"] == "read"
        assert r["MiB"] > 0
    # Each pNFS client goes to all 4 data servers (a 1 MiB stripe unit, an 8 MiB file).
    assert res["setup"]["NFSP pNFS 1M"]["layout"]["data_servers"] == pnfs.IODS
