"""The iod protocol: what the metaserver, unlinkd and tools say to the I/O
daemons (paper 5.6), sans-IO.

A frame is::

    header  magic b"NFSi" | version u8 | key_id u8 | flags u16 | body_len u32   (12 bytes)
    body    msgpack map: {"op": Op, "id": request id, ...fields of that op}
    mac     HMAC-SHA256(key[key_id], header || body)                           (32 bytes)

The same frame travels in one UDP datagram or back to back on a TCP stream
(FrameReader reassembles those). Every frame is authenticated with the cluster
key; a frame that does not verify, is too large, or whose body does not match
its op's schema raises IodProtoError and is dropped (and counted) by the
receiver. key_id lets two keys be accepted during a key rotation.

The iod knows nothing of NFS: for a READ it gets the reply's pre-encoded head
(RPC header, status, attributes, count, eof, opaque length) and sends head +
data + XDR padding; for a WRITE it gets the complete pre-encoded reply. So the
metaserver stays the only place that speaks NFS, and the iod's hot path is a
pread and a send.

Ops and their fields (every request carries "id", echoed in its REPLY/PONG):

- PING      spoof_from: addr|None (ask for the PONG to leave with that source)
- PONG      version: str, uptime: float, free: int, total: int, verifier: bytes(8)
- READ      ino, seed, offset, count, client: addr|None, source: addr|None, head: bytes
            (client None = relay: data comes back in the REPLY over TCP)
- WRITE     ino, seed, offset, data, stable: bool, client: addr|None, source: addr|None,
            reply: bytes|None (what to send the client once the data is written)
- COMMIT    ino, seed
- TRUNCATE  ino, seed, size
- PURGE     files: [[ino, seed], ...]   (acknowledged only once the datafiles are gone)
- LIST      cursor: bytes|None   (scrub: which (ino, seed) does this iod store?)
- REPLY     status: int (0 or an errno), data: bytes|None, verifier: bytes(8)|None,
            files: [[ino, seed], ...]|None, cursor: bytes|None, message: str

addr is [ip, port]. Integers are bounded to 64 bits; byte strings and lists
to the limits below.
"""

import enum
import hashlib
import hmac
import struct

import msgpack

MAGIC = b"NFSi"
VERSION = 1
HEADER = struct.Struct(">4sBBHI")
MAC_SIZE = 32
MAX_DATA = 1 << 20          # one READ/WRITE carries at most 1 MiB (NFSv3 over TCP's rtmax)
MAX_BODY = MAX_DATA + 65536  # data plus the reply head and fields
MAX_FILES = 65536            # (ino, seed) pairs in one PURGE or LIST reply
DEFAULT_PORT = 2050


class IodProtoError(ValueError):
    """A frame that must be dropped: malformed, oversized, unauthenticated."""


class Op(enum.IntEnum):
    PING = 1
    PONG = 2
    READ = 3
    WRITE = 4
    COMMIT = 5
    TRUNCATE = 6
    PURGE = 7
    LIST = 8
    REPLY = 9


# --- field validators (untrusted input: type and bound checks) ------------

U64 = (1 << 64) - 1


def _uint(v):
    if type(v) is not int or not 0 <= v <= U64:
        raise IodProtoError(f"expected an unsigned 64-bit integer, got {v!r:.40}")
    return v


def _int(v):
    if type(v) is not int or not -(1 << 63) <= v <= U64:
        raise IodProtoError(f"expected an integer, got {v!r:.40}")
    return v


def _bool(v):
    if type(v) is not bool:
        raise IodProtoError(f"expected a bool, got {v!r:.40}")
    return v


def _float(v):
    if type(v) not in (float, int):
        raise IodProtoError(f"expected a number, got {v!r:.40}")
    return float(v)


def _bytes(limit):
    def check(v):
        if type(v) is not bytes or len(v) > limit:
            raise IodProtoError(f"expected at most {limit} bytes")
        return v
    return check


def _str(limit):
    def check(v):
        if type(v) is not str or len(v) > limit:
            raise IodProtoError(f"expected a string of at most {limit} characters")
        return v
    return check


def _addr(v):
    if (type(v) not in (list, tuple) or len(v) != 2 or type(v[0]) is not str or len(v[0]) > 64
            or type(v[1]) is not int or not 0 <= v[1] <= 65535):
        raise IodProtoError(f"expected [ip, port], got {v!r:.60}")
    return (v[0], v[1])


def _files(v):
    if type(v) not in (list, tuple) or len(v) > MAX_FILES:
        raise IodProtoError(f"expected a list of at most {MAX_FILES} [ino, seed] pairs")
    out = []
    for pair in v:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise IodProtoError("expected [ino, seed]")
        out.append((_uint(pair[0]), _uint(pair[1])))
    return out


def _optional(check):
    def opt(v):
        return None if v is None else check(v)
    return opt


SCHEMAS = {
    Op.PING: {"spoof_from": _optional(_addr)},
    Op.PONG: {"version": _str(64), "uptime": _float, "free": _uint, "total": _uint,
              "verifier": _bytes(8)},
    Op.READ: {"ino": _uint, "seed": _uint, "offset": _uint, "count": _uint,
              "client": _optional(_addr), "source": _optional(_addr), "head": _bytes(4096)},
    Op.WRITE: {"ino": _uint, "seed": _uint, "offset": _uint, "data": _bytes(MAX_DATA),
               "stable": _bool, "client": _optional(_addr), "source": _optional(_addr),
               "reply": _optional(_bytes(4096))},
    Op.COMMIT: {"ino": _uint, "seed": _uint},
    Op.TRUNCATE: {"ino": _uint, "seed": _uint, "size": _uint},
    Op.PURGE: {"files": _files},
    Op.LIST: {"cursor": _optional(_bytes(256))},
    Op.REPLY: {"status": _int, "data": _optional(_bytes(MAX_DATA)),
               "verifier": _optional(_bytes(8)), "files": _optional(_files),
               "cursor": _optional(_bytes(256)), "message": _str(1024)},
}

DEFAULTS = {
    Op.PING: {"spoof_from": None},
    Op.READ: {"client": None, "source": None, "head": b""},
    Op.WRITE: {"client": None, "source": None, "reply": None},
    Op.LIST: {"cursor": None},
    Op.REPLY: {"status": 0, "data": None, "verifier": None, "files": None, "cursor": None,
               "message": ""},
}


class Message:
    """One protocol message: ``op``, ``id`` and the op's fields as attributes."""

    def __init__(self, op, id, **fields):
        op = Op(op)
        values = dict(DEFAULTS.get(op, {}))
        values.update(fields)
        schema = SCHEMAS[op]
        unknown = set(values) - set(schema)
        if unknown:
            raise TypeError(f"{op.name}: unknown fields {sorted(unknown)}")
        missing = set(schema) - set(values)
        if missing:
            raise TypeError(f"{op.name}: missing fields {sorted(missing)}")
        self.op = op
        self.id = id
        self.__dict__.update(values)

    def fields(self):
        return {k: getattr(self, k) for k in SCHEMAS[self.op]}

    def __eq__(self, other):
        return (isinstance(other, Message) and self.op == other.op and self.id == other.id
                and self.fields() == other.fields())

    def __repr__(self):
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) and len(v) > 16 else v)
                 for k, v in self.fields().items()}
        return f"Message({self.op.name}, id={self.id}, {shown})"


class Keys:
    """The cluster keys: the current one signs, every listed one verifies (so a
    key can be rotated without downtime)."""

    def __init__(self, current, others=()):
        self.current_id, self.current = current
        self.by_id = {self.current_id: self.current}
        for kid, key in others:
            self.by_id[kid] = key

    @classmethod
    def single(cls, key, key_id=0):
        return cls((key_id, key))


def encode(msg, keys):
    body = {"op": int(msg.op), "id": _uint(msg.id)}
    for k, v in msg.fields().items():
        body[k] = list(v) if isinstance(v, tuple) else v
    packed = msgpack.packb(body, use_bin_type=True)
    if len(packed) > MAX_BODY:
        raise IodProtoError(f"body of {len(packed)} bytes exceeds {MAX_BODY}")
    header = HEADER.pack(MAGIC, VERSION, keys.current_id, 0, len(packed))
    mac = hmac.new(keys.current, header + packed, hashlib.sha256).digest()
    return header + packed + mac


def frame_length(header_bytes):
    """Total frame length announced by a 12-byte header (checked against the bound)."""
    magic, version, _, _, body_len = HEADER.unpack(header_bytes)
    if magic != MAGIC:
        raise IodProtoError("bad magic")
    if version != VERSION:
        raise IodProtoError(f"unsupported protocol version {version}")
    if body_len > MAX_BODY:
        raise IodProtoError(f"announced body of {body_len} bytes exceeds {MAX_BODY}")
    return HEADER.size + body_len + MAC_SIZE


def decode(frame, keys):
    """Verify and decode one whole frame. Raises IodProtoError."""
    if len(frame) < HEADER.size + MAC_SIZE:
        raise IodProtoError(f"short frame ({len(frame)} bytes)")
    total = frame_length(frame[:HEADER.size])
    if len(frame) != total:
        raise IodProtoError(f"frame length {len(frame)} does not match its header ({total})")
    key_id = frame[5]
    key = keys.by_id.get(key_id)
    if key is None:
        raise IodProtoError(f"unknown key id {key_id}")
    signed, mac = frame[:-MAC_SIZE], frame[-MAC_SIZE:]
    if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), mac):
        raise IodProtoError("authentication failed")
    try:
        body = msgpack.unpackb(signed[HEADER.size:], raw=False, strict_map_key=True,
                               max_bin_len=MAX_BODY, max_str_len=4096, max_array_len=MAX_FILES,
                               max_map_len=32)
    except Exception as e:  # msgpack raises several types for malformed input
        raise IodProtoError(f"malformed body: {type(e).__name__}") from None
    if type(body) is not dict:
        raise IodProtoError("body is not a map")
    try:
        op = Op(body.pop("op"))
    except (KeyError, ValueError, TypeError):
        raise IodProtoError("missing or unknown op") from None
    msg_id = _uint(body.pop("id", None))
    schema = SCHEMAS[op]
    fields = dict(DEFAULTS.get(op, {}))
    for k, v in body.items():
        check = schema.get(k)
        if check is None:
            raise IodProtoError(f"{op.name}: unknown field {k!r:.40}")
        fields[k] = check(v)
    missing = set(schema) - set(fields)
    if missing:
        raise IodProtoError(f"{op.name}: missing fields {sorted(missing)}")
    return Message(op, msg_id, **fields)


class FrameReader:
    """Splits a TCP byte stream into whole frames; an oversized or foreign
    header raises IodProtoError as soon as it arrives."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        frames = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= HEADER.size:
            total = frame_length(bytes(buf[pos:pos + HEADER.size]))
            if len(buf) - pos < total:
                break
            frames.append(bytes(buf[pos:pos + total]))
            pos += total
        del buf[:pos]
        return frames


def reply(request, status=0, **fields):
    """The REPLY answering ``request``."""
    return Message(Op.REPLY, request.id, status=status, **fields)
