"""The iod as a pNFS data server for the files layout (RFC 8881 section 13):
what it answers to one RPC record, apart from how records arrive and replies
leave (iod/dsserver.py). One handler per operation, named as the RFC names it,
in one table; everything else is NFS4ERR_NOTSUPP.

What a data server must speak (RFC 8881 13.6) and what Linux 6.1 sends one:
EXCHANGE_ID (with EXCHGID4_FLAG_USE_PNFS_DS; the reply must carry it or the
client gives up the data server: nfs4_init_ds_session), CREATE_SESSION,
SEQUENCE, RECLAIM_COMPLETE (its state manager ends every new client id's
grace with one), BIND_CONN_TO_SESSION, DESTROY_SESSION, DESTROY_CLIENTID,
and PUTFH + READ / WRITE / COMMIT. No GETATTR: the client takes the data
server's lease time from the metaserver and sends DS WRITEs without one.

What the iod checks (common/dsfh.py, iod/dsrevoked.py):
- PUTFH: the handle verifies under the cluster key (else NFS4ERR_BADHANDLE)
  and is not revoked: its file purged, or minted before this iod started
  (NFS4ERR_STALE).
- READ, WRITE, COMMIT: the connection comes from the client the handle was
  minted for, and from a port below 1024 when the export is `secure`; WRITE
  needs the handle's write right. Otherwise NFS4ERR_ACCESS (Linux then does
  the I/O through the metaserver, whose exports decide).
- Stateids are not checked: the data server knows no opens or locks; the
  handle is the capability (RFC 8881 13.9.1 leaves that to the layout type's
  coupling, and this one is loose).

READ is sent zero-copy: handle() returns the reply as parts, the bytes up to
the READ's data and after it, and a FileRange the shell sends with
os.sendfile from the datafile, zeros where the datafile has none (holes and
past its end read as zeros, as the iod's own READ: the metaserver's layout
and the file size keep clients within the file). eof is never set: a data
server does not know where the file ends (other stripes are elsewhere). WRITE
data is a view into the received record, written with pwrite.

The fast path (_fast): nearly every call a client makes of a data server is
SEQUENCE, PUTFH, then READ, WRITE or COMMIT, and decoding it into objects,
running it through the operation table and encoding the results cost about
as much Python as the I/O itself (a Linux client sends one call per stripe
unit, 16 per MiB at nfspd's default 64 KiB). So that one shape is read with
struct at fixed offsets and its successful results packed straight to
bytes; anything else, or anything that does not read exactly as expected,
takes the generic path, and errors are answered by the generic _finish, so
the replies are the same bytes either way (tests/test_iod_nfs4ds.py holds
them to it). A handle's MAC is checked once: the handles that verified are
remembered (bounded, _VerifiedHandles); whether one is revoked is still
asked of iod/dsrevoked.py on every PUTFH, so a revocation takes effect at
once.

A COMPOUND whose SEQUENCE asked for its reply to be cached (Linux never does
for READ or WRITE) gets its READ data copied into the reply, within the
slot's cache size (else NFS4ERR_REP_TOO_BIG_TO_CACHE).

Threads: handle() runs in several I/O threads at once; the client and
session table is under one lock, held only around its own calls.
"""

import collections
import dataclasses
import errno
import struct
import threading

from common import dsfh, nfs4, rpc
from common.nfs4 import (
    NFS4_COMPOUND_MAX_OPS,
    NFS4_PROGRAM,
    NFS_V4,
    nfs_argop4,
    nfs_resop4,
    nfsstat4,
    stable_how4,
)
from common.nfs4 import nfs_opnum4 as O
from common.nfs4error import Nfs4Error
from common.nfs4sessions import ChannelAttrs, Replay
from common.runtime.resvport import PRIVILEGED_PORTS
from common.xdr import Packer, Unpacker, XdrError
from iod.dsrevoked import Stale
from iod.nfs4dsstate import DsState

MAX_OFF_T = (1 << 63) - 1        # the largest offset the kernel's pread/sendfile take
MAX_IO = 1 << 20                 # bytes of one READ or WRITE, as the iod protocol's
MINOR_VERSIONS = (1, 2)          # the client speaks to a data server its mount's minor version
# What a COMPOUND4res and the RPC reply head cost around READ data, at most
# (tag aside): a READ reply must fit the session's ca_maxresponsesize.
READ_REPLY_OVERHEAD = 512
SESSIONLESS = frozenset((O.OP_EXCHANGE_ID, O.OP_CREATE_SESSION, O.OP_DESTROY_SESSION,
                         O.OP_DESTROY_CLIENTID, O.OP_BIND_CONN_TO_SESSION))
_RECORD_MARK = struct.Struct(">I")
_READ_HEAD = struct.Struct(">IiII")    # opnum, status, eof, data length
_LAST_FRAGMENT = 0x80000000
VERIFIED_HANDLES = 4096          # handles whose MAC is remembered as checked

# The fast path's shapes (RFC 8881 XDR): the COMPOUND4args head with an empty
# tag and SEQUENCE4args; then PUTFH's opnum and handle length; then the READ,
# WRITE or COMMIT arguments.
_FAST_HEAD = struct.Struct(">IIII16sIIII")   # taglen, minorversion, count, opnum, sessionid,
#                                              sequenceid, slotid, highest_slotid, cachethis
_FAST_PUTFH = struct.Struct(">II")           # opnum, handle length
_FAST_READ = struct.Struct(">I16xQI")        # opnum, stateid, offset, count
_FAST_WRITE = struct.Struct(">I16xQII")      # opnum, stateid, offset, stable, data length
_FAST_COMMIT = struct.Struct(">IQI")         # opnum, offset, count
_U32 = struct.Struct(">I")
# Replies: COMPOUND4res head (status, empty tag, count) and the results.
_FAST_REPLY_HEAD = struct.pack(">iII", 0, 0, 3)
_SEQUENCE_OK = struct.Struct(">Ii16sIIIII")
_PUTFH_OK = struct.pack(">Ii", O.OP_PUTFH, 0)
_WRITE_OK = struct.Struct(">IiII8s")         # opnum, status, count, committed, verifier
_COMMIT_OK = struct.Struct(">Ii8s")


@dataclasses.dataclass(frozen=True)
class Connection:
    """Who a record came from: ``id`` tells connections apart (session binding)."""
    id: object
    ip: str
    port: int


class FileRange:
    """``count`` bytes of a datafile from ``offset``: what the pinned file
    (DataStore.pin, or None for no datafile) has there, zeros past it."""
    __slots__ = ("pinned", "offset", "count")

    def __init__(self, pinned, offset, count):
        self.pinned, self.offset, self.count = pinned, offset, count


class Reply:
    """An RPC record to send: ``parts`` are bytes and FileRanges, in order.
    release() lets go of the datafiles once it is sent (or given up)."""
    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts

    def release(self):
        for part in self.parts:
            if isinstance(part, FileRange) and part.pinned is not None:
                part.pinned.close()
                part.pinned = None

    def __len__(self):
        return sum(p.count if isinstance(p, FileRange) else len(p) for p in self.parts)


def _record(parts):
    size = sum(p.count if isinstance(p, FileRange) else len(p) for p in parts)
    first = _RECORD_MARK.pack(_LAST_FRAGMENT | size)
    if parts and not isinstance(parts[0], FileRange):
        return Reply([first + parts[0]] + parts[1:])
    return Reply([first] + parts)


def _release(results):
    for result in results:
        if isinstance(result, _ReadData) and isinstance(result.data, FileRange):
            Reply([result.data]).release()


def _rpc_error(message):
    return _record([message])


class _ReadData:
    """A READ's result before it is laid out: its data a FileRange (zero-copy)
    or bytes (a reply to be cached)."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class _Compound:
    __slots__ = ("conn", "now", "fh", "fh_bytes", "slot", "cachethis", "principal", "count",
                 "size")

    def __init__(self, conn, now, principal, count, size):
        self.conn, self.now, self.principal = conn, now, principal
        self.count, self.size = count, size       # operations, bytes of the RPC message
        self.fh = None
        self.fh_bytes = None
        self.slot = None
        self.cachethis = False


class _VerifiedHandles:
    """Handle bytes -> the DsHandle they verified to, under which key, and the
    last connection address it was found to be for. A cache of pure answers
    (dsfh.verify, DsHandle.client_matches), bounded: the oldest goes first.
    Whether a handle is revoked is not cached. Safe across threads: each
    step is one dict operation (the GIL), and losing a race only costs a
    second verification."""

    def __init__(self, keys, limit=VERIFIED_HANDLES):
        self.keys = keys
        self.limit = limit
        self._entries = collections.OrderedDict()

    def verify(self, fh):
        """The DsHandle of ``fh``, or DsHandleError (as dsfh.verify)."""
        entry = self._entries.get(fh)
        if entry is not None and self.keys.by_id.get(fh[1]) is entry[0]:
            return entry[1]
        handle = dsfh.verify(self.keys, fh)
        self._remember(fh, (self.keys.by_id.get(fh[1]), handle, None))
        return handle

    def client_matches(self, fh_bytes, handle, ip):
        entry = self._entries.get(fh_bytes)
        if entry is not None and entry[1] is handle and entry[2] == ip:
            return True
        if not handle.client_matches(ip):
            return False
        if entry is not None and entry[1] is handle:
            self._entries[fh_bytes] = (entry[0], handle, ip)
        return True

    def _remember(self, fh, entry):
        # An OrderedDict: its oldest entry comes off in constant time, where a
        # dict's first is found past the slots of every entry deleted before
        # it (nfspd/fs/handles.py's _bounded_put measured it).
        entries = self._entries
        while len(entries) >= self.limit:
            try:
                entries.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                break
        entries[fh] = entry


def _channel(attrs):
    return ChannelAttrs(attrs.ca_headerpadsize, attrs.ca_maxrequestsize, attrs.ca_maxresponsesize,
                        attrs.ca_maxresponsesize_cached, attrs.ca_maxoperations,
                        attrs.ca_maxrequests, attrs.ca_rdma_ird[0] if attrs.ca_rdma_ird else None)


def _channel4(ch):
    return nfs4.channel_attrs4(ch.headerpadsize, ch.maxrequestsize, ch.maxresponsesize,
                               ch.maxresponsesize_cached, ch.maxoperations, ch.maxrequests,
                               [] if ch.rdma_ird is None else [ch.rdma_ird])


def _principal(call):
    return "none" if call.cred is None else f"sys:{call.cred.uid}"


def _decode_write(u):
    """WRITE4args with its data a view into the record (no copy)."""
    stateid = nfs4.stateid4.unpack(u)
    offset = u.unpack_uhyper()
    stable = u.unpack_uint()
    if stable > stable_how4.FILE_SYNC4:
        raise XdrError(f"stable_how4 {stable}")
    n = u.unpack_uint()
    start = u.pos
    end = start + n
    if end + (-n & 3) > len(u.data):
        raise XdrError(f"WRITE of {n} bytes in a record with {len(u.data) - start}")
    u.pos = end + (-n & 3)
    return nfs4.WRITE4args(stateid, offset, stable_how4(stable), u.data[start:end])


def decode_compound(args):
    """(tag, minorversion, [nfs_argop4]) as common/nfs4.decode_compound decodes
    them (an operation that does not decode ends the list, see there), but a
    WRITE's data stays a view into ``args``. The list is None for a minor
    version this server does not speak; XdrError if the head does not decode."""
    u = Unpacker(args if isinstance(args, memoryview) else memoryview(args))
    tag = nfs4.utf8str_cs.unpack(u)
    minorversion = u.unpack_uint()
    count = u.unpack_uint()
    if minorversion not in MINOR_VERSIONS:
        return tag, minorversion, None
    if count * 4 > u.remaining():
        raise XdrError(f"COMPOUND of {count} operations in {u.remaining()} bytes")
    if count > NFS4_COMPOUND_MAX_OPS:
        # The first operation only: a SEQUENCE answers for the whole.
        first = nfs4.decode_argop(u, minorversion)
        raise nfs4.CompoundTooLong(nfs4.COMPOUND4args(tag, minorversion, [first]), count)
    ops = []
    for _ in range(count):
        if u.remaining() >= 4 and _RECORD_MARK.unpack_from(u.data, u.pos)[0] == O.OP_WRITE:
            u.pos += 4
            try:
                op = nfs_argop4(O.OP_WRITE, _decode_write(u))
            except XdrError as e:
                op = nfs_argop4(O.OP_WRITE, e)
        else:
            op = nfs4.decode_argop(u, minorversion)
        ops.append(op)
        if nfs4.argop_status(op) is not None:
            break
    return tag, minorversion, ops


def _parse_fast(args):
    """(sessionid, sequenceid, slotid, handle, opnum, a, b, data) of a COMPOUND
    of SEQUENCE (not asking for its reply to be cached), PUTFH and READ
    (a, b: offset, count), WRITE (offset, stable; data a view into ``args``)
    or COMMIT (offset, count), with an empty tag and a minor version this
    server speaks; None for anything else (the generic path decides). Bytes
    after the last operation are ignored, as decode_compound ignores them."""
    n = len(args)
    if n < _FAST_HEAD.size + _FAST_PUTFH.size:
        return None
    taglen, minorversion, count, opnum, sessionid, sequenceid, slotid, _, cachethis = \
        _FAST_HEAD.unpack_from(args, 0)
    if (taglen or count != 3 or opnum != O.OP_SEQUENCE or cachethis
            or minorversion not in MINOR_VERSIONS):
        return None
    pos = _FAST_HEAD.size
    opnum, fhlen = _FAST_PUTFH.unpack_from(args, pos)
    pos += _FAST_PUTFH.size
    if opnum != O.OP_PUTFH or fhlen > nfs4.NFS4_FHSIZE:
        return None
    fh = bytes(args[pos:pos + fhlen])
    pos += fhlen + (-fhlen & 3)
    if pos + 4 > n:
        return None
    opnum = _U32.unpack_from(args, pos)[0]
    if opnum == O.OP_READ and pos + _FAST_READ.size <= n:
        _, offset, count = _FAST_READ.unpack_from(args, pos)
        return sessionid, sequenceid, slotid, fh, opnum, offset, count, None
    if opnum == O.OP_WRITE and pos + _FAST_WRITE.size <= n:
        _, offset, stable, length = _FAST_WRITE.unpack_from(args, pos)
        start = pos + _FAST_WRITE.size
        if stable > stable_how4.FILE_SYNC4 or start + length + (-length & 3) > n:
            return None
        return sessionid, sequenceid, slotid, fh, opnum, offset, stable, args[start:start + length]
    if opnum == O.OP_COMMIT and pos + _FAST_COMMIT.size <= n:
        _, offset, count = _FAST_COMMIT.unpack_from(args, pos)
        return sessionid, sequenceid, slotid, fh, opnum, offset, count, None
    return None


class DataServer:
    """The data server of one iod. ``store`` is its DataStore, ``revoked``
    its Revoked, ``verifier`` the iod's write verifier (the one its own
    protocol answers with, so unstable writes are judged alike on both
    paths); ``store_usable(now)`` the engine's check that the store is still
    the one opened; ``server_id`` (bytes) tells this data server from every
    other to clients (its store id: a client seeing two data servers with one
    id would take them for one and trunk their sessions)."""

    def __init__(self, keys, store, revoked, *, verifier, server_id, boot_epoch,
                 store_usable=lambda now: True, counters=None, errors=None):
        self.keys = keys
        self.store = store
        self.revoked = revoked
        self.verifier = verifier
        self.server_id = server_id
        self.store_usable = store_usable
        self.counters = counters
        self.state = DsState(boot_epoch=boot_epoch)
        self.handles = _VerifiedHandles(keys)
        self._lock = threading.Lock()
        self._handlers = {
            O.OP_EXCHANGE_ID: self.EXCHANGE_ID, O.OP_CREATE_SESSION: self.CREATE_SESSION,
            O.OP_DESTROY_SESSION: self.DESTROY_SESSION,
            O.OP_DESTROY_CLIENTID: self.DESTROY_CLIENTID,
            O.OP_BIND_CONN_TO_SESSION: self.BIND_CONN_TO_SESSION, O.OP_SEQUENCE: self.SEQUENCE,
            O.OP_RECLAIM_COMPLETE: self.RECLAIM_COMPLETE, O.OP_PUTFH: self.PUTFH,
            O.OP_READ: self.READ, O.OP_WRITE: self.WRITE, O.OP_COMMIT: self.COMMIT,
        }

    def _count(self, name, n=1):
        if self.counters is not None:
            self.counters.add(name, n)

    # -- RPC ------------------------------------------------------------------------

    def handle(self, record, conn, now):
        """The Reply to one RPC record from ``conn`` (None: nothing to send).
        ``now``: monotonic seconds."""
        try:
            call = rpc.decode_call(record)
        except rpc.RpcError as e:
            self._count("ds_dropped_malformed")
            return None if e.reply is None else _rpc_error(e.reply)
        if call.prog != NFS4_PROGRAM:
            return _rpc_error(rpc.reply_accepted_error(call.xid, rpc.accept_stat.PROG_UNAVAIL))
        if call.vers != NFS_V4:
            return _rpc_error(rpc.reply_prog_mismatch(call.xid, NFS_V4, NFS_V4))
        if call.proc == 0:
            return _rpc_error(rpc.reply_success(call.xid))
        if call.proc != 1:
            return _rpc_error(rpc.reply_accepted_error(call.xid, rpc.accept_stat.PROC_UNAVAIL))
        fast = _parse_fast(call.args)
        if fast is not None:
            return self._fast(call.xid, fast, conn, now, len(record))
        try:
            tag, _, ops = decode_compound(call.args)
        except nfs4.CompoundTooLong as e:
            # NFS4ERR_TOO_MANY_OPS is SEQUENCE's to say (RFC 8881 18.46.3),
            # whichever operation comes first.
            first = e.compound.argarray[0].disc
            status = nfsstat4.NFS4ERR_TOO_MANY_OPS
            return self._finish(call.xid, e.compound.tag, [nfs4.resop_error(first, status)],
                                status)
        except XdrError:
            return _rpc_error(rpc.reply_accepted_error(call.xid, rpc.accept_stat.GARBAGE_ARGS))
        if ops is None:
            return self._finish(call.xid, tag, [], nfsstat4.NFS4ERR_MINOR_VERS_MISMATCH)
        self._count("ds_compounds")
        c = _Compound(conn, now, _principal(call), len(ops), len(record))
        try:
            return self._compound(call.xid, tag, ops, c)
        finally:
            if c.slot is not None:
                # complete() was called with the reply to cache if there was
                # one; this covers every other way out.
                with self._lock:
                    c.slot.complete(None)

    def _fast(self, xid, fast, conn, now, size):
        """The COMPOUND _parse_fast read, as _compound would run it."""
        sessionid, sequenceid, slotid, fh, op, a, b, data = fast
        self._count("ds_compounds")
        c = _Compound(conn, now, None, 3, size)
        results = []
        op_now = O.OP_SEQUENCE
        try:
            status = nfsstat4.NFS4_OK
            try:
                seq = self._sequence(sessionid, sequenceid, slotid, False, c)
                if isinstance(seq, Replay):
                    self._count("ds_replays")
                    return _record([rpc.success_head(xid) + seq.reply])
                results.append(_SEQUENCE_OK.pack(
                    O.OP_SEQUENCE, 0, seq.sessionid, seq.sequenceid, seq.slotid,
                    seq.highest_slotid, seq.target_highest_slotid, seq.status_flags))
                op_now = O.OP_PUTFH
                self._putfh(fh, c)
                results.append(_PUTFH_OK)
                op_now = op
                if op == O.OP_READ:
                    results.append(self._read(c, a, b))
                elif op == O.OP_WRITE:
                    count, committed = self._write(c, a, b, data)
                    results.append(_WRITE_OK.pack(O.OP_WRITE, 0, count, committed, self.verifier))
                else:
                    self._commit(c)
                    results.append(_COMMIT_OK.pack(O.OP_COMMIT, 0, self.verifier))
            except Nfs4Error as e:
                status = e.status
                results.append(nfs4.resop_error(op_now, status))
            if status == nfsstat4.NFS4_OK and op == O.OP_READ:
                return self._fast_read_reply(xid, results)
            return self._finish(xid, b"", results, status, c)
        except BaseException:
            _release(results)
            raise
        finally:
            if c.slot is not None:
                with self._lock:
                    c.slot.complete(None)

    def _fast_read_reply(self, xid, results):
        data = results[2].data
        count = data.count if isinstance(data, FileRange) else len(data)
        head = (rpc.success_head(xid) + _FAST_REPLY_HEAD + results[0] + _PUTFH_OK
                + _READ_HEAD.pack(O.OP_READ, 0, 0, count))
        if isinstance(data, FileRange):
            return _record([head, data, bytes(-count & 3)] if count & 3 else [head, data])
        return _record([head + data + bytes(-count & 3)])

    def _compound(self, xid, tag, ops, c):
        results = []
        try:
            return self._run_all(xid, tag, ops, c, results)
        except BaseException:
            # A bug in a later operation must not keep an earlier READ's
            # datafile pinned for ever.
            _release(results)
            raise

    def _run_all(self, xid, tag, ops, c, results):
        status = nfsstat4.NFS4_OK
        for i, argop in enumerate(ops):
            op = argop.disc
            status = nfs4.argop_status(argop)
            if status is None:
                status, result = self._run(i, len(ops), argop, c)
            else:
                result = None
            if isinstance(result, Replay):
                self._count("ds_replays")
                _release(results)
                return _record([rpc.success_head(xid) + result.reply])
            if result is None:
                result = nfs4.resop_error(op, status)
            results.append(result)
            if status != nfsstat4.NFS4_OK:
                break
        return self._finish(xid, tag, results, status, c)

    def _run(self, i, count, argop, c):
        """(status, result) of operation ``i`` of ``count``."""
        op = argop.disc
        if i == 0 and op != O.OP_SEQUENCE and op not in SESSIONLESS:
            return nfsstat4.NFS4ERR_OP_NOT_IN_SESSION, None
        if i == 0 and op in SESSIONLESS and count > 1:
            return nfsstat4.NFS4ERR_NOT_ONLY_OP, None
        if i > 0 and op == O.OP_SEQUENCE:
            return nfsstat4.NFS4ERR_SEQUENCE_POS, None
        handler = self._handlers.get(op)
        if handler is None:
            self._count("ds_notsupp")
            return nfsstat4.NFS4ERR_NOTSUPP, None
        try:
            return nfsstat4.NFS4_OK, handler(argop.body, c)
        except Nfs4Error as e:
            return e.status, None

    def _finish(self, xid, tag, results, status, c=None):
        head = Packer()
        head.pack_int(status)
        nfs4.utf8str_cs.pack(head, tag)
        head.pack_uint(len(results))
        parts = [head.get_buffer()]
        for result in results:
            if isinstance(result, _ReadData):
                data = result.data
                count = data.count if isinstance(data, FileRange) else len(data)
                parts.append(_READ_HEAD.pack(O.OP_READ, 0, 0, count))
                parts.append(data)
                parts.append(bytes(-count & 3))
            elif isinstance(result, bytes):       # packed by the fast path
                parts.append(result)
            else:
                parts.append(nfs4.encode_resop(result))
        body = []
        for part in parts:
            if isinstance(part, FileRange):
                body.append(part)
            elif body and not isinstance(body[-1], FileRange):
                body[-1] += part
            else:
                body.append(bytes(part))
        slot = c.slot if c is not None else None
        if slot is not None and (c.cachethis or len(results) == 1) and len(body) == 1:
            # The COMPOUND4res is cached; a retry gets it under its own xid.
            with self._lock:
                slot.complete(body[0])
        return _record([rpc.success_head(xid) + body[0]] + body[1:])

    # -- sessions and client ids ------------------------------------------------------

    def EXCHANGE_ID(self, args, c):
        if args.eia_state_protect.disc != nfs4.state_protect_how4.SP4_NONE:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOTSUPP)
        owner = args.eia_clientowner
        with self._lock:
            r = self.state.exchange_id(owner.co_ownerid, owner.co_verifier, c.principal,
                                       args.eia_flags, c.now)
        return nfs_resop4(O.OP_EXCHANGE_ID, nfs4.EXCHANGE_ID4res(nfsstat4.NFS4_OK, nfs4.EXCHANGE_ID4resok(
            r.clientid, r.sequenceid, r.flags,
            nfs4.state_protect4_r(nfs4.state_protect_how4.SP4_NONE),
            nfs4.server_owner4(0, self.server_id), self.server_id, [])))

    def CREATE_SESSION(self, args, c):
        with self._lock:
            r = self.state.create_session(
                args.csa_clientid, args.csa_sequence, args.csa_flags,
                _channel(args.csa_fore_chan_attrs), _channel(args.csa_back_chan_attrs),
                c.principal, c.now, connection=c.conn.id)
        return nfs_resop4(O.OP_CREATE_SESSION, nfs4.CREATE_SESSION4res(
            nfsstat4.NFS4_OK, nfs4.CREATE_SESSION4resok(r.sessionid, r.sequenceid, r.flags,
                                                        _channel4(r.fore), _channel4(r.back))))

    def DESTROY_SESSION(self, args, c):
        with self._lock:
            self.state.destroy_session(args.dsa_sessionid)
        return nfs_resop4(O.OP_DESTROY_SESSION, nfs4.DESTROY_SESSION4res(nfsstat4.NFS4_OK))

    def DESTROY_CLIENTID(self, args, c):
        with self._lock:
            self.state.destroy_clientid(args.dca_clientid)
        return nfs_resop4(O.OP_DESTROY_CLIENTID, nfs4.DESTROY_CLIENTID4res(nfsstat4.NFS4_OK))

    def BIND_CONN_TO_SESSION(self, args, c):
        with self._lock:
            direction = self.state.bind_conn_to_session(args.bctsa_sessid, c.conn.id,
                                                        int(args.bctsa_dir), c.now)
        return nfs_resop4(O.OP_BIND_CONN_TO_SESSION, nfs4.BIND_CONN_TO_SESSION4res(
            nfsstat4.NFS4_OK, nfs4.BIND_CONN_TO_SESSION4resok(
                args.bctsa_sessid, nfs4.channel_dir_from_server4(direction), False)))

    def SEQUENCE(self, args, c):
        outcome = self._sequence(args.sa_sessionid, args.sa_sequenceid, args.sa_slotid,
                                 args.sa_cachethis, c)
        if isinstance(outcome, Replay):
            return outcome
        return nfs_resop4(O.OP_SEQUENCE, nfs4.SEQUENCE4res(nfsstat4.NFS4_OK, nfs4.SEQUENCE4resok(
            outcome.sessionid, outcome.sequenceid, outcome.slotid, outcome.highest_slotid,
            outcome.target_highest_slotid, outcome.status_flags)))

    def _sequence(self, sessionid, sequenceid, slotid, cachethis, c):
        """The SlotHandle (also c.slot) or the Replay of a SEQUENCE."""
        with self._lock:
            outcome = self.state.sequence(sessionid, sequenceid, slotid, c.now,
                                          connection=c.conn.id)
        if isinstance(outcome, Replay):
            return outcome
        c.slot = outcome
        c.cachethis = bool(cachethis)
        fore = outcome.session.fore
        # Checked once the slot is taken, as RFC 8881 18.46.3 orders it: the
        # slot's seqid advances, the client sees the error on this request.
        if c.count > fore.maxoperations:
            raise Nfs4Error(nfsstat4.NFS4ERR_TOO_MANY_OPS)
        if c.size > fore.maxrequestsize:
            raise Nfs4Error(nfsstat4.NFS4ERR_REQ_TOO_BIG)
        return outcome

    def RECLAIM_COMPLETE(self, args, c):
        with self._lock:
            self.state.reclaim_complete(c.slot.clientid, args.rca_one_fs)
        return nfs_resop4(O.OP_RECLAIM_COMPLETE, nfs4.RECLAIM_COMPLETE4res(nfsstat4.NFS4_OK))

    def connection_closed(self, conn):
        with self._lock:
            self.state.connection_closed(conn.id)

    # -- the file ---------------------------------------------------------------------

    def PUTFH(self, args, c):
        self._putfh(bytes(args.object), c)
        return nfs_resop4(O.OP_PUTFH, nfs4.PUTFH4res(nfsstat4.NFS4_OK))

    def _putfh(self, fh, c):
        try:
            handle = self.handles.verify(fh)
        except dsfh.DsHandleError as e:
            self._count("ds_refused_badhandle")
            raise Nfs4Error(e.status) from None
        if self.revoked.stale(handle):
            self._count("ds_refused_stale")
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE)
        c.fh = handle
        c.fh_bytes = fh

    def _file(self, c, write=False):
        """The current handle, if this connection may do this with it."""
        fh = c.fh
        if fh is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_NOFILEHANDLE)
        if not self.handles.client_matches(c.fh_bytes, fh, c.conn.ip):
            self._count("ds_refused_client")
            raise Nfs4Error(nfsstat4.NFS4ERR_ACCESS)
        if fh.secure and c.conn.port >= PRIVILEGED_PORTS:
            self._count("ds_refused_insecure_port")
            raise Nfs4Error(nfsstat4.NFS4ERR_ACCESS)
        if write and not fh.may_write:
            self._count("ds_refused_read_only")
            raise Nfs4Error(nfsstat4.NFS4ERR_ACCESS)
        if not self.store_usable(c.now):
            raise Nfs4Error(nfsstat4.NFS4ERR_IO)
        return fh

    def READ(self, args, c):
        return self._read(c, args.offset, args.count)

    def _read(self, c, offset, count):
        fh = self._file(c)
        count = min(count, MAX_IO)
        if c.slot is not None:
            count = min(count, max(0, c.slot.session.fore.maxresponsesize - READ_REPLY_OVERHEAD))
        # The protocol's offsets reach 2^64 - 1, the kernel's off_t only
        # 2^63 - 1 (pread and sendfile would raise): past it, INVAL, as Linux
        # nfsd answers a READ at or past OFFSET_MAX.
        if offset >= MAX_OFF_T:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        count = min(count, MAX_OFF_T - offset)
        self._count("ds_read")
        self._count("ds_read_bytes", count)
        if c.cachethis:
            if count + READ_REPLY_OVERHEAD > c.slot.cachethis_limit:
                raise Nfs4Error(nfsstat4.NFS4ERR_REP_TOO_BIG_TO_CACHE)
            data = _io(self.store.read, fh.ino, fh.seed, offset, count)
            return _ReadData(data + bytes(count - len(data)))
        pinned = _io(self.store.pin, fh.ino, fh.seed)
        return _ReadData(FileRange(pinned, offset, count))

    def WRITE(self, args, c):
        count, committed = self._write(c, args.offset, args.stable, args.data)
        return nfs_resop4(O.OP_WRITE, nfs4.WRITE4res(nfsstat4.NFS4_OK, nfs4.WRITE4resok(
            count, stable_how4(committed), self.verifier)))

    def _write(self, c, offset, stable, data):
        """(count, committed) of a WRITE."""
        fh = self._file(c, write=True)
        if len(data) > MAX_IO:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        if offset + len(data) > MAX_OFF_T:
            raise Nfs4Error(nfsstat4.NFS4ERR_FBIG)
        sync = stable != stable_how4.UNSTABLE4
        try:
            # Checked again as it lands: a REVOKE may have come since PUTFH,
            # and once the iod has acknowledged one, the metaserver may cut
            # the file (iod/dsrevoked.py).
            with self.revoked.writing(fh):
                _io(self.store.write, fh.ino, fh.seed, offset, data, sync=sync)
        except Stale:
            self._count("ds_refused_stale")
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE) from None
        self._count("ds_write")
        self._count("ds_write_bytes", len(data))
        # A stable WRITE is DATA_SYNC4, never FILE_SYNC4: the data is on the
        # disk, but the file's size and mtime live on the metaserver, which
        # learns them only from the client's LAYOUTCOMMIT. FILE_SYNC4 from a
        # data server tells a files-layout client that none is needed (RFC
        # 5661 erratum 2751; Linux's filelayout_set_layoutcommit), and a small
        # file written in one stable WRITE would keep size 0 on the metaserver.
        committed = stable_how4.DATA_SYNC4 if sync else stable_how4.UNSTABLE4
        return len(data), committed

    def COMMIT(self, args, c):
        self._commit(c)
        return nfs_resop4(O.OP_COMMIT, nfs4.COMMIT4res(nfsstat4.NFS4_OK,
                                                       nfs4.COMMIT4resok(self.verifier)))

    def _commit(self, c):
        fh = self._file(c)
        _io(self.store.commit, fh.ino, fh.seed)
        self._count("ds_commit")


_ERRNO_STATUS = {errno.ENOSPC: nfsstat4.NFS4ERR_NOSPC, errno.EDQUOT: nfsstat4.NFS4ERR_DQUOT,
                 errno.EFBIG: nfsstat4.NFS4ERR_FBIG, errno.EROFS: nfsstat4.NFS4ERR_ROFS}


def _io(fn, *args, **kw):
    """A store call, its OSError the NFS4ERR a client understands."""
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise Nfs4Error(_ERRNO_STATUS.get(e.errno, nfsstat4.NFS4ERR_IO)) from None
