"""NFSv4.1 stateids (RFC 8881 section 8.2): minting, the special values, parsing.

A stateid4 is (seqid, other[12]). Our ``other`` is boot epoch (4 bytes), a
per-boot index (4 bytes) and a MAC (4 bytes) of both under a per-boot random
key: a guessed or edited ``other`` fails the MAC and is NFS4ERR_BAD_STATEID
without a table lookup, and one from an earlier boot is recognised by its
epoch and answered NFS4ERR_STALE_STATEID so the client starts recovery.
"""

import dataclasses
import hashlib
import hmac
import struct

from common.nfs4 import NFS4_OTHER_SIZE, nfsstat4
from common.nfs4error import Nfs4Error

UINT32_MAX = 0xFFFFFFFF
_ZEROS = bytes(NFS4_OTHER_SIZE)
_ONES = b"\xff" * NFS4_OTHER_SIZE


@dataclasses.dataclass(frozen=True)
class Stateid:
    seqid: int
    other: bytes


# RFC 8881 8.2.3: the special stateids.
ANONYMOUS_STATEID = Stateid(0, _ZEROS)
READ_BYPASS_STATEID = Stateid(UINT32_MAX, _ONES)
CURRENT_STATEID = Stateid(1, _ZEROS)
INVALID_STATEID = Stateid(UINT32_MAX, _ZEROS)   # what CLOSE returns (Linux does too)

ANONYMOUS = "anonymous"
READ_BYPASS = "read-bypass"
CURRENT = "current"


def special_kind(stateid):
    """ANONYMOUS, READ_BYPASS or CURRENT for those special stateids, None for an
    ordinary one; any other all-zero/all-one ``other`` (the reserved invalid
    stateid among them) is NFS4ERR_BAD_STATEID."""
    if stateid.other == _ZEROS:
        if stateid.seqid == 0:
            return ANONYMOUS
        if stateid.seqid == 1:
            return CURRENT
        raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
    if stateid.other == _ONES:
        if stateid.seqid == UINT32_MAX:
            return READ_BYPASS
        raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
    return None


def is_current_stateid(stateid):
    """True for the current stateid (seqid 1, other 0) of RFC 8881 16.2.3.1.2,
    which the COMPOUND loop replaces with the one the previous operation set."""
    return stateid == CURRENT_STATEID


def next_seqid(seqid):
    """A stateid's seqid after a change: 0 means "current" in 4.1, so it wraps to 1."""
    return 1 if seqid >= UINT32_MAX else seqid + 1


class StateidMinter:
    """Makes and checks the ``other`` field of this boot's stateids."""

    def __init__(self, epoch, secret):
        self.epoch = epoch & UINT32_MAX
        self._secret = bytes(secret)
        self._next_index = 1

    def _mac(self, head):
        return hmac.new(self._secret, head, hashlib.sha256).digest()[:4]

    def mint(self):
        """A fresh ``other`` and its index (the key of the state table)."""
        index = self._next_index
        if index > UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        self._next_index += 1
        head = struct.pack(">II", self.epoch, index)
        return head + self._mac(head), index

    def index_of(self, other):
        """The index ``other`` was minted with; STALE for another boot's, BAD for a forgery."""
        if len(other) != NFS4_OTHER_SIZE:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        epoch, index = struct.unpack(">II", other[:8])
        if epoch != self.epoch:
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE_STATEID)
        if not hmac.compare_digest(other[8:], self._mac(other[:8])):
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        return index
