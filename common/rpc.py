"""ONC RPC version 2 messages (RFC 5531), sans-IO.

Server side: decode_call() turns a datagram or TCP record into a Call (header,
credential, and the undecoded procedure arguments); the reply_* functions build
complete reply messages. Client side: encode_call() and decode_reply().

Names follow RFC 5531 section 9 so the code can be checked against it.
"""

import enum
import struct

from common.chunkqueue import ChunkQueue
from common.xdr import Packer, Unpacker, XdrError

RPC_VERSION = 2

_head = struct.Struct(">IIIIII")  # xid, mtype, rpcvers, prog, vers, proc
_u32 = struct.Struct(">I")


class msg_type(enum.IntEnum):
    CALL = 0
    REPLY = 1


class reply_stat(enum.IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class accept_stat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class reject_stat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class auth_stat(enum.IntEnum):
    AUTH_OK = 0
    AUTH_BADCRED = 1
    AUTH_REJECTEDCRED = 2
    AUTH_BADVERF = 3
    AUTH_REJECTEDVERF = 4
    AUTH_TOOWEAK = 5
    AUTH_INVALIDRESP = 6
    AUTH_FAILED = 7


class auth_flavor(enum.IntEnum):
    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


AUTH_UNIX = auth_flavor.AUTH_SYS  # the older name, still what most docs say
MAX_AUTH_BYTES = 400  # opaque_auth body<400>
AUTHSYS_MAX_MACHINENAME = 255
AUTHSYS_MAX_GIDS = 16


class RpcError(ValueError):
    """A message that cannot be handled; ``reply`` is the encoded reply to send
    back, or None when the message must be dropped (its xid is unknown or it is
    not a CALL)."""

    def __init__(self, reason, reply=None):
        super().__init__(reason)
        self.reply = reply


class AuthSys:
    """AUTH_SYS (AUTH_UNIX) credential body: authsys_parms in RFC 5531 appendix A."""

    __slots__ = ("stamp", "machinename", "uid", "gid", "gids", "_hash")

    def __init__(self, stamp, machinename, uid, gid, gids):
        self.stamp = stamp
        self.machinename = machinename
        self.uid = uid
        self.gid = gid
        self.gids = tuple(gids)
        self._hash = None

    def __eq__(self, other):
        return isinstance(other, AuthSys) and self._key() == other._key()

    def __hash__(self):
        # Servers key caches on credentials, call after call; never changed
        # once made, so the hash is computed once.
        h = self._hash
        if h is None:
            h = self._hash = hash(self._key())
        return h

    def _key(self):
        return (self.stamp, self.machinename, self.uid, self.gid, self.gids)

    def __repr__(self):
        return f"AuthSys(uid={self.uid}, gid={self.gid}, gids={self.gids}, machine={self.machinename!r})"

    def encode(self):
        p = Packer()
        p.pack_uint(self.stamp)
        p.pack_opaque(self.machinename)
        p.pack_uint(self.uid)
        p.pack_uint(self.gid)
        p.pack_uint(len(self.gids))
        for g in self.gids:
            p.pack_uint(g)
        return p.get_buffer()

    @classmethod
    def decode(cls, body):
        """Strict: out-of-spec credentials (over 16 gids, a machine name over 255
        bytes, trailing bytes) raise XdrError, which the server answers with
        AUTH_BADCRED."""
        u = Unpacker(body)
        stamp = u.unpack_uint()
        machinename = u.unpack_opaque(AUTHSYS_MAX_MACHINENAME)
        uid = u.unpack_uint()
        gid = u.unpack_uint()
        n = u.unpack_uint()
        if n > AUTHSYS_MAX_GIDS:
            raise XdrError(f"AUTH_SYS with {n} gids (at most {AUTHSYS_MAX_GIDS})")
        gids = [u.unpack_uint() for _ in range(n)]
        u.done()
        return cls(stamp, machinename, uid, gid, gids)


_authsys_memo = {}
_AUTHSYS_MEMO_MAX = 4096


def _authsys_cached(body):
    """A client sends the same credential bytes call after call: decoding them
    once saves about a tenth of a GETATTR's cost. Pure memoisation, bounded."""
    cred = _authsys_memo.get(body)
    if cred is None:
        cred = AuthSys.decode(body)
        if len(_authsys_memo) >= _AUTHSYS_MEMO_MAX:
            _authsys_memo.clear()
        _authsys_memo[body] = cred
    return cred


class Call:
    """A decoded CALL. ``args`` is a memoryview of the procedure arguments;
    ``cred`` is an AuthSys or None for AUTH_NONE."""

    __slots__ = ("xid", "prog", "vers", "proc", "cred_flavor", "cred_body", "cred",
                 "verf_flavor", "verf_body", "args")

    def __repr__(self):
        return f"Call(xid={self.xid:#x}, prog={self.prog}, vers={self.vers}, proc={self.proc}, cred={self.cred!r})"


def _accepted_head(xid, stat, verf_flavor=auth_flavor.AUTH_NONE, verf_body=b""):
    p = Packer()
    p.pack_uint(xid)
    p.pack_uint(msg_type.REPLY)
    p.pack_uint(reply_stat.MSG_ACCEPTED)
    p.pack_uint(verf_flavor)
    p.pack_opaque(verf_body)
    p.pack_uint(stat)
    return p


def success_head(xid):
    """The 24 bytes that precede a SUCCESS reply's result (AUTH_NONE verifier);
    constant but for the xid, so built once."""
    return _u32.pack(xid) + _SUCCESS_HEAD_TAIL


def reply_success(xid, body=b""):
    """A SUCCESS reply; ``body`` is the encoded result."""
    return success_head(xid) + body


_SUCCESS_HEAD_TAIL = bytes(_accepted_head(0, accept_stat.SUCCESS).buf[4:])


def reply_accepted_error(xid, stat):
    """PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS or SYSTEM_ERR."""
    assert stat in (accept_stat.PROG_UNAVAIL, accept_stat.PROC_UNAVAIL,
                    accept_stat.GARBAGE_ARGS, accept_stat.SYSTEM_ERR)
    return _accepted_head(xid, stat).get_buffer()


def reply_prog_mismatch(xid, low, high):
    p = _accepted_head(xid, accept_stat.PROG_MISMATCH)
    p.pack_uint(low)
    p.pack_uint(high)
    return p.get_buffer()


def reply_rpc_mismatch(xid, low=RPC_VERSION, high=RPC_VERSION):
    p = Packer()
    for v in (xid, msg_type.REPLY, reply_stat.MSG_DENIED, reject_stat.RPC_MISMATCH, low, high):
        p.pack_uint(v)
    return p.get_buffer()


def reply_auth_error(xid, stat):
    p = Packer()
    for v in (xid, msg_type.REPLY, reply_stat.MSG_DENIED, reject_stat.AUTH_ERROR, stat):
        p.pack_uint(v)
    return p.get_buffer()


_call_fixed = struct.Struct(">IIIIIIII")  # xid .. proc, cred flavor, cred length
_auth_head = struct.Struct(">II")  # flavor, length


def decode_call(data):
    """Decode a CALL message. Raises RpcError whose ``reply`` says what to answer
    (RPC_MISMATCH, AUTH_ERROR) or None when the message is to be dropped."""
    # Every call a client makes has this shape; decoding it with two struct
    # calls instead of an Unpacker halves the cost. Anything else, valid or
    # not, goes the careful way below.
    n = len(data)
    if n >= 40:
        xid, mtype, rpcvers, prog, vers, proc, cflav, clen = _call_fixed.unpack_from(data, 0)
        if mtype == 0 and rpcvers == RPC_VERSION and cflav <= 1 and clen <= MAX_AUTH_BYTES:
            vpos = 32 + clen + (-clen & 3)
            if vpos + 8 <= n:
                vflav, vlen = _auth_head.unpack_from(data, vpos)
                apos = vpos + 8 + vlen + (-vlen & 3)
                if vflav <= 1 and vlen <= MAX_AUTH_BYTES and apos <= n:
                    body = data[32:32 + clen]
                    if type(body) is not bytes:
                        body = bytes(body)
                    cred = None
                    if cflav:
                        cred = _authsys_memo.get(body)
                    if cred is not None or not cflav:
                        c = Call()
                        c.xid, c.prog, c.vers, c.proc = xid, prog, vers, proc
                        c.cred_flavor, c.cred_body, c.cred = cflav, body, cred
                        c.verf_flavor, c.verf_body = vflav, bytes(data[vpos + 8:vpos + 8 + vlen])
                        c.args = memoryview(data)[apos:]
                        return c
    return _decode_call(data)


def _decode_call(data):
    if len(data) < 24:
        raise RpcError(f"short message ({len(data)} bytes)")
    xid, mtype, rpcvers, prog, vers, proc = _head.unpack_from(data, 0)
    if mtype != msg_type.CALL:
        raise RpcError(f"not a CALL (msg_type {mtype})")
    if rpcvers != RPC_VERSION:
        raise RpcError(f"RPC version {rpcvers}", reply_rpc_mismatch(xid))
    u = Unpacker(data, 24)
    c = Call()
    c.xid, c.prog, c.vers, c.proc = xid, prog, vers, proc
    try:
        c.cred_flavor = u.unpack_uint()
        c.cred_body = u.unpack_opaque(MAX_AUTH_BYTES)
        c.verf_flavor = u.unpack_uint()
        c.verf_body = u.unpack_opaque(MAX_AUTH_BYTES)
    except XdrError as e:
        # The header is unreadable, so nothing about the call can be trusted.
        raise RpcError(f"bad credential or verifier: {e}",
                       reply_auth_error(xid, auth_stat.AUTH_BADCRED)) from None
    if c.cred_flavor == auth_flavor.AUTH_SYS:
        try:
            c.cred = _authsys_cached(c.cred_body)
        except XdrError as e:
            raise RpcError(f"bad AUTH_SYS credential: {e}",
                           reply_auth_error(xid, auth_stat.AUTH_BADCRED)) from None
    elif c.cred_flavor == auth_flavor.AUTH_NONE:
        c.cred = None
    else:
        raise RpcError(f"unsupported auth flavor {c.cred_flavor}",
                       reply_auth_error(xid, auth_stat.AUTH_BADCRED))
    if c.verf_flavor not in (auth_flavor.AUTH_NONE, auth_flavor.AUTH_SYS):
        raise RpcError(f"unsupported verifier flavor {c.verf_flavor}",
                       reply_auth_error(xid, auth_stat.AUTH_BADVERF))
    c.args = memoryview(data)[u.pos:]
    return c


# --- Client side ---------------------------------------------------------


def encode_call(xid, prog, vers, proc, args=b"", cred=None):
    """A CALL message; ``cred`` is an AuthSys or None for AUTH_NONE."""
    p = Packer()
    for v in (xid, msg_type.CALL, RPC_VERSION, prog, vers, proc):
        p.pack_uint(v)
    if cred is None:
        p.pack_uint(auth_flavor.AUTH_NONE)
        p.pack_opaque(b"")
    else:
        p.pack_uint(auth_flavor.AUTH_SYS)
        p.pack_opaque(cred.encode())
    p.pack_uint(auth_flavor.AUTH_NONE)
    p.pack_opaque(b"")
    p.pack_raw(args)
    return p.get_buffer()


class Reply:
    """A decoded REPLY. ``stat`` is an accept_stat when ``accepted``, else a
    reject_stat; ``mismatch`` is (low, high) for PROG_MISMATCH and RPC_MISMATCH;
    ``auth`` is the auth_stat of an AUTH_ERROR; ``body`` the encoded result."""

    __slots__ = ("xid", "accepted", "stat", "mismatch", "auth", "body")

    def __repr__(self):
        return f"Reply(xid={self.xid:#x}, accepted={self.accepted}, stat={self.stat!r})"


def peek_xid(data):
    if len(data) < 8:
        return None
    return _u32.unpack_from(data, 0)[0]


def _enum(cls, value):
    try:
        return cls(value)
    except ValueError:
        raise XdrError(f"{cls.__name__}: unknown value {value}") from None


def decode_reply(data):
    """Raises XdrError (only) on anything that is not a valid REPLY."""
    u = Unpacker(data)
    r = Reply()
    r.xid = u.unpack_uint()
    if u.unpack_uint() != msg_type.REPLY:
        raise XdrError("not a REPLY")
    r.mismatch = r.auth = None
    r.body = b""
    rstat = u.unpack_uint()
    if rstat == reply_stat.MSG_ACCEPTED:
        r.accepted = True
        u.unpack_uint()
        u.unpack_opaque(MAX_AUTH_BYTES)
        r.stat = _enum(accept_stat, u.unpack_uint())
        if r.stat == accept_stat.PROG_MISMATCH:
            r.mismatch = (u.unpack_uint(), u.unpack_uint())
        elif r.stat == accept_stat.SUCCESS:
            r.body = bytes(u.rest())
    elif rstat == reply_stat.MSG_DENIED:
        r.accepted = False
        r.stat = _enum(reject_stat, u.unpack_uint())
        if r.stat == reject_stat.RPC_MISMATCH:
            r.mismatch = (u.unpack_uint(), u.unpack_uint())
        else:
            r.auth = _enum(auth_stat, u.unpack_uint())
    else:
        raise XdrError(f"bad reply_stat {rstat}")
    return r


# --- TCP record marking (RFC 5531 section 11) ----------------------------

LAST_FRAGMENT = 0x80000000


def encode_record(message):
    """One record in a single fragment."""
    return _u32.pack(LAST_FRAGMENT | len(message)) + message


class RecordTooLarge(ValueError):
    pass


class RecordReader:
    """Reassembles records from a TCP byte stream, fragment by fragment. A record
    whose announced size would exceed ``max_record`` raises RecordTooLarge as
    soon as its fragment header arrives, before anything is buffered for it.
    Earlier fragments of a record are appended to one buffer, so what is held
    is bounded by ``max_record`` however the peer fragments (even endless
    empty fragments)."""

    def __init__(self, max_record):
        self.max_record = max_record
        self._queue = ChunkQueue()
        self._header = None  # (length, last) of the fragment being received
        self._record = bytearray()  # a multi-fragment record's earlier fragments

    def feed(self, data):
        """Add bytes; return the list of records completed by them."""
        queue = self._queue
        if (not queue and self._header is None and not self._record
                and type(data) is bytes and len(data) >= 4):
            # The usual read over TCP: one call, whole (a client waits for
            # its reply before the next). Taken as it is, without buffering.
            if _u32.unpack_from(data)[0] == LAST_FRAGMENT | (len(data) - 4) and \
                    len(data) - 4 <= self.max_record:
                return [data[4:]]
        queue.append(data)
        records = []
        while True:
            if self._header is None:
                if len(queue) < 4:
                    break
                header = _u32.unpack(queue.take(4))[0]
                length = header & 0x7FFFFFFF
                if len(self._record) + length > self.max_record:
                    raise RecordTooLarge(
                        f"record of at least {len(self._record) + length} bytes "
                        f"exceeds {self.max_record}")
                self._header = (length, header & LAST_FRAGMENT)
            length, last = self._header
            if len(queue) < length:
                break
            self._header = None
            fragment = queue.take(length)
            if last and not self._record:
                records.append(fragment)  # a whole record: Linux clients send no other
                continue
            self._record += fragment
            if last:
                records.append(bytes(self._record))
                self._record = bytearray()
        return records

    def pending(self):
        """Bytes held for an incomplete record (0 at a record boundary)."""
        return len(self._queue) + len(self._record) + (4 if self._header is not None else 0)
