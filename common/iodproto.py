"""The iod protocol: what the metaserver, unlinkd and tools say to the I/O
daemons (paper 5.6), sans-IO: no sockets, no clocks (the time is always an
argument), no files.

A frame (protocol version 2) is::

    header  magic b"NFSi" | version u8 | key_id u8 | flags u16 | body_len u32
            | data_len u32                                                     (16 bytes)
    body    msgpack map: {"op": Op, "id": request id, ["stamp": [sender, seq, time]],
                          ...fields of that op}
    mac     HMAC-SHA256(key[key_id], header || body)                           (32 bytes)
    data    data_len raw bytes: a REPLY's ``data`` (0 for every other op)

The same frame travels in one UDP datagram or back to back on a TCP stream
(FrameReader reassembles those). Every frame is authenticated with the cluster
key; a frame that does not verify, is too large, or whose body does not match
its op's schema raises IodProtoError (its ``reason`` says which, for the
receiver's counters) and is dropped by the receiver. key_id lets several keys
be accepted at once: Keys signs with one and verifies with all, and
Keys.update swaps them in place for every holder (a SIGHUP re-reading the key
file), so a key is rotated without downtime -- add the new key everywhere,
then make it the signing one everywhere, then drop the old one.

What the MAC covers (version 2)
-------------------------------
Everything but a REPLY's data: the header (so data_len too), the body (op, id,
status, verifier: everything the metaserver acts on). A relayed READ's data
follows the MAC as a raw trailer, so that the iod can send it with
os.sendfile straight from the datafile and the metaserver can receive it into
the NFS reply's buffer and send it on without ever touching it (hashing a MiB
costs ~0.8 ms of CPU on each side here, ten times copying it: it was most of
the relay's cost). What this gives up is the integrity of READ data on the
iod-to-metaserver hop only -- the same data crosses the metaserver-to-client hop
unauthenticated (NFS over AUTH_SYS), and the UDP-forwarded and pNFS
data-server READs send it from the iod to the client with no MAC at all. What
an attacker on the path still cannot do: make the metaserver accept a reply
that no iod sent, with another status, verifier (COMMIT) or request id, or of
another length (data_len is signed, so the stream's framing cannot be moved);
nor make an iod act on anything: requests keep their data inside the body,
under the MAC (a WRITE's data is authenticated, it is stored).

Version 1 (a 12-byte header, a REPLY's data inside the body) is refused with
a message saying so: the metaserver, its iods, unlinkd and the tools are
upgraded together.

The one exception to authentication: a PING (and the PONG answering it) may
travel unsigned (flag UNSIGNED, MAC all zeros) for monitoring without the key.
decode accepts one only when asked to (``unsigned_ok``), and the iod answers
it with an unsigned PONG to its sender only, never spoofed, rate-limited, and
only if the PING was at least PLAIN_PING_SIZE bytes (plain_ping pads it): a
forged source gains no amplification (the rule of RFC 9000 8.1). The same
goes for a signed PING without a fresh stamp over UDP, which could be a
replay with a forged source.

Replay protection (the ``stamp``)
---------------------------------
A MAC proves who made a frame, not that it is new: anyone on the path can
capture a WRITE or a PURGE and send it again later. So a frame that changes
data, or makes the iod send to an address the network cannot vouch for,
carries a stamp, and the iod acts on a stamped frame at most once and only
while it is fresh:

- ``sender`` is a random 64-bit number drawn per sender channel (one per
  metaserver link and forwarding path, per unlinkd connection, per tool run);
  ``seq`` counts 1, 2, 3... on that channel towards one iod; ``time`` is the
  sender's idea of the iod's wall clock (its own, corrected by the offset
  measured from the ``time`` of the iod's PONGs when it has one).
- ReplayGuard (the receiver) refuses a frame whose time is more than
  ``max_skew`` (default MAX_CLOCK_SKEW = 60 s, iod --max-clock-skew) away
  from its own clock ("stale"), and a (sender, seq) it has seen, or one older
  than the REPLAY_WINDOW sequence numbers below the highest seen from that
  sender ("replay": the sliding bitmap of IPsec, RFC 4303 3.4.3). Frames of a
  channel reach the window in the order they were sent but for the iod's
  thread pool, which reorders by a few dozen at most.
- State is bounded: a sender is forgotten once its newest frame is older
  than max_skew (everything it ever sent is stale by then), and beyond
  ``max_senders`` live ones the least recently heard is evicted and the
  ``floor`` raised to its newest time: a sender the iod does not know is
  accepted only with times above the floor, so an evicted sender's old frames
  stay refused. The floor starts at the iod's start time: a restarted iod
  forgets what it saw, and refuses everything stamped before it started.

Which frames need a stamp (needs_stamp): WRITE, TRUNCATE, PURGE and REVOKE always;
READ over UDP or naming a client (the answer goes to an address the
frame names, a reflection if replayed with a forged source); PING with
spoof_from. Exempt, because a replay gains nothing: READ, COMMIT and LIST
over TCP (the answer goes back on the connection, to a peer that completed a
handshake; nothing changes on disk) and a plain PING (liveness must work
whatever the clocks say; over UDP an unstamped PING is answered through the
iod's rate limiter). Senders stamp every frame but heartbeat PINGs anyway, and
a stamp, once present, is always checked.

Clock skew: the metaserver and unlinkd stamp in the iod's time (offset
measured from PONGs), so their clocks may differ from the iods' by any amount;
other senders (tools, a sender before its first PONG) must agree with the iod
within max_skew, minus the seconds a frame may wait in queues on the way.

Replies are not stamped: a REPLY answers an outstanding request id, unique per
sender boot, and a replayed one matches nothing.

The iod knows nothing of NFS: for a READ it gets the reply's pre-encoded head
(RPC header, status, attributes, count, eof, opaque length) and sends head +
data + XDR padding; for a WRITE it gets the complete pre-encoded reply. So the
metaserver stays the only place that speaks NFS, and the iod's hot path is a
pread and a send (for a READ relayed over TCP, a sendfile of the trailer).

Ops and their fields (every request carries "id", echoed in its REPLY/PONG):

- PING      spoof_from: addr|None (ask for the PONG to leave with that source),
            pad: bytes|None (makes a PING without a fresh stamp PLAIN_PING_SIZE long)
- PONG      version: str, uptime: float, free: int, total: int, verifier: bytes(8),
            time: float|None (the iod's wall clock, for senders' clock offsets),
            store: bytes(16)|None (the id of the data store it serves, common/runtime/datastore.py;
            None from an iod whose store is lost, or one older than the field),
            ds_port: int|None (the TCP port of its pNFS data server, iod --ds-port; None: off)
- READ      ino, seed, offset, count, client: addr|None, source: addr|None, head: bytes,
            more: bytes (further ranges of the same datafile, relay only: packed
            EXTENT pairs, at most MAX_EXTENTS; one READ fetches every stripe an iod
            holds of a relayed READ, not one frame per stripe unit)
            (client None = relay: data comes back as the REPLY's trailer, the
            ranges' data back to back; count plus the ranges' counts at most MAX_DATA)
- WRITE     ino, seed, offset, data, stable: bool, client: addr|None, source: addr|None,
            reply: bytes|None (what to send the client once the data is written; a
            forwarded WRITE is then acknowledged to its sender too, with a REPLY: the
            metaserver holds a truncation of the file back until its WRITEs are in;
            and one stamped more than FORWARD_MAX_AGE ago is refused, ETIMEDOUT)
- COMMIT    ino, seed
- TRUNCATE  ino, seed, size
- PURGE     files: [[ino, seed], ...]   (acknowledged only once the datafiles are gone)
- LIST      cursor: bytes|None   (scrub: which (ino, seed) does this iod store?)
- REVOKE    files: [[ino, seed], ...], clients: [ip, ...], everything: bool
            (pNFS data-server handles the iod refuses from now on, common/dsfh.py: every
            handle of those files (removed, restriped), those minted before the frame's
            stamp for those clients (lease expired) or for anyone (exports changed);
            acknowledged once in force)
- REPLY     status: int (0 or an errno), data: bytes|None (the trailer; None when
            data_len is 0), verifier: bytes(8)|None,
            files: [[ino, seed], ...]|None, cursor: bytes|None, message: str

PONG_TOLERANT: a PONG only informs, so iods and metaservers of different
releases speaking the same VERSION keep understanding each other's (a field
added later breaks no one): a PONG's unknown fields are
ignored (the msgpack bounds still hold), its optional fields may be missing,
and one whose value is None is left out (a peer from before the field
refused it). Every other op's fields are exact.

addr is [ip, port]. Integers are bounded to 64 bits; byte strings and lists
to the limits below.
"""

import collections
import enum
import hashlib
import hmac
import math
import secrets
import struct

import msgpack

from common.chunkqueue import ChunkQueue

MAGIC = b"NFSi"
VERSION = 2
HEADER = struct.Struct(">4sBBHII")
MAC_SIZE = 32
MAX_DATA = 1 << 20          # one READ/WRITE carries at most 1 MiB (NFSv3 over TCP's rtmax)
MAX_BODY = MAX_DATA + 65536  # data plus the reply head and fields
MAX_FILES = 65536            # (ino, seed) pairs in one PURGE or LIST reply
EXTENT = struct.Struct(">QI")  # a READ's further range: offset, count
MAX_EXTENTS = 256            # further ranges in one READ
DEFAULT_PORT = 2050

UNSIGNED = 0x0001            # header flag: no MAC (PING/PONG only, see above)
_KNOWN_FLAGS = UNSIGNED
_NO_MAC = bytes(MAC_SIZE)

MAX_CLOCK_SKEW = 60.0        # seconds a stamp may be off the receiver's clock
REPLAY_WINDOW = 4096         # sequence numbers below the highest seen still accepted once
MAX_SENDERS = 1024           # senders with live replay state one receiver tracks
PLAIN_PING_SIZE = 256        # bytes: no PONG is larger (its version string is bounded)
# A forwarded WRITE stamped longer ago than this is refused (ETIMEDOUT), not
# written: the metaserver stops waiting for its answer a while later (its
# forward TTL, which must be longer) and may then truncate the file.
FORWARD_MAX_AGE = 5.0


class IodProtoError(ValueError):
    """A frame that must be dropped: malformed, oversized, unauthenticated,
    replayed. ``reason`` names the kind, for the receiver's counters:
    malformed, bad_mac, replay, stale, unstamped."""

    reason = "malformed"

    def __init__(self, message, reason=None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BadMac(IodProtoError):
    reason = "bad_mac"


class Replayed(IodProtoError):
    reason = "replay"


class Stale(IodProtoError):
    reason = "stale"


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
    REVOKE = 10


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
    # NaN and infinities are no uptime or size anyone sends; refused here,
    # they cannot reach a caller's int() or comparisons.
    if type(v) not in (float, int) or not math.isfinite(f := float(v)):
        raise IodProtoError(f"expected a finite number, got {v!r:.40}")
    return f


def _duration(v):
    f = _float(v)
    if f < 0:
        raise IodProtoError(f"expected a duration, got {f!r:.40}")
    return f


def _time(v):
    # NaN compares false with everything: it would slip through any window.
    if type(v) is not float or not math.isfinite(v):
        raise IodProtoError(f"expected a finite float time, got {v!r:.40}")
    return v


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


def _port(v):
    if type(v) is not int or not 0 < v <= 65535:
        raise IodProtoError(f"expected a port, got {v!r:.40}")
    return v


def _ips(v):
    if type(v) not in (list, tuple) or len(v) > MAX_FILES:
        raise IodProtoError(f"expected a list of at most {MAX_FILES} addresses")
    for ip in v:
        if type(ip) is not str or len(ip) > 64:
            raise IodProtoError(f"expected an address, got {ip!r:.40}")
    return list(v)


def _extents(v):
    if type(v) is not bytes or len(v) > EXTENT.size * MAX_EXTENTS or len(v) % EXTENT.size:
        raise IodProtoError(f"expected at most {MAX_EXTENTS} packed extents")
    return v


def extents(more):
    """A READ's ``more`` as [(offset, count), ...]."""
    return list(EXTENT.iter_unpack(more))


def pack_extents(ranges):
    """``more`` for the ranges [(offset, count), ...]."""
    return b"".join(EXTENT.pack(o, c) for o, c in ranges)


def _optional(check):
    def opt(v):
        return None if v is None else check(v)
    return opt


SCHEMAS = {
    Op.PING: {"spoof_from": _optional(_addr), "pad": _optional(_bytes(2 * PLAIN_PING_SIZE))},
    Op.PONG: {"version": _str(64), "uptime": _duration, "free": _uint, "total": _uint,
              "verifier": _bytes(8), "time": _optional(_time), "store": _optional(_bytes(16)),
              "ds_port": _optional(_port)},
    Op.READ: {"ino": _uint, "seed": _uint, "offset": _uint, "count": _uint,
              "client": _optional(_addr), "source": _optional(_addr), "head": _bytes(4096),
              "more": _extents},
    Op.WRITE: {"ino": _uint, "seed": _uint, "offset": _uint, "data": _bytes(MAX_DATA),
               "stable": _bool, "client": _optional(_addr), "source": _optional(_addr),
               "reply": _optional(_bytes(4096))},
    Op.COMMIT: {"ino": _uint, "seed": _uint},
    Op.TRUNCATE: {"ino": _uint, "seed": _uint, "size": _uint},
    Op.PURGE: {"files": _files},
    Op.LIST: {"cursor": _optional(_bytes(256))},
    Op.REVOKE: {"files": _files, "clients": _ips, "everything": _bool},
    Op.REPLY: {"status": _int, "data": _optional(_bytes(MAX_DATA)),
               "verifier": _optional(_bytes(8)), "files": _optional(_files),
               "cursor": _optional(_bytes(256)), "message": _str(1024)},
}

DEFAULTS = {
    Op.PING: {"spoof_from": None, "pad": None},
    Op.PONG: {"time": None, "store": None, "ds_port": None},
    Op.READ: {"client": None, "source": None, "head": b"", "more": b""},
    Op.WRITE: {"client": None, "source": None, "reply": None},
    Op.LIST: {"cursor": None},
    Op.REVOKE: {"files": [], "clients": [], "everything": False},
    Op.REPLY: {"status": 0, "data": None, "verifier": None, "files": None, "cursor": None,
               "message": ""},
}


class Stamp(collections.namedtuple("Stamp", "sender seq time")):
    """Replay protection of one frame (see the module docstring)."""
    __slots__ = ()


def _stamp(v):
    if type(v) not in (list, tuple) or len(v) != 3:
        raise IodProtoError(f"expected a stamp [sender, seq, time], got {v!r:.60}")
    return _make_stamp((_uint(v[0]), _uint(v[1]), _time(v[2])))


_make_stamp = Stamp._make


class Message:
    """One protocol message: ``op``, ``id``, ``stamp`` (a Stamp or None) and
    the op's fields as attributes. ``authenticated`` is False only for an
    unsigned PING or PONG that decode was allowed to accept."""

    def __init__(self, op, id, stamp=None, **fields):
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
        if op == Op.REPLY and values["data"] is not None and not len(values["data"]):
            # The trailer's length is all a frame says: no data is None.
            values["data"] = None
        self.op = op
        self.id = id
        self.stamp = stamp if stamp is None or type(stamp) is Stamp else Stamp(*stamp)
        self.authenticated = True
        self.__dict__.update(values)

    def fields(self):
        return {k: getattr(self, k) for k in SCHEMAS[self.op]}

    def __eq__(self, other):
        return (isinstance(other, Message) and self.op == other.op and self.id == other.id
                and self.stamp == other.stamp and self.fields() == other.fields())

    def __repr__(self):
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) and len(v) > 16 else v)
                 for k, v in self.fields().items()}
        stamp = "" if self.stamp is None else f", stamp={tuple(self.stamp)}"
        return f"Message({self.op.name}, id={self.id}{stamp}, {shown})"


class Keys:
    """The cluster keys: the current one signs, every listed one verifies (so a
    key can be rotated without downtime). update() replaces them in place:
    everything holding this object (connections, signers) follows."""

    def __init__(self, current, others=()):
        self.generation = 0
        self._set(current, others)

    def _set(self, current, others):
        kid, key = current
        by_id = {kid: key}
        for other_id, other in others:
            by_id[other_id] = other
        # One attribute, replaced whole: a thread reading it never sees the
        # signing id of one key file with the key of another.
        self._state = ((kid, key), by_id)

    @classmethod
    def single(cls, key, key_id=0):
        return cls((key_id, key))

    @property
    def signing(self):
        """(key_id, key) of the key that signs."""
        return self._state[0]

    @property
    def current_id(self):
        return self._state[0][0]

    @property
    def current(self):
        return self._state[0][1]

    @property
    def by_id(self):
        return self._state[1]

    def describe(self):
        """For the log line of a reload."""
        return (f"signing with key id {self.current_id}, accepting key ids "
                + ", ".join(str(k) for k in sorted(self.by_id)))

    def update(self, other):
        """Take ``other``'s keys (a reloaded key file)."""
        self._state = other._state
        self.generation += 1


def encode(msg, keys):
    """The frame of ``msg``, signed with ``keys``; keys None makes an
    unsigned frame, which only a PING or a PONG may be. A REPLY's data
    becomes the frame's trailer."""
    data = msg.data if msg.op == Op.REPLY and msg.data else b""
    return _signed(msg, keys, len(data)) + data


def encode_head(msg, data_len, keys):
    """A REPLY's frame up to its trailer, announcing ``data_len`` bytes of
    data, which the caller sends right after it (os.sendfile from the
    datafile); ``msg.data`` must be None."""
    if msg.op != Op.REPLY or msg.data is not None:
        raise IodProtoError("only a REPLY without data in it announces a trailer")
    return _signed(msg, keys, data_len)


def _signed(msg, keys, data_len):
    """Header, body and MAC of ``msg``, announcing ``data_len`` bytes of trailer."""
    body = {"op": int(msg.op), "id": _uint(msg.id)}
    if msg.stamp is not None:
        s = msg.stamp
        body["stamp"] = [_uint(s.sender), _uint(s.seq), _time(float(s.time))]
    reply = msg.op == Op.REPLY
    for k, v in msg.fields().items():
        if reply and k == "data":
            continue
        if v is None and msg.op is Op.PONG:
            continue    # left out: a peer older than the field takes the PONG
        body[k] = list(v) if isinstance(v, tuple) else v
    packed = msgpack.packb(body, use_bin_type=True)
    if len(packed) > MAX_BODY:
        raise IodProtoError(f"body of {len(packed)} bytes exceeds {MAX_BODY}")
    if not 0 <= data_len <= MAX_DATA:
        raise IodProtoError(f"data of {data_len} bytes exceeds {MAX_DATA}")
    if keys is None:
        if msg.op not in (Op.PING, Op.PONG):
            raise IodProtoError(f"only PING and PONG may be unsigned, not {msg.op.name}")
        return HEADER.pack(MAGIC, VERSION, 0, UNSIGNED, len(packed), 0) + packed + _NO_MAC
    key_id, key = keys.signing
    header = HEADER.pack(MAGIC, VERSION, key_id, 0, len(packed), data_len)
    mac = hmac.new(key, header + packed, hashlib.sha256).digest()
    return header + packed + mac


def frame_sizes(header_bytes):
    """(signed, data_len) announced by a HEADER.size-byte header: the bytes
    up to the end of the MAC, and the trailer's after them (both bounded)."""
    magic, version, _, _, body_len, data_len = HEADER.unpack(header_bytes)
    if magic != MAGIC:
        raise IodProtoError("bad magic")
    if version != VERSION:
        raise IodProtoError(f"iod protocol version {version} from the peer, but this side "
                            f"speaks version {VERSION}: nfspd, the iods, unlinkd and the "
                            f"tools must be upgraded together")
    if body_len > MAX_BODY:
        raise IodProtoError(f"announced body of {body_len} bytes exceeds {MAX_BODY}")
    if data_len > MAX_DATA:
        raise IodProtoError(f"announced data of {data_len} bytes exceeds {MAX_DATA}")
    return HEADER.size + body_len + MAC_SIZE, data_len


def frame_length(header_bytes):
    """Total frame length announced by a HEADER.size-byte header (checked against the bounds)."""
    signed, data_len = frame_sizes(header_bytes)
    return signed + data_len


def decode(frame, keys, unsigned_ok=False):
    """Verify and decode one whole frame. Raises IodProtoError. With
    ``unsigned_ok`` an unsigned PING or PONG is accepted too (its Message has
    ``authenticated`` False)."""
    if len(frame) < HEADER.size + MAC_SIZE:
        raise IodProtoError(f"short frame ({len(frame)} bytes)")
    signed_len, data_len = frame_sizes(frame[:HEADER.size])
    if len(frame) != signed_len + data_len:
        raise IodProtoError(f"frame length {len(frame)} does not match its header "
                            f"({signed_len + data_len})")
    flags = HEADER.unpack_from(frame)[3]
    if flags & ~_KNOWN_FLAGS:
        raise IodProtoError(f"unknown flags {flags:#x}")
    # Views, not slices: a WRITE's MiB is copied once, by msgpack, not also
    # into the signed part and the body (1 MiB WRITE: 830 -> 740 us a decode
    # on CPython, 680 of them the MAC).
    view = memoryview(frame)
    signed, mac = view[:signed_len - MAC_SIZE], view[signed_len - MAC_SIZE:signed_len]
    if flags & UNSIGNED:
        if not unsigned_ok:
            raise BadMac("unsigned frame")
        if mac != _NO_MAC or frame[5] != 0:
            raise IodProtoError("unsigned frame with a key id or a MAC")
    else:
        key_id = frame[5]
        key = keys.by_id.get(key_id)
        if key is None:
            raise BadMac(f"unknown key id {key_id}")
        if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), mac):
            raise BadMac("authentication failed")
    return message_of(_unpack(signed[HEADER.size:]), flags,
                      bytes(view[signed_len:]) if data_len else None)


def message_of(body, flags, data=None):
    """The Message of an unpacked body (a verified frame's, header ``flags``)
    and its trailer ``data`` (None: data_len 0): the op's schema checked, as
    decode does (shared with nfspd/iodframes.py)."""
    if type(body) is not dict:
        raise IodProtoError("body is not a map")
    try:
        op = Op(body.pop("op"))
    except (KeyError, ValueError, TypeError):
        raise IodProtoError("missing or unknown op") from None
    if flags & UNSIGNED and op not in (Op.PING, Op.PONG):
        raise BadMac(f"unsigned {op.name}: only PING and PONG may be unsigned")
    msg_id = _uint(body.pop("id", None))
    stamp = body.pop("stamp", None)
    if stamp is not None and flags & UNSIGNED:
        # Anyone can make an unsigned frame: a stamp in one would let them
        # fill a receiver's ReplayGuard with invented senders.
        raise BadMac("unsigned frame with a stamp")
    stamp = None if stamp is None else _stamp(stamp)
    if op == Op.REPLY:
        if "data" in body:
            raise IodProtoError("REPLY with its data in the body: data travels after the MAC")
        body["data"] = data
    elif data is not None:
        raise IodProtoError(f"{op.name} with a trailer: only a REPLY carries one")
    schema = SCHEMAS[op]
    fields = dict(DEFAULTS.get(op, {}))
    for k, v in body.items():
        check = schema.get(k)
        if check is None:
            if op is Op.PONG:
                continue    # a newer iod's news (module docstring: PONG_TOLERANT)
            raise IodProtoError(f"{op.name}: unknown field {k!r:.40}")
        fields[k] = check(v)
    missing = set(schema) - set(fields)
    if missing:
        raise IodProtoError(f"{op.name}: missing fields {sorted(missing)}")
    # Every field was checked above: Message's constructor would check again.
    msg = _new_message(Message)
    msg.op, msg.id, msg.stamp, msg.authenticated = op, msg_id, stamp, not flags & UNSIGNED
    msg.__dict__.update(fields)
    return msg


_new_message = object.__new__


# msgpack preallocates a container for the length its header declares: nested
# arrays each declaring 65535 elements make a few KiB of body allocate
# hundreds of MiB. No body nests deeper than the ``files`` pairs, and only
# ``files`` holds more than 3 elements: the first attempt allows only that
# much (failing at the first long array), and a body that needs more, a
# PURGE or a LIST reply, is first checked by _scan, which allocates nothing.
_SMALL = dict(raw=False, strict_map_key=True, max_bin_len=MAX_BODY, max_str_len=4096,
              max_array_len=3, max_map_len=16)
_LARGE = dict(_SMALL, max_array_len=MAX_FILES)
MAX_DEPTH = 3   # body map > files array > [ino, seed]


def _unpack(data):
    """A frame body (bytes or a memoryview) unpacked, within the bounds above."""
    try:
        return msgpack.unpackb(data, **_SMALL)
    except Exception:  # msgpack raises several types for malformed input
        pass
    _scan(data)
    try:
        return msgpack.unpackb(data, **_LARGE)
    except Exception as e:
        raise IodProtoError(f"malformed body: {type(e).__name__}") from None


# First byte -> (size of the length that follows, or the fixed length; kind):
# kind "s" scalar of fixed size, "b" length-prefixed bytes, "a" array, "m" map.
def _msgpack_types():
    t = {}
    for b in range(0x00, 0x80):
        t[b] = (0, "s")
    for b in range(0x80, 0x90):
        t[b] = (-(b & 0x0F), "m")     # negative: the count is in the byte itself
    for b in range(0x90, 0xA0):
        t[b] = (-(b & 0x0F), "a")
    for b in range(0xA0, 0xC0):
        t[b] = (b & 0x1F, "s")
    for b in range(0xE0, 0x100):
        t[b] = (0, "s")
    t.update({0xC0: (0, "s"), 0xC2: (0, "s"), 0xC3: (0, "s"),
              0xC4: (1, "b"), 0xC5: (2, "b"), 0xC6: (4, "b"),
              0xC7: (1, "e"), 0xC8: (2, "e"), 0xC9: (4, "e"),
              0xCA: (4, "s"), 0xCB: (8, "s"), 0xCC: (1, "s"), 0xCD: (2, "s"), 0xCE: (4, "s"),
              0xCF: (8, "s"), 0xD0: (1, "s"), 0xD1: (2, "s"), 0xD2: (4, "s"), 0xD3: (8, "s"),
              0xD4: (2, "s"), 0xD5: (3, "s"), 0xD6: (5, "s"), 0xD7: (9, "s"), 0xD8: (17, "s"),
              0xD9: (1, "b"), 0xDA: (2, "b"), 0xDB: (4, "b"),
              0xDC: (2, "a"), 0xDD: (4, "a"), 0xDE: (2, "m"), 0xDF: (4, "m")})
    return t


_TYPES = _msgpack_types()
unpack_body = _unpack


def _scan(data):
    """Walk a msgpack value without building it: raises IodProtoError for
    nesting deeper than MAX_DEPTH, a container declaring more elements than
    bytes remain, anything truncated or invalid."""
    end = len(data)
    pos = 0
    pending = [1]       # values still expected at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            raise IodProtoError("malformed body: truncated")
        first = data[pos]
        pos += 1
        info = _TYPES.get(first)
        if info is None:
            raise IodProtoError(f"malformed body: byte {first:#x}")
        size, kind = info
        if kind == "s":
            pos += size
            continue
        if size < 0:
            count = -size
        elif size == 0:
            count = 0
        else:
            count = int.from_bytes(data[pos:pos + size], "big")
            pos += size
        if kind in ("b", "e"):
            pos += count + (kind == "e")
            continue
        if kind == "m":
            count *= 2
        if count > end - pos:
            raise IodProtoError(f"malformed body: a container of {count} values in "
                                f"{end - pos} bytes")
        if len(pending) > MAX_DEPTH and count:   # pending[0] is the top level
            raise IodProtoError("malformed body: nested too deep")
        pending.append(count)
    if pos > end:
        raise IodProtoError("malformed body: truncated")


class FrameReader:
    """Splits a TCP byte stream into whole frames; an oversized or foreign
    header raises IodProtoError as soon as it arrives."""

    def __init__(self):
        self._queue = ChunkQueue()
        self._total = None  # the length of the frame being received, once known

    def feed(self, data):
        queue = self._queue
        queue.append(data)
        frames = []
        while True:
            if self._total is None:
                if len(queue) < HEADER.size:
                    break
                self._total = frame_length(queue.peek(HEADER.size))
            if len(queue) < self._total:
                break
            frames.append(queue.take(self._total))
            self._total = None
        return frames


def reply(request, status=0, **fields):
    """The REPLY answering ``request``."""
    return Message(Op.REPLY, request.id, status=status, **fields)


def plain_ping(msg_id, keys):
    """A PING without a stamp, padded to PLAIN_PING_SIZE (see above); keys
    None makes it unsigned."""
    frame = encode(Message(Op.PING, msg_id, pad=b""), keys)
    short = PLAIN_PING_SIZE - len(frame)
    if short <= 0:
        return frame
    # msgpack's bin header grows from 2 to 3 bytes past 255 bytes of data.
    return encode(Message(Op.PING, msg_id, pad=bytes(short)), keys)


# --- replay protection ----------------------------------------------------------


def needs_stamp(msg, over_udp):
    """Whether the receiver may act on ``msg`` only if it carries a fresh
    stamp (the rule and its reasons are in the module docstring)."""
    op = msg.op
    if op in (Op.WRITE, Op.TRUNCATE, Op.PURGE, Op.REVOKE):
        return True
    if op == Op.PING:
        return msg.spoof_from is not None
    if over_udp:
        return True
    return op == Op.READ and msg.client is not None


class Sequencer:
    """The sending side of one channel: stamps with a fixed random sender id
    and a counter. ``offset`` (seconds) is added to the caller's clock: the
    receiver's clock minus ours, when known."""

    def __init__(self, sender=None):
        self.sender = secrets.randbits(64) if sender is None else _uint(sender)
        self.seq = 0
        self.offset = 0.0

    def stamp(self, now):
        self.seq += 1
        return Stamp(self.sender, self.seq, float(now) + self.offset)

    def stamp_list(self, now):
        """The stamp as the body carries it (for nfspd/iodframes.py)."""
        self.seq += 1
        return [self.sender, self.seq, float(now) + self.offset]


class _Window:
    __slots__ = ("top", "bits", "newest", "floor")

    def __init__(self, seq, when, floor):
        self.top = seq       # highest sequence number seen
        self.bits = 1        # bit i: top - i was seen
        self.newest = when   # highest stamp time seen
        # The guard's floor when this window was opened: a sender evicted
        # before and readmitted has a fresh bitmap that knows nothing of what
        # it sent then, all of which is stamped at or below that floor.
        self.floor = floor


class ReplayGuard:
    """The receiving side: check() accepts each (sender, seq) once, and only
    with a time within ``max_skew`` of ``now``; see the module docstring for
    the bounds and the ``floor``. Not thread-safe: the caller serialises."""

    def __init__(self, max_skew=MAX_CLOCK_SKEW, window=REPLAY_WINDOW,
                 max_senders=MAX_SENDERS, not_before=-math.inf):
        if max_skew <= 0 or window < 1 or max_senders < 1:
            raise ValueError("max_skew, window and max_senders must be positive")
        self.max_skew = float(max_skew)
        self.window = window
        self.max_senders = max_senders
        self.floor = not_before
        self.evicted = 0
        self._mask = (1 << window) - 1
        self._senders = collections.OrderedDict()   # least recently heard first

    def __len__(self):
        return len(self._senders)

    def check(self, stamp, now):
        """Record ``stamp``; raises Stale or Replayed (nothing recorded then)."""
        sender, seq, when = stamp
        off = when - now
        if not -self.max_skew <= off <= self.max_skew:
            raise Stale(f"stamp {off:+.1f} s off this iod's clock (more than "
                        f"{self.max_skew:g} s: clocks out of sync, or a replay)")
        senders = self._senders
        w = senders.get(sender)
        if w is None:
            if when <= self.floor:
                raise Replayed(f"stamp from a sender not known here, older than "
                               f"{self.floor - when:.1f} s before what may be replayed")
            self._forget(now)
            senders[sender] = _Window(seq, when, self.floor)
            return
        if when <= w.floor:
            raise Replayed(f"stamp {w.floor - when:.1f} s older than this sender's "
                           f"readmission: it may have been seen before")
        senders.move_to_end(sender)
        if seq > w.top:
            shift = seq - w.top
            w.bits = ((w.bits << shift) | 1) & self._mask if shift < self.window else 1
            w.top = seq
        else:
            back = w.top - seq
            if back >= self.window:
                raise Replayed(f"sequence number {seq} is {back} behind the newest seen")
            bit = 1 << back
            if w.bits & bit:
                raise Replayed(f"sequence number {seq} already seen")
            w.bits |= bit
        if when > w.newest:
            w.newest = when

    def _forget(self, now):
        """Room for one more sender: drop the expired, then the least
        recently heard (raising the floor over what it sent)."""
        senders = self._senders
        horizon = now - self.max_skew
        while senders:
            first = next(iter(senders))
            if senders[first].newest >= horizon:
                break
            del senders[first]
        while len(senders) >= self.max_senders:
            _, w = senders.popitem(last=False)
            self.evicted += 1
            if w.newest > self.floor:
                self.floor = w.newest


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved: take() says
    whether one is there. ``now`` is any monotonic clock."""

    def __init__(self, rate, burst):
        if rate < 0 or burst < 1:
            raise ValueError("a token bucket needs rate >= 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = None

    def take(self, now, n=1):
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False
