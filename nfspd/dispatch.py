"""RPC dispatch: from a received message to the reply to send, with no sockets.

Services (NFS, MOUNT, portmapper) describe themselves as Programs made of
Procedures; the transports hand each received message to Dispatcher.handle()
with a CallContext saying where it came from, and send back what it returns.
"""

import logging
import zlib

from common import rpc
from nfspd.drc import DONE, IN_PROGRESS
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
    """

    __slots__ = ("client", "local", "transport", "cred", "xid", "call", "raw")

    def __init__(self, client, local, transport, call=None, raw=None):
        self.client = client
        self.local = local
        self.transport = transport
        self.call = call
        self.raw = raw
        self.cred = call.cred if call is not None else None
        self.xid = call.xid if call is not None else None

    def __repr__(self):
        return f"CallContext({self.transport} {self.client[0]}:{self.client[1]} xid={self.xid})"


class Procedure:
    """``handler`` is ``async def handler(ctx, args) -> result``: args decoded
    with ``args_type``, result encoded with ``res_type``. ``idempotent`` False
    puts the procedure's replies in the duplicate request cache."""

    __slots__ = ("name", "args_type", "res_type", "handler", "idempotent")

    def __init__(self, name, args_type, res_type, handler, idempotent=True):
        self.name = name
        self.args_type = args_type
        self.res_type = res_type
        self.handler = handler
        self.idempotent = idempotent


class Program:
    """``versions`` maps a version number to {procedure number: Procedure}."""

    def __init__(self, prog, name, versions):
        self.prog = prog
        self.name = name
        self.versions = versions
        self.low = min(versions)
        self.high = max(versions)


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


def args_checksum(args):
    """What the duplicate request cache compares besides xid: a retransmission
    carries the same arguments; a new call that reuses an xid does not."""
    return zlib.crc32(args)


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
        ctx.xid = call.xid
        xid = call.xid

        program = self.programs.get(call.prog)
        if program is None:
            c.prog_unavail += 1
            return rpc.reply_accepted_error(xid, accept_stat.PROG_UNAVAIL)
        procs = program.versions.get(call.vers)
        if procs is None:
            c.prog_mismatch += 1
            return rpc.reply_prog_mismatch(xid, program.low, program.high)
        proc = procs.get(call.proc)
        if proc is None:
            c.proc_unavail += 1
            return rpc.reply_accepted_error(xid, accept_stat.PROC_UNAVAIL)

        try:
            u = Unpacker(call.args)
            args = proc.args_type.unpack(u)
        except XdrError as e:
            c.garbage_args += 1
            log.debug("garbage args for %s.%s from %s: %s", program.name, proc.name, ctx.client, e)
            return rpc.reply_accepted_error(xid, accept_stat.GARBAGE_ARGS)

        drc_key = None
        if self.drc is not None and not proc.idempotent:
            drc_key = (ctx.transport, ctx.client, xid, call.prog, call.vers, call.proc,
                       call.cred_flavor, bytes(call.cred_body), args_checksum(call.args))
            state, cached = self.drc.lookup(drc_key)
            if state == DONE:
                c.drc_hits += 1
                return cached
            if state == IN_PROGRESS:
                # The original is still running; its reply will answer this
                # retransmission too (the kernel server drops these likewise).
                c.drc_in_progress += 1
                return None
            self.drc.begin(drc_key)

        reply = None
        try:
            result = await proc.handler(ctx, args)
            if result is NO_REPLY:
                reply = None
            else:
                p = Packer()
                p.pack_raw(rpc.success_head(xid))
                proc.res_type.pack(p, result)
                reply = p.get_buffer()
        except Exception:
            c.system_err += 1
            log.exception("%s.%s failed for %s", program.name, proc.name, ctx.client)
            reply = rpc.reply_accepted_error(xid, accept_stat.SYSTEM_ERR)
        finally:
            if drc_key is not None:
                self.drc.finish(drc_key, reply)
        return reply
