"""COMPOUND (RFC 8881 sections 15.2 and 16.2): the loop that runs a request's
operations, as Linux's nfsd4_proc_compound does.

A request carries its own little machine state: the current and saved
filehandles, the current and saved stateids, the slot its SEQUENCE took.
Operations run in order and the first failure ends the request; its status is
the COMPOUND's. NFSv4.1 rules enforced here, before any operation runs:
SEQUENCE only first (SEQUENCE_POS), an operation outside a session only when
it may be (OP_NOT_IN_SESSION) and then alone (NOT_ONLY_OP); minor version 0
answers MINOR_VERS_MISMATCH with no results.

The operations are nfs4proc's; each row of its table is an Op: the handler,
``handler(c, args) -> resok`` (a Compound ``c``), or a coroutine function for
those that wait on the data path. Metadata-only requests run to the end in the
dispatcher's receive loop; the first operation that has to wait turns the rest
of the request into a task (a Wait), as nfs3proc's READ does. An operation
that only sometimes has to wait (a REMOVE whose file has pNFS layouts out) is
synchronous and returns a Later when it does: the rest of its work, awaited
in the task the request then becomes.
"""

import logging

from common import nfs4
from common.nfs3 import nfsstat3
from common.nfs4 import nfs_opnum4, nfsstat4
from common.nfs4error import Nfs4Error
from common.xdr import XdrError
from nfspd.dispatch import Encoded, Wait
from nfspd.fs.types import FsError

log = logging.getLogger(__name__)

MINOR_VERSIONS = (1, 2)
# The RPC reply header before the COMPOUND4res (AUTH_SYS/NONE verifier), which
# ca_maxresponsesize counts too (RFC 8881 2.10.6.4).
RPC_REPLY_HEAD = 24
_ZERO_OTHER = bytes(12)
_OP_SEQUENCE = nfs_opnum4.OP_SEQUENCE

# May come without a SEQUENCE, and then alone (RFC 8881 2.10.6.4 and the
# DESCRIPTION of EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION,
# BIND_CONN_TO_SESSION and DESTROY_CLIENTID).
SESSIONLESS = frozenset({nfs_opnum4.OP_EXCHANGE_ID, nfs_opnum4.OP_CREATE_SESSION,
                         nfs_opnum4.OP_DESTROY_SESSION, nfs_opnum4.OP_BIND_CONN_TO_SESSION,
                         nfs_opnum4.OP_DESTROY_CLIENTID})


class Replay(Exception):
    """SEQUENCE found a retransmission: answer with the reply it got the first time."""

    def __init__(self, reply):
        super().__init__("replay")
        self.reply = reply


_FS_STATUS = {nfsstat3.NFS3ERR_NODEV: nfsstat4.NFS4ERR_NXIO,
              nfsstat3.NFS3ERR_NOT_SYNC: nfsstat4.NFS4ERR_NOT_SAME,
              nfsstat3.NFS3ERR_JUKEBOX: nfsstat4.NFS4ERR_DELAY}


def status_of_fs(e):
    """nfsstat4 for a file-system layer error (nfsstat3: same numbers mostly)."""
    s = e.status
    if s in _FS_STATUS:
        return _FS_STATUS[s]
    try:
        return nfsstat4(int(s))
    except ValueError:
        return nfsstat4.NFS4ERR_SERVERFAULT


class Later:
    """What a synchronous handler returns when it must wait after all:
    ``finish()``, a coroutine function, returns the operation's resok."""

    __slots__ = ("finish",)

    def __init__(self, finish):
        self.finish = finish


class Op:
    """One row of the operation table."""

    __slots__ = ("handler", "is_async", "keeps_attr", "num", "ok_bytes", "res_type")

    def __init__(self, num, handler, res_type, is_async=False, keeps_attr=False):
        self.num, self.handler, self.res_type = num, handler, res_type
        self.is_async = is_async
        # Changes no object: the current object's attributes fetched before
        # it (Compound.current_attr) still hold after it.
        self.keeps_attr = keeps_attr
        # Its encoded success when that carries nothing (PUTFH, SAVEFH...),
        # the same bytes every time; else None.
        try:
            self.ok_bytes = nfs4.encode_resop(nfs4.nfs_resop4(num, _res(res_type, nfsstat4.NFS4_OK,
                                                                        None)))
        except (XdrError, TypeError, AttributeError):
            self.ok_bytes = None


class Compound:
    """One request's state (Linux's nfsd4_compound_state)."""

    __slots__ = (
        "_view",
        "cachethis",
        "ctx",
        "current_attr",
        "current_fh",
        "current_fs",
        "current_stateid",
        "max_cached",
        "max_ops",
        "max_response",
        "minorversion",
        "results",
        "saved_fh",
        "saved_fs",
        "saved_stateid",
        "server",
        "size",
        "slot",
        "tag",
    )

    def __init__(self, ctx, server, minorversion, tag):
        self.ctx, self.server, self.minorversion, self.tag = ctx, server, minorversion, tag
        self.current_fh = self.saved_fh = None
        # The current object's Attr as an operation of this request fetched it
        # (PUTFH validating the handle), for the next ones not to fetch it
        # again; dropped with the filehandle and after any operation that may
        # change an object.
        self.current_attr = None
        self.current_fs = self.saved_fs = None  # MetaFS, or None in the pseudo file system
        self.current_stateid = self.saved_stateid = None
        self.slot = None  # the SlotHandle SEQUENCE got, to complete with the reply
        self.results = []  # encoded nfs_resop4s
        self.size = RPC_REPLY_HEAD + nfs4.compound_res_size(tag, [])
        # What the session allows, once SEQUENCE has found it.
        self.max_response = self.max_cached = None
        self.max_ops = None
        self.cachethis = False
        self._view = None

    # The client's pseudo-root view, made once per request when needed.
    @property
    def view(self):
        if self._view is None:
            self._view = self.server.pseudo.view(self.ctx)
        return self._view

    def set_fh(self, fh, fs, attr=None):
        self.current_fh, self.current_fs, self.current_attr = fh, fs, attr
        self.current_stateid = None

    def attr(self):
        """The current object's Attr (an export's object; NOFILEHANDLE when
        there is none), fetched at most once while nothing changes it."""
        attr = self.current_attr
        if attr is None:
            fh, fs = self.fh()
            attr = self.current_attr = fs.getattr(fh)
        return attr

    def resolve_stateid(self, sid):
        """The stateid an operation names, the "current stateid" (seqid 1,
        other zero: RFC 8881 16.2.3.1.2) replaced by the one set last."""
        if sid.seqid == 1 and bytes(sid.other) == _ZERO_OTHER:
            if self.current_stateid is None:
                raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
            return self.current_stateid
        return sid

    def fh(self):
        """(fh, MetaFS or None): NOFILEHANDLE when there is none."""
        if self.current_fh is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOFILEHANDLE)
        return self.current_fh, self.current_fs


class CompoundArgs:
    """The COMPOUND procedure's argument type for the dispatcher: decoded as
    common/nfs4.py's decode_compound says (GARBAGE_ARGS for a header that does
    not decode; a request with too many operations comes back as its
    CompoundTooLong, answered TOO_MANY_OPS)."""

    @staticmethod
    def unpack(u):
        try:
            return nfs4.decode_compound(u.rest())
        except nfs4.CompoundTooLong as e:
            return e


def compound(ctx, args, server, ops):
    """The COMPOUND procedure: the encoded COMPOUND4res (an Encoded), or a Wait
    when an operation has to wait."""
    too_long = isinstance(args, nfs4.CompoundTooLong)
    if too_long:
        args = args.compound
    c = Compound(ctx, server, args.minorversion, args.tag)
    if args.minorversion not in MINOR_VERSIONS:
        return _reply(c, nfsstat4.NFS4ERR_MINOR_VERS_MISMATCH)
    argarray = args.argarray
    if too_long:
        return _refuse(c, argarray, nfsstat4.NFS4ERR_TOO_MANY_OPS, ops)
    status = _first_op_rules(argarray, ops)
    if status is not None:
        return _refuse(c, argarray, status, ops)
    return _run(c, argarray, 0, ops)


def _refuse(c, argarray, status, ops):
    """The request as a whole is refused, reported on its first operation;
    nothing ran."""
    if argarray:
        _append(c, nfs4.resop_error(_opnum(argarray[0], ops), status))
    return _reply(c, status)


def _opnum(a, ops):
    return a.disc if a.disc in ops else nfs_opnum4.OP_ILLEGAL


def _first_op_rules(argarray, ops):
    if not argarray:
        return None
    first = argarray[0].disc
    for i in range(1, len(argarray)):
        if argarray[i].disc == _OP_SEQUENCE:
            return nfsstat4.NFS4ERR_SEQUENCE_POS
    if first == _OP_SEQUENCE:
        return None
    if first in SESSIONLESS:
        return nfsstat4.NFS4ERR_NOT_ONLY_OP if len(argarray) > 1 else None
    if first not in ops or nfs4.argop_status(argarray[0]) is not None:
        return None  # answered OP_ILLEGAL or BADXDR by the loop
    return nfsstat4.NFS4ERR_OP_NOT_IN_SESSION


def _run(c, argarray, i, ops):
    """Run operations from index i for as long as none has to wait."""
    try:
        while i < len(argarray):
            a = argarray[i]
            op = ops.get(a.disc)
            if op is not None and op.is_async and nfs4.argop_status(a) is None:
                return Wait(_run_async, c, argarray, i, ops)
            status = _step(c, op, a)
            if type(status) is Later:
                return Wait(_run_async, c, argarray, i, ops, status)
            if status != nfsstat4.NFS4_OK:
                return _answer(c, status)
            i += 1
    except Replay as r:
        return Encoded(r.reply)
    return _answer(c, nfsstat4.NFS4_OK)


async def _run_async(c, argarray, i, ops, later=None):
    try:
        if later is not None:
            op = ops[argarray[i].disc]
            try:
                status = _ok(c, op, await later.finish())
            except (Nfs4Error, FsError, XdrError) as e:
                status = _failed(c, op, e)
            except Exception:  # noqa: BLE001 (a bug: see _fault)
                status = _fault(c, op)
            if status != nfsstat4.NFS4_OK:
                return await _answer_async(c, status)
            i += 1
        while i < len(argarray):
            a = argarray[i]
            op = ops.get(a.disc)
            if op is not None and op.is_async and nfs4.argop_status(a) is None:
                c.current_attr = None  # it may change the object while it waits
                try:
                    status = _ok(c, op, await op.handler(c, a.body))
                except (Nfs4Error, FsError, XdrError) as e:
                    status = _failed(c, op, e)
                except Exception:  # noqa: BLE001 (a bug: see _fault)
                    status = _fault(c, op)
            else:
                status = _step(c, op, a)
                if type(status) is Later:
                    try:
                        status = _ok(c, op, await status.finish())
                    except (Nfs4Error, FsError, XdrError) as e:
                        status = _failed(c, op, e)
                    except Exception:  # noqa: BLE001 (a bug: see _fault)
                        status = _fault(c, op)
            if status != nfsstat4.NFS4_OK:
                return await _answer_async(c, status)
            i += 1
        return await _answer_async(c, nfsstat4.NFS4_OK)
    except Replay as r:
        return Encoded(r.reply)
    finally:
        _free_slot(c)


def _step(c, op, a):
    status = nfs4.argop_status(a)
    if status is not None or op is None:
        status = status or nfsstat4.NFS4ERR_OP_ILLEGAL
        _append(c, nfs4.resop_error(_opnum(a, {a.disc: op} if op else {}), status))
        return status
    if c.max_ops is not None and len(c.results) >= c.max_ops:
        # Beyond the session's ca_maxoperations (SEQUENCE let it start).
        return _append_error(c, op, nfsstat4.NFS4ERR_TOO_MANY_OPS)
    attr = c.current_attr
    try:
        body = op.handler(c, a.body)
    except (Nfs4Error, FsError, XdrError) as e:
        return _failed(c, op, e)
    except Replay:
        raise
    except Exception:  # noqa: BLE001 (a bug: see _fault)
        return _fault(c, op)
    finally:
        if attr is not None and not op.keeps_attr and c.current_attr is attr:
            c.current_attr = None
    if type(body) is Later:
        return body
    return _ok(c, op, body)


def _fault(c, op):
    """A bug in an operation: SERVERFAULT for it, and the request ends as any
    failed one does (its slot freed), rather than an RPC-level SYSTEM_ERR that
    would leave the session's slot busy."""
    log.exception("NFSv4 %s failed for %s", op.num.name, c.ctx.client)
    return _append_error(c, op, nfsstat4.NFS4ERR_SERVERFAULT)


def _ok(c, op, body):
    if body is None and op.ok_bytes is not None:
        data = op.ok_bytes
    elif type(body) is Encoded:  # the resok arm, packed by the operation itself
        data = nfs4.resop_ok_bytes(op.num, body)
    else:
        data = nfs4.encode_resop(nfs4.nfs_resop4(op.num, _res(op.res_type, nfsstat4.NFS4_OK,
                                                              body)))
    if c.max_response is not None:
        # RFC 8881 2.10.6.4: the operation that would overflow the reply (or,
        # when the client asked for it to be cached, the slot's cache) fails.
        size = c.size + len(data)
        if size > c.max_response:
            return _append_error(c, op, nfsstat4.NFS4ERR_REP_TOO_BIG)
        if c.cachethis and size > c.max_cached:
            return _append_error(c, op, nfsstat4.NFS4ERR_REP_TOO_BIG_TO_CACHE)
    _append(c, data)
    return nfsstat4.NFS4_OK


def _failed(c, op, e):
    body = None
    if isinstance(e, FsError):
        status = status_of_fs(e)
    elif isinstance(e, nfs4.UnknownAttribute):
        status = nfsstat4.NFS4ERR_ATTRNOTSUPP
    elif isinstance(e, XdrError):
        status = nfsstat4.NFS4ERR_BADXDR
    else:
        status, body = e.status, e.denied
    if body is None:
        return _append_error(c, op, status)
    _append(c, nfs4.nfs_resop4(op.num, _res(op.res_type, status, body)))
    return status


def _append_error(c, op, status):
    _append(c, nfs4.resop_error(op.num, status))
    return status


def _res(res_type, status, body):
    if getattr(res_type, "arms", None) is not None:  # a union on the status
        return res_type(status, body)
    return res_type(status) if body is None else res_type(status, body)


def _append(c, resop):
    data = resop if isinstance(resop, bytes) else nfs4.encode_resop(resop)
    c.results.append(data)
    c.size += len(data)


def _answer(c, status):
    """_reply once the changes the operations made are durable (a sync
    export's group commit, nfspd/fs/commit.py): at once, or a Wait for the
    flush alone, which the transport may park (nfspd/parked.py)."""
    fs = c.current_fs or c.saved_fs
    ticket = fs.stable_ticket() if fs is not None else None
    if ticket is None:
        return _reply(c, status)
    return Wait(_answer_async, c, status, commit=True, abandon=_free_slot)


def _free_slot(c, *_):
    """A request that will have no reply: cancelled while waiting (its
    connection went), given up while parked, or a bug. Its slot must not
    stay busy, or the client's retry would get DELAY for ever; a reply
    built has completed the slot already, cached."""
    if c.slot is not None:
        c.server.sequence_done(c, None)


async def _answer_async(c, status):
    fs = c.current_fs or c.saved_fs
    ticket = fs.stable_ticket() if fs is not None else None
    if ticket is not None:
        try:
            await fs.stable(ticket)
        except FsError:
            pass  # the flush failed (logged there); the changes were made
        except BaseException:
            _free_slot(c)
            raise
    return _reply(c, status)


def _reply(c, status):
    data = nfs4.compound_res_bytes(status, c.tag, c.results)
    if c.slot is not None:
        c.server.sequence_done(c, data)
    return Encoded(data)
