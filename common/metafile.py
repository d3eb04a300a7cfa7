"""The metafile: what the metaserver stores in place of a regular file's data (paper 5.5.1).

A metafile is a fixed 56-byte record, big-endian::

    magic "NFSPmeta" | version u8 | flags u8 | reserved u16 | layout_gen u32 |
    seed u64 | size u64 | trunc_to u64 | stripe_unit u32 | create_verf 8 bytes | crc32 u32

The seed tells apart successive files that lived in the same inode: the iods
know data only by (inode, seed), so data an iod has not purged yet can never be
read through a new file that reuses the inode.

NO_DATA marks a file that nothing has been written to yet (made empty, never
written, no layout for writing given out): no data server holds data of it,
so its removal hands nothing to the purge (nfspd/fs/objects.py). Cleared,
before any data can reach a data server, by the first WRITE and the first
layout for writing (nfspd/fs/fileio.py). Without the flag (every metafile
made before it was) a removal purges, as always.

trunc_to (flag TRUNC_PENDING) records that the file was shrunk but the data
beyond trunc_to may still exist on the data servers; until that truncation is
carried out, growing the file again must not expose the old bytes. Keeping it in
the metafile makes this survive a crash of the metaserver.

The crc catches torn or foreign files; decode() raises MetafileError on
anything that is not exactly a valid record. Pure: no I/O.

Where the size lives. A metafile comes in two forms, told apart by its length
alone, so that a stat answers GETATTR, LOOKUP and READDIRPLUS without opening
it (issue 15):

- sized by its length: the file is HEADER + size bytes long and that length
  is the size (the record's own size field and pending truncation are then
  stale and ignored); its data is a hole, or, where the record is kept in
  data, the record, 8 zero bytes, then a hole. One ftruncate changes the
  size, atomically. The usual form.
- sized by its record: exactly SIZE bytes, the record holds the size. The form
  of every metafile made before issue 15 (still read, and turned into the
  other form when next written), of a file whose truncation is pending
  (trunc_to must be read with the size: the switch between forms is one
  ftruncate, so after a crash the metafile is entirely before or entirely
  after the change), and of a size too large for the metadata file system
  (HEADER + size beyond its largest file).

Any other length is not a metafile. Where the record itself is kept (an
extended attribute, or the first SIZE bytes): common/runtime/metarecord.py.
"""

import dataclasses
import os
import struct
import zlib

MAGIC = b"NFSPmeta"
VERSION = 1
DEFAULT_STRIPE_UNIT = 65536
MAX_SIZE = (1 << 63) - 1

FLAG_CREATE_VERF = 0x01
FLAG_TRUNC_PENDING = 0x02
FLAG_NO_DATA = 0x04
_KNOWN_FLAGS = FLAG_CREATE_VERF | FLAG_TRUNC_PENDING | FLAG_NO_DATA

_BODY = struct.Struct(">8sBBHIQQQI8s")
_CRC = struct.Struct(">I")
SIZE = _BODY.size + _CRC.size  # 56
HEADER = 64  # a metafile sized by its length is HEADER + size bytes long


class MetafileError(ValueError):
    """Bytes that are not a valid metafile."""


_SEED_BATCH = struct.Struct("<512Q")
_seeds = []


def new_seed():
    """A random nonzero 64-bit seed (0 is kept free as 'no seed'). Drawn
    from the kernel's random bytes 4 KiB at a time: os.urandom costs 6 us a
    call on PyPy (0.6 on CPython), and every CREATE takes a seed. Threads
    may share the batch: list.pop is atomic under the GIL, and two refills
    at once only draw more."""
    while True:
        try:
            return _seeds.pop()
        except IndexError:
            _seeds.extend(s for s in _SEED_BATCH.unpack(os.urandom(_SEED_BATCH.size)) if s)


# A forked child (a worker) drawing its parent's pending seeds would give two
# files one seed, that is one set of datafiles.
os.register_at_fork(after_in_child=_seeds.clear)


@dataclasses.dataclass(frozen=True)
class Metafile:
    seed: int
    size: int
    stripe_unit: int = DEFAULT_STRIPE_UNIT
    layout_gen: int = 0
    create_verf: "bytes | None" = None
    trunc_to: "int | None" = None
    no_data: bool = False

    def __post_init__(self):
        if not 0 < self.seed < 1 << 64:
            raise MetafileError(f"seed out of range: {self.seed}")
        if not 0 <= self.size <= MAX_SIZE:
            raise MetafileError(f"size out of range: {self.size}")
        if not 0 < self.stripe_unit < 1 << 32:
            raise MetafileError(f"stripe unit out of range: {self.stripe_unit}")
        if not 0 <= self.layout_gen < 1 << 32:
            raise MetafileError(f"layout generation out of range: {self.layout_gen}")
        if self.create_verf is not None and (
                not isinstance(self.create_verf, bytes) or len(self.create_verf) != 8):
            raise MetafileError("create verifier must be 8 bytes")
        if self.trunc_to is not None and not 0 <= self.trunc_to <= MAX_SIZE:
            raise MetafileError(f"trunc_to out of range: {self.trunc_to}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def encode(self):
        flags = 0
        if self.create_verf is not None:
            flags |= FLAG_CREATE_VERF
        if self.trunc_to is not None:
            flags |= FLAG_TRUNC_PENDING
        if self.no_data:
            flags |= FLAG_NO_DATA
        body = _BODY.pack(MAGIC, VERSION, flags, 0, self.layout_gen, self.seed, self.size,
                          self.trunc_to or 0, self.stripe_unit, self.create_verf or bytes(8))
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, data):
        data = bytes(data)
        if len(data) != SIZE:
            raise MetafileError(f"metafile is {len(data)} bytes, expected {SIZE}")
        body, (crc,) = data[:_BODY.size], _CRC.unpack_from(data, _BODY.size)
        magic, version, flags, reserved, layout_gen, seed, size, trunc_to, stripe_unit, verf = \
            _BODY.unpack(body)
        if magic != MAGIC:
            raise MetafileError("bad magic")
        if version != VERSION:
            raise MetafileError(f"unknown metafile version {version}")
        if zlib.crc32(body) != crc:
            raise MetafileError("checksum mismatch")
        if flags & ~_KNOWN_FLAGS or reserved:
            raise MetafileError(f"unknown flags {flags:#x}/{reserved:#x}")
        if not flags & FLAG_CREATE_VERF and verf != bytes(8):
            raise MetafileError("verifier bytes without verifier flag")
        if not flags & FLAG_TRUNC_PENDING and trunc_to:
            raise MetafileError("trunc_to without pending flag")
        return cls(seed=seed, size=size, stripe_unit=stripe_unit, layout_gen=layout_gen,
                   create_verf=verf if flags & FLAG_CREATE_VERF else None,
                   trunc_to=trunc_to if flags & FLAG_TRUNC_PENDING else None,
                   no_data=bool(flags & FLAG_NO_DATA))


def size_of_length(length):
    """The file's size when a metafile of this length is sized by its length,
    else None (its record tells)."""
    return length - HEADER if length >= HEADER else None


def read(head, length):
    """The Metafile whose first bytes are ``head`` (at least SIZE, more is
    ignored for a metafile sized by its length) and whose length is ``length``."""
    size = size_of_length(length)
    if size is None:
        return Metafile.decode(head)
    meta = Metafile.decode(bytes(head[:SIZE]))
    return meta.replace(size=size, trunc_to=None)


def of_file(data):
    """The Metafile of a whole metafile's bytes."""
    return read(data, len(data))
