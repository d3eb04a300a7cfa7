"""The few NFSv4.1 calls a pNFS client makes to a data server (the iod's,
iod/nfs4ds.py), for tests and benchmarks: EXCHANGE_ID with USE_PNFS_DS,
CREATE_SESSION, then SEQUENCE + PUTFH + READ / WRITE / COMMIT, over any
``call`` (COMPOUND4args bytes -> the RPC reply's body), so the same client
drives the data server in process and the real iod over TCP (``over_tcp``)."""

import itertools
import os

from common import nfs4, rpc
from common.nfs4 import nfs_argop4, nfsstat4
from common.nfs4 import nfs_opnum4 as O

_xids = itertools.count(int.from_bytes(os.urandom(3), "big") << 4)

ANY_STATEID = nfs4.stateid4(0, bytes(12))
FORE = nfs4.channel_attrs4(0, 1 << 20 | 4096, 1 << 20 | 4096, 8192, 8, 16, [])
BACK = nfs4.channel_attrs4(0, 4096, 4096, 0, 2, 1, [])
CRED = rpc.AuthSys(0, b"client", 0, 0, [0])


def call_message(args, cred=CRED, prog=nfs4.NFS4_PROGRAM, vers=4, proc=1):
    xid = next(_xids) & 0xFFFFFFFF
    return xid, rpc.encode_call(xid, prog, vers, proc, args, cred)


def over_tcp(rpc_client):
    """A ``call`` on an RpcClient (tools/rpcclient.py) connected to a data server."""
    def call(args):
        xid, message = call_message(args, rpc_client.cred or CRED)
        reply = rpc.decode_reply(rpc_client.call_raw(message, xid))
        assert reply.accepted and reply.stat == rpc.accept_stat.SUCCESS, reply
        return reply.body
    return call


def op(num, args=None):
    return nfs_argop4(num, args)


class DsClient:
    def __init__(self, call, owner=None, flags=nfs4.EXCHGID4_FLAG_USE_PNFS_DS, fore=FORE):
        self.call = call
        self.fore = fore
        self.owner = owner or os.urandom(8).hex().encode()
        self.flags = flags
        self.verifier = os.urandom(8)
        self.clientid = self.sessionid = None
        self.seqids = {}

    def compound(self, ops, minorversion=1):
        args = nfs4.encode_compound(nfs4.COMPOUND4args(b"", minorversion, list(ops)))
        return nfs4.decode_compound_res(self.call(args))

    def exchange_id(self):
        res = self.compound([op(O.OP_EXCHANGE_ID, nfs4.EXCHANGE_ID4args(
            nfs4.client_owner4(self.verifier, self.owner), self.flags,
            nfs4.state_protect4_a(nfs4.state_protect_how4.SP4_NONE), []))])
        ok = ok_result(res)
        self.clientid, self.cs_seq = ok.eir_clientid, ok.eir_sequenceid
        return ok

    def create_session(self, sequence=None):
        res = self.compound([op(O.OP_CREATE_SESSION, nfs4.CREATE_SESSION4args(
            self.clientid, self.cs_seq if sequence is None else sequence, 0, self.fore, BACK,
            0x40000000, [nfs4.callback_sec_parms4(0)]))])
        ok = ok_result(res)
        self.sessionid = ok.csr_sessionid
        return ok

    def setup(self):
        self.exchange_id()
        self.create_session()
        return self

    def sequence_op(self, slot=0, seqid=None, cachethis=False):
        if seqid is None:
            seqid = self.seqids.get(slot, 0) + 1
            self.seqids[slot] = seqid
        return op(O.OP_SEQUENCE, nfs4.SEQUENCE4args(self.sessionid, seqid, slot, slot, cachethis))

    def seq(self, *ops, **kw):
        return self.compound([self.sequence_op(**kw)] + list(ops))

    # -- the file ---------------------------------------------------------------------

    def read(self, fh, offset, count, **kw):
        return self.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                        op(O.OP_READ, nfs4.READ4args(ANY_STATEID, offset, count)), **kw)

    def write(self, fh, offset, data, stable=nfs4.stable_how4.UNSTABLE4, **kw):
        return self.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                        op(O.OP_WRITE, nfs4.WRITE4args(ANY_STATEID, offset, stable, data)), **kw)

    def commit(self, fh, **kw):
        return self.seq(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                        op(O.OP_COMMIT, nfs4.COMMIT4args(0, 0)), **kw)


def ok_result(res):
    """The last operation's resok; AssertionError unless the COMPOUND succeeded."""
    assert res.status == nfsstat4.NFS4_OK, (nfsstat4(res.status).name,
                                            [r.disc.name for r in res.resarray])
    return res.resarray[-1].body.body


def status(res):
    return nfsstat4(res.status)
