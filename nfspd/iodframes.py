"""iodproto frames for the metaserver's hot path, built without the generic
encoder's per-message validation and HMAC key setup.

The bytes are exactly those of common.iodproto.encode (tests/test_iodpath_frames.py
compares them op by op): same msgpack map, same field order, same header, and
HMAC-SHA256 computed from the RFC 2104 inner and outer hash states, prepared
once per key instead of once per frame (hmac.new costs ~10 us of key setup
with OpenSSL 3, more than hashing a READ frame). The values come from the
metaserver itself (metafile, decoded NFS arguments, socket addresses), so the
generic type checks would only re-check what is already known.

No dict is built per frame: the body is packed as one flat list of keys and
values, whose msgpack encoding is the map's after the array header (msgpack
has no context: an item encodes the same inside an array or a map), so the
map header is put in its place. A WRITE's data is not handed to msgpack at
all: the bytes before and after it are packed, its bin header is made here,
and the data is copied once, into the frame.

Every method takes ``stamp``, the [sender, seq, time] list of
iodproto.Sequencer.stamp_list (None: no stamp). The key is prepared again when
the Keys object was updated (a reloaded key file).

Verifier is the other direction: REPLY and PONG frames from an iod, checked
with the same prepared key states and decoded from a view of the received
bytes, giving what iodproto.decode gives, errors included. A relayed READ's
data is the frame's trailer, outside the MAC (common/iodproto.py says why):
decode_signed checks the frame up to its MAC, and the link receives the
trailer straight into the NFS reply's buffer (nfspd/iodlink.py).
"""

import hmac
import struct

import msgpack

from common import iodproto
from common.hmacsha256 import states
from common.iodproto import HEADER, MAC_SIZE, MAGIC, MAX_BODY, VERSION, BadMac, IodProtoError, Op

# The frame header followed by the body's first byte, the map header (a fixmap:
# no op has more than 15 fields).
_HEAD_MAP = struct.Struct(">4sBBHIIB")
_BIN8, _BIN16, _BIN32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")
_LARGE = 4096   # bodies from this size on are sliced as views, not copies

PING, READ, WRITE, COMMIT, TRUNCATE, PURGE, REVOKE = (int(op) for op in (
    Op.PING, Op.READ, Op.WRITE, Op.COMMIT, Op.TRUNCATE, Op.PURGE, Op.REVOKE))


def _bin_header(n):
    """msgpack's bin header for n bytes (what Packer(use_bin_type=True) writes)."""
    if n < 0x100:
        return _BIN8.pack(0xC4, n)
    if n < 0x10000:
        return _BIN16.pack(0xC5, n)
    return _BIN32.pack(0xC6, n)


class Signer:
    def __init__(self, keys):
        self._keys = keys
        self._generation = None
        self._prepare()
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def _prepare(self):
        keys = self._keys
        self._generation = keys.generation
        key_id, key = keys.signing
        self._inner, self._outer = states(key)
        self._key_id = key_id

    def flat(self, items):
        """The frame whose body is the map of ``items``: keys and values
        alternating, {"op", "id", ["stamp"], fields...} in that order."""
        if self._generation != self._keys.generation:
            self._prepare()
        packed = self._pack(items)
        # The array header is 1 byte up to 15 items, 3 bytes up to 65535.
        skip = 1 if len(items) < 16 else 3
        rest = packed[skip:] if len(packed) < _LARGE else memoryview(packed)[skip:]
        n = len(rest) + 1
        if n > MAX_BODY:
            raise IodProtoError(f"body of {n} bytes exceeds {MAX_BODY}")
        head = _HEAD_MAP.pack(MAGIC, VERSION, self._key_id, 0, n, 0, 0x80 | len(items) >> 1)
        inner = self._inner.copy()
        inner.update(head)
        inner.update(rest)
        outer = self._outer.copy()
        outer.update(inner.digest())
        if n < _LARGE:
            return head + rest + outer.digest()
        return b"".join((head, rest, outer.digest()))

    def encode(self, body):
        """A frame for ``body``, the msgpack map {"op", "id", ["stamp"], fields...}."""
        items = []
        for kv in body.items():
            items += kv
        return self.flat(items)

    def ping(self, msg_id, stamp=None):
        if stamp is None:
            return self.flat(["op", PING, "id", msg_id, "spoof_from", None, "pad", None])
        return self.flat(["op", PING, "id", msg_id, "stamp", stamp, "spoof_from", None,
                          "pad", None])

    def read(self, msg_id, ino, seed, offset, count, client=None, source=None, head=b"",
             stamp=None, more=b""):
        # Addresses are (ip, port) tuples: msgpack packs a tuple as the array
        # iodproto.encode makes of it.
        if stamp is None:
            return self.flat(["op", READ, "id", msg_id, "ino", ino, "seed", seed,
                              "offset", offset, "count", count, "client", client,
                              "source", source, "head", head, "more", more])
        return self.flat(["op", READ, "id", msg_id, "stamp", stamp, "ino", ino, "seed", seed,
                          "offset", offset, "count", count, "client", client,
                          "source", source, "head", head, "more", more])

    def write(self, msg_id, ino, seed, offset, data, stable, client=None, source=None,
              reply=None, stamp=None):
        return b"".join(self.write_parts(msg_id, ino, seed, offset, data, stable, client,
                                         source, reply, stamp))

    def write_parts(self, msg_id, ino, seed, offset, data, stable, client=None, source=None,
                    reply=None, stamp=None):
        """write()'s frame as a list of buffers, ``data`` itself one of them:
        for sendmsg(), which copies the data straight from where it is."""
        if self._generation != self._keys.generation:
            self._prepare()
        pack = self._pack
        if stamp is None:
            before = pack(["op", WRITE, "id", msg_id, "ino", ino, "seed", seed,
                           "offset", offset, "data"])[1:]
        else:
            before = pack(["op", WRITE, "id", msg_id, "stamp", stamp, "ino", ino, "seed", seed,
                           "offset", offset, "data"])[1:]
        size = len(data)
        bin_head = _bin_header(size)
        after = pack(["stable", stable, "client", client, "source", source, "reply", reply])[1:]
        n = 1 + len(before) + len(bin_head) + size + len(after)
        if n > MAX_BODY:
            raise IodProtoError(f"body of {n} bytes exceeds {MAX_BODY}")
        pairs = 10 if stamp is None else 11
        head = _HEAD_MAP.pack(MAGIC, VERSION, self._key_id, 0, n, 0, 0x80 | pairs)
        inner = self._inner.copy()
        inner.update(head)
        inner.update(before)
        inner.update(bin_head)
        inner.update(data)
        inner.update(after)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return [head, before, bin_head, data, after, outer.digest()]

    def commit(self, msg_id, ino, seed, stamp=None):
        if stamp is None:
            return self.flat(["op", COMMIT, "id", msg_id, "ino", ino, "seed", seed])
        return self.flat(["op", COMMIT, "id", msg_id, "stamp", stamp, "ino", ino, "seed", seed])

    def truncate(self, msg_id, ino, seed, size, stamp=None):
        if stamp is None:
            return self.flat(["op", TRUNCATE, "id", msg_id, "ino", ino, "seed", seed,
                              "size", size])
        return self.flat(["op", TRUNCATE, "id", msg_id, "stamp", stamp, "ino", ino,
                          "seed", seed, "size", size])

    def purge(self, msg_id, files, stamp=None):
        files = [[ino, seed] for ino, seed in files]
        if stamp is None:
            return self.flat(["op", PURGE, "id", msg_id, "files", files])
        return self.flat(["op", PURGE, "id", msg_id, "stamp", stamp, "files", files])

    def revoke(self, msg_id, files=(), clients=(), everything=False, stamp=None):
        files = [[ino, seed] for ino, seed in files]
        return self.flat(["op", REVOKE, "id", msg_id, "stamp", stamp, "files", files,
                          "clients", list(clients), "everything", bool(everything)])


class Verifier:
    """decode() for the frames an iod sends the metaserver (REPLY, PONG):
    what iodproto.decode(frame, keys) returns or raises, with the HMAC key
    states prepared once per key and the frame read through a view. Any other
    op is handed to iodproto.decode as is."""

    def __init__(self, keys):
        self._keys = keys
        self._generation = None
        self._states = {}

    def _prepare(self):
        self._generation = self._keys.generation
        self._states = {kid: states(key) for kid, key in self._keys.by_id.items()}

    def decode(self, frame):
        """``frame``: bytes or a memoryview of exactly one whole frame (a
        datagram); a REPLY's trailer, if any, is its ``data`` (bytes)."""
        total = len(frame)
        if total < HEADER.size + MAC_SIZE:
            raise IodProtoError(f"short frame ({total} bytes)")
        signed, data_len = iodproto.frame_sizes(frame[:HEADER.size])
        if signed + data_len != total:
            return iodproto.decode(bytes(frame), self._keys)   # says what is wrong
        msg = self.decode_signed(frame[:signed])
        if data_len:
            msg.data = bytes(frame[signed:])
        return msg

    def decode_signed(self, frame):
        """A frame up to the end of its MAC (bytes or a memoryview), the
        trailer its header announces left to the caller (a REPLY's data,
        received straight where it goes): the Message, ``data`` None."""
        total = len(frame)
        if total < HEADER.size + MAC_SIZE:
            raise IodProtoError(f"short frame ({total} bytes)")
        signed_len, data_len = iodproto.frame_sizes(frame[:HEADER.size])
        if signed_len != total:
            raise IodProtoError(f"frame length {total} does not match its header "
                                f"({signed_len})")
        flags = frame[6] << 8 | frame[7]
        if flags:
            if data_len:
                raise IodProtoError("an unsigned frame or unknown flags, with a trailer")
            return iodproto.decode(bytes(frame), self._keys)   # unsigned or unknown flags
        if self._generation != self._keys.generation:
            self._prepare()
        key_id = frame[5]
        prepared = self._states.get(key_id)
        if prepared is None:
            raise BadMac(f"unknown key id {key_id}")
        view = frame if type(frame) is memoryview else memoryview(frame)
        signed = view[:total - MAC_SIZE]
        inner = prepared[0].copy()
        inner.update(signed)
        outer = prepared[1].copy()
        outer.update(inner.digest())
        if not hmac.compare_digest(outer.digest(), view[total - MAC_SIZE:]):
            raise BadMac("authentication failed")
        body = iodproto.unpack_body(signed[HEADER.size:])
        op = body.get("op") if type(body) is dict else None
        if data_len and op != Op.REPLY:
            raise IodProtoError("only a REPLY carries a trailer")
        if op != Op.REPLY and op != Op.PONG:
            return iodproto.decode(bytes(frame), self._keys)
        return iodproto.message_of(body, flags)
