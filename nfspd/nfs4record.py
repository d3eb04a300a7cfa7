"""The durable client record: who may reclaim after a restart (RFC 8881 8.4.3).

It holds the boot epoch and the identities (co_ownerid, principal) of the
clients that had finished reclaiming (RECLAIM_COMPLETE) and so may hold state.
Encoding, stable and versioned: magic, version, epoch, count, then per client
length-prefixed co_ownerid and UTF-8 principal sorted, then a CRC32 of all of
it, so a torn or edited file is detected rather than half-believed.
"""

import struct
import zlib

from common.nfs4 import NFS4_OPAQUE_LIMIT

MAGIC = b"NFSP4CL\n"
VERSION = 1
MAX_RECORD_CLIENTS = 4096


class RecordError(ValueError):
    pass


def encode_record(epoch, identities):
    parts = [MAGIC, struct.pack(">III", VERSION, epoch & 0xFFFFFFFF, len(identities))]
    for owner, principal in sorted(identities):
        p = principal.encode("utf-8")
        parts += [struct.pack(">I", len(owner)), owner, struct.pack(">I", len(p)), p]
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


def decode_record(data):
    """(epoch, frozenset of (owner bytes, principal str)); RecordError if damaged."""
    data = bytes(data)
    if len(data) < len(MAGIC) + 16 or not data.startswith(MAGIC):
        raise RecordError("not an NFSv4 client record")
    body, (crc,) = data[:-4], struct.unpack(">I", data[-4:])
    if zlib.crc32(body) != crc:
        raise RecordError("checksum mismatch")
    version, epoch, count = struct.unpack_from(">III", body, len(MAGIC))
    if version != VERSION:
        raise RecordError(f"unknown record version {version}")
    if count > MAX_RECORD_CLIENTS:
        raise RecordError("too many clients")
    pos = len(MAGIC) + 12
    out = set()
    try:
        for _ in range(count):
            fields = []
            for _ in range(2):
                (n,) = struct.unpack_from(">I", body, pos)
                pos += 4
                if n > NFS4_OPAQUE_LIMIT or pos + n > len(body):
                    raise RecordError("bad field length")
                fields.append(body[pos:pos + n])
                pos += n
            out.add((fields[0], fields[1].decode("utf-8")))
    except (struct.error, UnicodeDecodeError) as e:
        raise RecordError(str(e)) from None
    if pos != len(body):
        raise RecordError("trailing bytes")
    return epoch, frozenset(out)
