"""NFSv4.1 sessions (RFC 8881 section 2.10): channel attributes, the slot table, SEQUENCE.

The slot table gives exactly-once semantics: each slot remembers the seqid of
its last request and, when the client asked (sa_cachethis) or the COMPOUND was
a lone SEQUENCE, the reply bytes, so a retry is answered from the cache instead
of being run again.

Back channel: we never send callbacks (no delegations, no layouts to recall),
so CREATE_SESSION clears CREATE_SESSION4_FLAG_CONN_BACK_CHAN (and PERSIST: a
restart loses sessions) in its reply and echoes the client's back channel
attributes unchanged (the Linux client insists they match what it sent); no
connection is ever bound to a back channel and SEQUENCE never raises
SEQ4_STATUS_CB_PATH_DOWN, since there is nothing to call back about.
"""

import collections
import dataclasses

from common.nfs4 import nfsstat4
from common.nfs4error import Nfs4Error

UINT32_MAX = 0xFFFFFFFF


# channel_dir_from_client4 / channel_dir_from_server4 (BIND_CONN_TO_SESSION)
CDFC4_FORE = 0x1
CDFC4_BACK = 0x2
CDFC4_FORE_OR_BOTH = 0x3
CDFC4_BACK_OR_BOTH = 0x7
CDFS4_FORE = 0x1
CDFS4_BACK = 0x2
CDFS4_BOTH = 0x3

# A fore channel must carry at least a COMPOUND with a SEQUENCE in it.
MIN_CHANNEL_MESSAGE = 200
MAX_CONNECTIONS_PER_SESSION = 16
# Cached replies, all sessions together: past this a reply is not kept and its
# retry gets NFS4ERR_RETRY_UNCACHED_REP (legal; memory stays bounded).
MAX_CACHED_REPLY_BYTES = 64 << 20
# A lone SEQUENCE's reply is cached even when the client asked for
# ca_maxresponsesize_cached 0; it is far smaller than this.
LONE_SEQUENCE_REPLY_MAX = 512


@dataclasses.dataclass(frozen=True)
class ChannelAttrs:
    """channel_attrs4 (rdma_ird: None or the one value the client sent)."""
    headerpadsize: int = 0
    maxrequestsize: int = 1049620
    maxresponsesize: int = 1049480
    maxresponsesize_cached: int = 8192
    maxoperations: int = 50
    maxrequests: int = 64
    rdma_ird: object = None


# What the server accepts at most; the daemon may pass its own. The Linux
# client refuses a session granting fewer operations per COMPOUND than it asked
# for (8 or 16), so maxoperations stays generous (50, as Linux nfsd).
DEFAULT_SERVER_LIMITS = ChannelAttrs()
MAX_SLOTS = 1024   # bound on maxrequests whatever the daemon passes


def negotiate_fore(client, server):
    """The fore channel we grant: the client's request clamped to our limits."""
    if client.maxrequestsize < MIN_CHANNEL_MESSAGE or client.maxresponsesize < MIN_CHANNEL_MESSAGE:
        raise Nfs4Error(nfsstat4.NFS4ERR_TOOSMALL)
    if client.maxrequests < 1 or client.maxoperations < 1:
        raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
    return ChannelAttrs(
        headerpadsize=0,
        maxrequestsize=min(client.maxrequestsize, server.maxrequestsize),
        maxresponsesize=min(client.maxresponsesize, server.maxresponsesize),
        maxresponsesize_cached=min(client.maxresponsesize_cached, server.maxresponsesize_cached),
        maxoperations=min(client.maxoperations, server.maxoperations),
        maxrequests=min(client.maxrequests, server.maxrequests, MAX_SLOTS),
        rdma_ird=None)


def negotiate_back(client):
    """The back channel is never used, so the client's values stand (no RDMA)."""
    return dataclasses.replace(client, headerpadsize=0, rdma_ird=None)


class ReplyCacheBudget:
    """The bytes of cached replies held by every session of one server."""

    def __init__(self, limit=MAX_CACHED_REPLY_BYTES):
        self.limit = limit
        self.used = 0


class _Slot:
    __slots__ = ("busy", "reply", "seqid")

    def __init__(self):
        self.seqid = 0
        self.reply = None
        self.busy = False


@dataclasses.dataclass(frozen=True)
class Replay:
    """SEQUENCE found a retry: send ``reply`` (the whole cached COMPOUND reply) as it is."""
    reply: bytes


class SlotHandle:
    """A SEQUENCE that runs: its reply fields, and complete() to finish the slot.

    The shell calls ``complete(reply_bytes)`` when the COMPOUND reply is
    encoded if it is to be cached (sa_cachethis was set, or the COMPOUND was
    SEQUENCE alone), ``complete(None)`` otherwise; a retry then gets the bytes
    or NFS4ERR_RETRY_UNCACHED_REP. It must be called whatever became of the
    COMPOUND (in a ``finally``): until then the slot is busy, its retries get
    NFS4ERR_DELAY and the client's lease cannot expire.
    """

    def __init__(self, session, slot, sequenceid, slotid, status_flags):
        self.session = session
        self._slot = slot
        self.sessionid = session.sessionid
        self.clientid = session.clientid
        self.sequenceid = sequenceid
        self.slotid = slotid
        self.highest_slotid = session.fore.maxrequests - 1
        self.target_highest_slotid = session.fore.maxrequests - 1
        self.status_flags = status_flags
        self.cachethis_limit = session.fore.maxresponsesize_cached

    def complete(self, reply):
        slot, budget = self._slot, self.session.budget
        if not (slot.busy and slot.seqid == self.sequenceid):
            return
        slot.busy = False
        if reply is None or self.session.destroyed:
            return
        # The COMPOUND layer answers NFS4ERR_REP_TOO_BIG_TO_CACHE for a larger
        # cachethis reply; this only keeps a mistake from costing memory.
        limit = max(self.cachethis_limit, LONE_SEQUENCE_REPLY_MAX)
        if len(reply) <= limit and budget.used + len(reply) <= budget.limit:
            slot.reply = bytes(reply)
            budget.used += len(reply)


class Session:
    def __init__(self, sessionid, clientid, flags, fore, back, cb_program, budget):
        self.budget = budget
        self.destroyed = False
        self.sessionid = sessionid
        self.clientid = clientid
        self.flags = flags
        self.fore = fore
        self.back = back
        self.cb_program = cb_program
        self.slots = [_Slot() for _ in range(fore.maxrequests)]
        self.connections = collections.OrderedDict()   # connection id -> None, oldest first

    def bind(self, connection):
        if connection is None:
            return
        self.connections[connection] = None
        self.connections.move_to_end(connection)
        while len(self.connections) > MAX_CONNECTIONS_PER_SESSION:
            self.connections.popitem(last=False)

    def destroy(self):
        """Give the cached replies' bytes back; late complete() calls keep nothing."""
        self.destroyed = True
        for slot in self.slots:
            self._forget_reply(slot)

    def _forget_reply(self, slot):
        if slot.reply is not None:
            self.budget.used -= len(slot.reply)
            slot.reply = None

    def busy(self):
        return any(slot.busy for slot in self.slots)

    def sequence(self, sequenceid, slotid, status_flags):
        """RFC 8881 2.10.6.1: the slot's seqid decides new request, retry or error."""
        if not 0 <= slotid < len(self.slots):
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSLOT)
        slot = self.slots[slotid]
        if sequenceid == slot.seqid and slot.seqid != 0:
            if slot.busy:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
            if slot.reply is None:
                raise Nfs4Error(nfsstat4.NFS4ERR_RETRY_UNCACHED_REP)
            return Replay(slot.reply)
        if slot.busy or sequenceid != (slot.seqid + 1) & UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SEQ_MISORDERED)
        slot.seqid = sequenceid
        self._forget_reply(slot)
        slot.busy = True
        return SlotHandle(self, slot, sequenceid, slotid, status_flags)
