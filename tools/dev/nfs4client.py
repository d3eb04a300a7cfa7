"""The project's own small NFSv4.1 client: COMPOUNDs over TCP with AUTH_SYS.

For tests of what the kernel client cannot be made to do on purpose (replays,
forged stateids, malformed requests) and to drive nfspd without a kernel.
Results are common/nfs4.py's objects: ``compound`` returns the COMPOUND4res,
``seq`` runs operations after a SEQUENCE on the client's session and
``ok`` raises Nfs4Failed unless every one succeeded.
"""

import itertools
import os

from common import nfs4, rpc
from common.nfs4 import nfs_argop4, nfsstat4
from common.nfs4 import nfs_opnum4 as O
from tools.rpcclient import RpcCallError, RpcClient

_xids = itertools.count(int.from_bytes(os.urandom(3), "big") << 4)


class Nfs4Failed(Exception):
    def __init__(self, res):
        self.res = res
        self.status = nfsstat4(res.status)
        last = res.resarray[-1].disc.name if res.resarray else "-"
        super().__init__(f"{self.status.name} at {last}")


def op(num, args=None):
    return nfs_argop4(num, args)


def fattr(values):
    return nfs4.encode_attrs(values)


class Nfs4Client:
    def __init__(self, host="127.0.0.1", port=2049, uid=0, gid=0, gids=None, timeout=5.0,
                 owner=None, reserved_port=True, minorversion=1):
        cred = RpcClient.default_cred(uid, gid, gids if gids is not None else [gid])
        self.rpc = RpcClient(host, port, "tcp", timeout=timeout, cred=cred,
                             reserved_port=reserved_port)
        self.owner = owner or os.urandom(8).hex().encode()
        self.verifier = os.urandom(8)
        self.clientid = self.sessionid = None
        self.seqid = 0
        self.slot = 0
        self.minorversion = minorversion  # of the requests after the session is made

    def close(self):
        self.rpc.close()

    # -- the wire -----------------------------------------------------------------

    def call_raw(self, args_bytes, vers=4, proc=1):
        xid = next(_xids) & 0xFFFFFFFF
        msg = rpc.encode_call(xid, 100003, vers, proc, args_bytes, self.rpc.cred)
        return self.rpc.call_raw(msg, xid)

    def compound_raw(self, args_bytes):
        """The COMPOUND4res bytes (the RPC reply's body); RpcCallError unless SUCCESS."""
        reply = rpc.decode_reply(self.call_raw(args_bytes))
        if not (reply.accepted and reply.stat == rpc.accept_stat.SUCCESS):
            raise RpcCallError(reply)
        return bytes(reply.body)

    def compound(self, ops, minorversion=1, tag=b""):
        data = nfs4.encode_compound(nfs4.COMPOUND4args(tag, minorversion, list(ops)))
        return nfs4.decode_compound_res(self.compound_raw(data))

    # -- sessions -------------------------------------------------------------------

    def sequence_op(self, cachethis=True, seqid=None):
        if seqid is None:
            self.seqid += 1
            seqid = self.seqid
        return op(O.OP_SEQUENCE, nfs4.SEQUENCE4args(self.sessionid, seqid, self.slot,
                                                     self.slot, cachethis))

    def seq(self, *ops, cachethis=True):
        return self.compound([self.sequence_op(cachethis)] + list(ops), self.minorversion)

    def ok(self, *ops):
        """The results of the operations after SEQUENCE; Nfs4Failed otherwise."""
        res = self.seq(*ops)
        if res.status != nfsstat4.NFS4_OK:
            raise Nfs4Failed(res)
        return [r.body for r in res.resarray[1:]]

    def exchange_id(self):
        args = nfs4.EXCHANGE_ID4args(
            nfs4.client_owner4(self.verifier, self.owner), 0,
            nfs4.state_protect4_a(nfs4.state_protect_how4.SP4_NONE), [])
        res = self.compound([op(O.OP_EXCHANGE_ID, args)])
        if res.status != nfsstat4.NFS4_OK:
            raise Nfs4Failed(res)
        body = res.resarray[0].body.body
        self.clientid = body.eir_clientid
        self._csa_seq = body.eir_sequenceid
        return body

    def create_session(self, maxresponsesize=1 << 20, cached=8192, maxoperations=16,
                       maxrequestsize=1 << 20, maxrequests=8):
        attrs = nfs4.channel_attrs4(0, maxrequestsize, maxresponsesize, cached, maxoperations,
                                    maxrequests, [])
        args = nfs4.CREATE_SESSION4args(self.clientid, self._csa_seq, 0, attrs, attrs,
                                        0x40000000, [nfs4.callback_sec_parms4(0)])
        res = self.compound([op(O.OP_CREATE_SESSION, args)])
        if res.status != nfsstat4.NFS4_OK:
            raise Nfs4Failed(res)
        body = res.resarray[0].body.body
        self.sessionid = body.csr_sessionid
        self.seqid = 0
        return body

    def mount(self, **session):
        """EXCHANGE_ID, CREATE_SESSION (``session``: its channel's sizes),
        RECLAIM_COMPLETE: what a client does first."""
        self.exchange_id()
        self.session = self.create_session(**session)
        self.ok(op(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4args(False)))
        return self

    # -- files ------------------------------------------------------------------------

    def lookup_path(self, path):
        """The handle of an absolute path from the pseudo root."""
        ops = [op(O.OP_PUTROOTFH)]
        ops += [op(O.OP_LOOKUP, nfs4.LOOKUP4args(p.encode())) for p in path.split("/") if p]
        ops.append(op(O.OP_GETFH))
        return self.ok(*ops)[-1].body.object

    def getattr(self, fh, attrs):
        res = self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                      op(O.OP_GETATTR, nfs4.GETATTR4args(nfs4.attrs_to_bitmap4(attrs))))
        return nfs4.decode_attrs(res[-1].body.obj_attributes)

    def open(self, dir_fh, name, access=3, deny=0, create=True, owner=b"o1", mode=0o644):
        if create:
            how = nfs4.openflag4(nfs4.opentype4.OPEN4_CREATE, nfs4.createhow4(
                nfs4.createmode4.UNCHECKED4, fattr({nfs4.FATTR4_MODE: mode})))
        else:
            how = nfs4.openflag4(nfs4.opentype4.OPEN4_NOCREATE)
        args = nfs4.OPEN4args(0, access, deny, nfs4.open_owner4(self.clientid, owner), how,
                              nfs4.open_claim4(nfs4.open_claim_type4.CLAIM_NULL, name))
        res = self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(dir_fh)), op(O.OP_OPEN, args),
                      op(O.OP_GETFH))
        return res[1].body.stateid, res[2].body.object

    def write(self, fh, stateid, offset, data, stable=2):
        res = self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                      op(O.OP_WRITE, nfs4.WRITE4args(stateid, offset, nfs4.stable_how4(stable),
                                                     data)))
        return res[-1].body

    def read(self, fh, stateid, offset, count):
        res = self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                      op(O.OP_READ, nfs4.READ4args(stateid, offset, count)))
        return res[-1].body

    def close_file(self, fh, stateid):
        return self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)),
                       op(O.OP_CLOSE, nfs4.CLOSE4args(0, stateid)))[-1].body

    # -- pNFS (RFC 8881 section 12) ------------------------------------------------------

    def layoutget(self, fh, stateid, iomode=nfs4.layoutiomode4.LAYOUTIOMODE4_RW,
                  layout_type=nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES, maxcount=65536):
        """LAYOUTGET4resok for the whole file; Nfs4Failed when none is given."""
        return self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LAYOUTGET, nfs4.LAYOUTGET4args(
            False, layout_type, iomode, 0, nfs4.NFS4_UINT64_MAX, 0, stateid, maxcount)))[-1].body

    def getdeviceinfo(self, devid, layout_type=nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES,
                      maxcount=65536):
        """The device's device_addr4."""
        return self.ok(op(O.OP_GETDEVICEINFO, nfs4.GETDEVICEINFO4args(
            devid, layout_type, maxcount, [])))[-1].body.gdir_device_addr

    def layoutcommit(self, fh, layout_stateid, last_write_offset,
                     layout_type=nfs4.layouttype4.LAYOUT4_NFSV4_1_FILES):
        """LAYOUTCOMMIT of the whole file: the size its data servers' WRITEs made."""
        return self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_LAYOUTCOMMIT,
                       nfs4.LAYOUTCOMMIT4args(0, nfs4.NFS4_UINT64_MAX, False, layout_stateid,
                                              last_write_offset, None,
                                              nfs4.layoutupdate4(layout_type, b""))))[-1].body

    def readdir(self, fh, attrs=(), maxcount=65536):
        names, cookie, verf = [], 0, bytes(8)
        while True:
            res = self.ok(op(O.OP_PUTFH, nfs4.PUTFH4args(fh)), op(O.OP_READDIR, nfs4.READDIR4args(
                cookie, verf, maxcount, maxcount, nfs4.attrs_to_bitmap4(attrs))))
            body = res[-1].body
            verf = body.cookieverf
            for e in body.reply.entries:
                names.append((e.name, nfs4.decode_attrs(e.attrs)))
                cookie = e.cookie
            if body.reply.eof or not body.reply.entries:
                return names


__all__ = ["Nfs4Client", "Nfs4Failed", "fattr", "op"]
