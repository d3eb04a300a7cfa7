"""RPC dispatch: from a received message to the reply to send, with no sockets.

Services (NFS, MOUNT, portmapper) describe themselves as Programs made of
Procedures, one table row each (procedure_table); the transports hand each
received message to Dispatcher.handle() with a CallContext saying where it came
from, and send back what it returns. A handler is a module-level function named
as its RFC names the procedure; what it works on (the export registry, the port
table) is the Program's ``service``, which it finds in ``ctx.service``.

Most NFS procedures never wait (MetaFS is synchronous), and spawning a task per
call cost more than the call itself; so the transports call handle_now(), which
answers those on the spot and hands back a Deferred for the others (READ,
WRITE, COMMIT, MNT...), which they run as tasks; but for those that wait only
for the group commit (a ``sync`` export's CREATE, REMOVE...), which they
finish themselves once their batch is flushed (nfspd/parked.py).
"""

import inspect
import logging
import zlib

from common import rpc
from nfspd.drc import DONE, NEW
from common.rpc import accept_stat
from common.xdr import Packer, Unpacker, XdrError

log = logging.getLogger(__name__)

NO_REPLY = object()
"""A handler's result meaning: the reply is sent by someone else (an iod
spoofing it), or deliberately not at all (the client will retransmit)."""


class CallContext:
    """Where a call came from and who made it.

    ``client`` and ``local`` are (ip, port) tuples: the peer, and the address the
    request was sent to (a UDP reply must leave from it). ``cred`` is an
    rpc.AuthSys or None for AUTH_NONE. ``transport`` is "udp" or "tcp".
    ``service`` is the called Program's service, set by the dispatcher.
    """

    __slots__ = ("client", "local", "transport", "cred", "xid", "call", "raw", "service")

    def __init__(self, client, local, transport, call=None, raw=None):
        self.client = client
        self.local = local
        self.transport = transport
        self.call = call
        self.raw = raw
        self.cred = call.cred if call is not None else None
        self.xid = call.xid if call is not None else None
        self.service = None

    def __repr__(self):
        return f"CallContext({self.transport} {self.client[0]}:{self.client[1]} xid={self.xid})"


class Procedure:
    """``handler(ctx, args) -> result``: args decoded with ``args_type``, result
    encoded with ``res_type`` (or already encoded: an Encoded). A plain function
    handler is answered at once, in the transport's receive loop (no task, no
    scheduling: what makes the metadata procedures cheap); an ``async def`` one
    runs as a task of its own (it may wait: for the data path, a thread, DNS).
    ``idempotent`` False puts the procedure's replies in the duplicate request
    cache.

    ``failed(ctx, args, error, res_type) -> result`` answers a failure the
    protocol can express: the handler raised ``error_type`` (the file system's
    FsError for NFS), and the result is the procedure's failure arm. It is the
    one error path of a program's handlers; anything else a handler raises is
    answered SYSTEM_ERR."""

    __slots__ = ("name", "args_type", "res_type", "handler", "idempotent", "inline", "failed",
                 "error_type")

    def __init__(self, name, args_type, res_type, handler, idempotent=True, failed=None,
                 error_type=None):
        self.name = name
        self.args_type = args_type
        self.res_type = res_type
        self.handler = handler
        self.idempotent = idempotent
        self.inline = not inspect.iscoroutinefunction(handler)
        self.failed = failed
        # An empty tuple catches nothing: a procedure without a failure arm
        # costs no test on its path.
        self.error_type = error_type if failed is not None else ()


def procedure_table(rows, error_type=None):
    """{procedure number: Procedure} from one row per procedure:
    ``(number, args type, result type, handler, cached[, failed])``, where the
    number is an IntEnum member (its name is the procedure's), ``cached`` puts
    its replies in the duplicate request cache (it changes something, and a
    replay would fail or redo it), ``failed`` is the Procedure's answer to an
    ``error_type`` its handler raises (absent or None: none)."""
    table = {}
    for num, args_type, res_type, handler, cached, *failed in rows:
        table[int(num)] = Procedure(num.name, args_type, res_type, handler,
                                    idempotent=not cached, failed=failed[0] if failed else None,
                                    error_type=error_type)
    return table


class Encoded(bytes):
    """A handler's result that is already XDR (its res_type's encoding): the
    hot procedures build their replies with one struct.pack."""

    __slots__ = ()


class ReplyParts(tuple):
    """A handler's result that is the whole RPC reply (header included) as
    buffers, sent with one sendmsg and never joined: a relayed READ's data
    goes out from the buffer the data path received it into
    (nfspd/transport.py)."""

    __slots__ = ()


class Wait:
    """What a plain-function handler returns when this call has to wait after
    all (say a READ that cannot be forwarded and must relay the data): the call
    goes on as a task, and ``await fn(*args)`` gives its result.

    ``commit`` True says it waits for nothing but the group commit's flush
    (nfspd/durable.py): a transport may then hold the call until the end of
    its batch of received calls instead (nfspd/parked.py), since one flush
    answers them all. ``abandon(*args)``, if given, is what must be undone
    when the call is given up without ever running ``fn`` (an NFSv4 session
    slot to free)."""

    __slots__ = ("fn", "args", "commit", "abandon")

    def __init__(self, fn, *args, commit=False, abandon=None):
        self.fn, self.args, self.commit, self.abandon = fn, args, commit, abandon


class Program:
    """``versions`` maps a version number to {procedure number: Procedure};
    ``service`` is what the handlers work on (they find it in ctx.service).
    ``tcp_only`` versions are not served over UDP (NFSv4, RFC 8881 2.9.1): a
    UDP call to one gets PROG_MISMATCH with the range UDP does serve, as
    Linux's nfsd answers."""

    def __init__(self, prog, name, versions, service=None, tcp_only=()):
        self.prog = prog
        self.name = name
        self.versions = versions
        self.service = service
        self.low = min(versions)
        self.high = max(versions)
        self.tcp_only = frozenset(tcp_only)
        udp = [v for v in versions if v not in self.tcp_only] or list(versions)
        self.udp_low, self.udp_high = min(udp), max(udp)


class Counters:
    """What the dispatcher has seen, for the log and for `nfsp status`."""

    def __init__(self):
        self.calls = 0
        self.dropped = 0
        self.garbage_args = 0
        self.auth_errors = 0
        self.rpc_mismatch = 0
        self.prog_unavail = 0
        self.prog_mismatch = 0
        self.proc_unavail = 0
        self.system_err = 0
        self.drc_hits = 0
        self.drc_in_progress = 0

    def as_dict(self):
        return dict(vars(self))


# The bytes of a call's arguments the duplicate request cache checksums, as
# nfsd does (fs/nfsd/cache.h, RC_CSUMLEN): a relayed WRITE's MiB of data is
# not read again for it (zlib.crc32 of a MiB: 330 us here).
ARGS_CSUMLEN = 256


def args_checksum(args):
    """What the duplicate request cache compares besides xid (nfsd's key): a
    retransmission carries the same arguments, so the same length and first
    ARGS_CSUMLEN bytes; a new call that reuses an xid differs in them (a
    WRITE's file handle, offset and count, a CREATE's name)."""
    return len(args), zlib.crc32(args[:ARGS_CSUMLEN])


class Deferred:
    """A call that has to wait for something (an async handler, or a Wait):
    ``await run()`` gives its reply, exactly as Dispatcher.handle would."""

    __slots__ = ("dispatcher", "program", "proc", "args", "ctx", "call", "wait", "drc_key")

    def __init__(self, dispatcher, program, proc, args, ctx, call, wait=None, drc_key=None):
        self.dispatcher, self.program, self.proc = dispatcher, program, proc
        self.args, self.ctx, self.call = args, ctx, call
        # A Wait comes from a handler that already ran, the duplicate request
        # cache consulted (drc_key: its entry, to finish).
        self.wait, self.drc_key = wait, drc_key

    @property
    def waits_for_commit(self):
        """Whether all it waits for is the group commit (a Wait's ``commit``)."""
        return self.wait is not None and self.wait.commit

    def abandon(self):
        """Give up a call that will never run(): the duplicate request cache
        forgets it, so a retransmission runs again (as when a task is
        cancelled)."""
        if self.drc_key is not None:
            self.dispatcher.drc.finish(self.drc_key, None)
            self.drc_key = None
        wait = self.wait
        if wait is not None and wait.abandon is not None:
            abandon, wait.abandon = wait.abandon, None
            abandon(*wait.args)

    async def run(self):
        d, proc, ctx, call, wait = self.dispatcher, self.proc, self.ctx, self.call, self.wait
        if wait is None:
            drc_key, early = d._drc_begin(proc, ctx, call)
            if drc_key is _ANSWERED:
                return early
        else:
            drc_key = self.drc_key
        reply = None
        try:
            if wait is None:
                result = await proc.handler(ctx, self.args)
            else:
                result = await wait.fn(*wait.args)
            reply = d._encode(proc, call.xid, result)
        except proc.error_type as e:
            reply = d._failure(self.program, proc, ctx, self.args, e)
        except Exception:
            reply = d._failed(self.program, proc, ctx, call.xid)
        finally:
            if drc_key is not None:
                d.drc.finish(drc_key, b"".join(reply) if type(reply) is ReplyParts else reply)
        return reply


_ANSWERED = object()  # _drc_begin: the DRC has the answer (or says: drop it)


class Dispatcher:
    def __init__(self, programs, drc=None, clock=None):
        self.programs = {p.prog: p for p in programs}
        self.drc = drc
        self.counters = Counters()
        self._clock = clock

    def add_program(self, program):
        self.programs[program.prog] = program

    async def handle(self, data, ctx):
        """Return the reply bytes for a received message, or None to send nothing."""
        reply = self.handle_now(data, ctx)
        if type(reply) is Deferred:
            reply = await reply.run()
        if type(reply) is ReplyParts:
            return b"".join(reply)
        return reply

    def handle_now(self, data, ctx):
        """What handle() does, as far as it can without waiting: the reply bytes,
        None to send nothing, or a Deferred whose run() gives the reply (which
        the transport awaits in a task of its own)."""
        c = self.counters
        try:
            call = rpc.decode_call(data)
        except rpc.RpcError as e:
            if e.reply is None:
                c.dropped += 1
                log.debug("dropped message from %s: %s", ctx.client, e)
            elif "RPC version" in str(e):
                c.rpc_mismatch += 1
            else:
                c.auth_errors += 1
                log.debug("auth error from %s: %s", ctx.client, e)
            return e.reply
        c.calls += 1
        ctx.call = call
        ctx.cred = call.cred
        xid = ctx.xid = call.xid

        program = self.programs.get(call.prog)
        if program is None:
            c.prog_unavail += 1
            return rpc.reply_accepted_error(xid, accept_stat.PROG_UNAVAIL)
        ctx.service = program.service
        procs = program.versions.get(call.vers)
        if procs is None or (program.tcp_only and ctx.transport != "tcp"
                             and call.vers in program.tcp_only):
            c.prog_mismatch += 1
            if ctx.transport == "tcp":
                return rpc.reply_prog_mismatch(xid, program.low, program.high)
            return rpc.reply_prog_mismatch(xid, program.udp_low, program.udp_high)
        proc = procs.get(call.proc)
        if proc is None:
            c.proc_unavail += 1
            return rpc.reply_accepted_error(xid, accept_stat.PROC_UNAVAIL)

        try:
            args = proc.args_type.unpack(Unpacker(call.args))
        except XdrError as e:
            c.garbage_args += 1
            log.debug("garbage args for %s.%s from %s: %s", program.name, proc.name, ctx.client, e)
            return rpc.reply_accepted_error(xid, accept_stat.GARBAGE_ARGS)

        if not proc.inline:
            return Deferred(self, program, proc, args, ctx, call)
        if proc.idempotent or self.drc is None:
            # The common case, kept short.
            try:
                result = proc.handler(ctx, args)
                if type(result) is Encoded:
                    return rpc.success_head(xid) + result
                if type(result) is Wait:
                    return Deferred(self, program, proc, args, ctx, call, result)
                return self._encode(proc, xid, result)
            except proc.error_type as e:
                return self._failure(program, proc, ctx, args, e)
            except Exception:
                return self._failed(program, proc, ctx, xid)
        drc_key, early = self._drc_begin(proc, ctx, call)
        if drc_key is _ANSWERED:
            return early
        reply = None
        try:
            result = proc.handler(ctx, args)
            if type(result) is Wait:
                deferred = Deferred(self, program, proc, args, ctx, call, result, drc_key)
                drc_key = None  # the Deferred finishes it
                return deferred
            reply = self._encode(proc, xid, result)
        except proc.error_type as e:
            reply = self._failure(program, proc, ctx, args, e)
        except Exception:
            reply = self._failed(program, proc, ctx, xid)
        finally:
            if drc_key is not None:
                self.drc.finish(drc_key, reply)
        return reply

    def _drc_begin(self, proc, ctx, call):
        """(key, None) with the call now in progress in the cache (key None: not
        cached), or (_ANSWERED, reply) when it is a retransmission."""
        if self.drc is None or proc.idempotent:
            return None, None
        key = (ctx.transport, ctx.client, call.xid, call.prog, call.vers, call.proc,
               call.cred_flavor, bytes(call.cred_body), args_checksum(call.args))
        state, cached = self.drc.start(key)
        if state is NEW:
            return key, None
        if state is DONE:
            self.counters.drc_hits += 1
            return _ANSWERED, cached
        # The original is still running; its reply will answer this
        # retransmission too (the kernel server drops these likewise).
        self.counters.drc_in_progress += 1
        return _ANSWERED, None

    @staticmethod
    def _encode(proc, xid, result):
        if result is NO_REPLY:
            return None
        if type(result) is ReplyParts:
            return result
        if type(result) is Encoded:
            return rpc.success_head(xid) + result
        p = Packer()
        p.pack_raw(rpc.success_head(xid))
        proc.res_type.pack(p, result)
        return p.get_buffer()

    def _failure(self, program, proc, ctx, args, error):
        """The reply to a failure the procedure's result can say (its ``failed``)."""
        try:
            return self._encode(proc, ctx.xid, proc.failed(ctx, args, error, proc.res_type))
        except Exception:
            return self._failed(program, proc, ctx, ctx.xid)

    def _failed(self, program, proc, ctx, xid):
        self.counters.system_err += 1
        log.exception("%s.%s failed for %s", program.name, proc.name, ctx.client)
        return rpc.reply_accepted_error(xid, accept_stat.SYSTEM_ERR)
