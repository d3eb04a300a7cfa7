"""Byte-range lock ranges of one file (RFC 8881 section 9), pure and advisory.

Ranges are half-open [start, end) with end = 2**64 for "to end of file"
(length 0xffffffffffffffff). Each owner's ranges on a file never overlap and
adjacent or overlapping ranges of one type are merged, so a later unlock of
the middle splits one range in two, as POSIX locks behave. A request conflicts
with another owner's overlapping range when either is a write lock; ranges of
one owner never conflict with each other (an upgrade replaces them).

Locks are advisory: READ and WRITE never check them (no NFS4ERR_LOCKED for
byte-range locks), as with the Linux client's POSIX and flock locks.
"""

import dataclasses

from common.nfs4 import NFS4_UINT64_MAX, nfsstat4
from common.nfs4error import Nfs4Error

TO_EOF = 1 << 64

# nfs_lock_type4
READ_LT = 1
WRITE_LT = 2
READW_LT = 3   # blocking variants: we never call back, so they are tried once
WRITEW_LT = 4


@dataclasses.dataclass(frozen=True)
class LockDenied:
    """LOCK4denied: the lock in the way and its owner."""
    offset: int
    length: int
    locktype: int
    clientid: int
    owner: bytes


@dataclasses.dataclass
class Range:
    owner: object         # hashable key of the lock owner
    start: int
    end: int
    write: bool


def lock_range(offset, length):
    """[start, end) for an (offset, length) of LOCK, LOCKT or LOCKU.

    Zero length and offset+length past 2**64 are NFS4ERR_INVAL (RFC 8881
    18.10.4). We keep ranges as Python ints, so every 64-bit range is
    supported and NFS4ERR_BAD_RANGE (for servers with narrower offsets) never
    applies.
    """
    if not (0 <= offset <= NFS4_UINT64_MAX and 0 <= length <= NFS4_UINT64_MAX):
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    if length == 0:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    if length == NFS4_UINT64_MAX:
        return offset, TO_EOF
    if offset + length > TO_EOF:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    return offset, offset + length


def is_write(locktype):
    if locktype in (WRITE_LT, WRITEW_LT):
        return True
    if locktype in (READ_LT, READW_LT):
        return False
    raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)


def range_length(start, end):
    return NFS4_UINT64_MAX if end == TO_EOF else end - start


class FileLocks:
    """The ranges every lock owner holds on one file."""

    def __init__(self):
        self.ranges = []

    def conflict(self, owner, start, end, write):
        """The first other owner's range that a lock of this kind over [start, end)
        runs into, or None."""
        for r in self.ranges:
            if r.owner != owner and r.start < end and start < r.end and (write or r.write):
                return r
        return None

    def count(self, owner):
        return sum(1 for r in self.ranges if r.owner == owner)

    def owners(self):
        return {r.owner for r in self.ranges}

    def held_by(self, owner):
        return [r for r in self.ranges if r.owner == owner]

    def after_set(self, owner, start, end, write):
        """The owner's ranges once [start, end) is locked (write or read) or,
        with write=None, unlocked; the caller checks bounds before applying."""
        mine = []
        for r in self.held_by(owner):
            if r.end <= start or end <= r.start:
                mine.append(r)
                continue
            if r.start < start:
                mine.append(Range(owner, r.start, start, r.write))
            if end < r.end:
                mine.append(Range(owner, end, r.end, r.write))
        if write is not None:
            mine.append(Range(owner, start, end, write))
        mine.sort(key=lambda r: r.start)
        merged = []
        for r in mine:
            last = merged[-1] if merged else None
            if last is not None and last.write == r.write and r.start <= last.end:
                last.end = max(last.end, r.end)
            else:
                merged.append(Range(owner, r.start, r.end, r.write))
        return merged

    def replace(self, owner, ranges):
        self.ranges = [r for r in self.ranges if r.owner != owner] + list(ranges)

    def drop_owner(self, owner):
        self.ranges = [r for r in self.ranges if r.owner != owner]
