"""NFSv4.1 server state, pure: client ids, sessions, leases, grace, opens and locks.

Parts: common/nfs4sessions (channel attributes, slots, SEQUENCE), nfs4opens (stateids,
share reservations, locks: a mixin of Nfs4State), nfs4layoutstate (pNFS layouts, a
mixin too), nfs4locks (byte ranges),
nfs4stateid (stateid minting and the special stateids), nfs4record (the durable
client record; nfs4recovery stores it), common/nfs4error (Nfs4Error).

Sans-IO: every call that depends on time takes ``now`` (seconds, monotonic);
no clocks, sockets or files. Statuses are raised as ``Nfs4Error(nfsstat4.X)``
(``.denied`` holds the LockDenied of a LOCK or LOCKT conflict). Values are plain:
clientid int, sessionid bytes, Stateid(seqid, other), file = the file handle
bytes, owner = the owner bytes, principal = a str naming the caller,
connection = any hashable id of the transport connection.

API (one method per operation, named as RFC 8881 names it):
  st = Nfs4State(now=, boot_epoch=, secret=, previous_record=, lease_time=90,
                 grace_time=None, server_limits=ChannelAttrs(...))
  st.exchange_id(owner, verifier, principal, flags, now) -> ExchangeIdResult
  st.create_session(clientid, sequenceid, flags, fore, back, principal, now,
                    connection=None, cb_program=0) -> CreateSessionResult
  st.destroy_session(sessionid)            st.destroy_clientid(clientid)
  st.bind_conn_to_session(sessionid, connection, direction, now) -> CDFS4_*
  st.connection_closed(connection)          st.session_connections(sessionid) -> [ids]
  st.sequence(sessionid, sequenceid, slotid, highest_slotid, cachethis, now,
              connection=None) -> Replay(reply) | SlotHandle (.complete(bytes|None))
  st.reclaim_complete(clientid, one_fs, now)
  st.open(clientid, owner, file, share_access, share_deny, now, reclaim=False) -> OpenResult
  st.open_downgrade(clientid, stateid, file, share_access, share_deny) -> Stateid
  st.close(clientid, stateid, file) -> INVALID_STATEID
  st.check_io(clientid, stateid, file, write, now)  READ (write=False), WRITE and
                                                    SETATTR of size (write=True)
  st.lock(clientid, file, locktype, offset, length, now, reclaim=False,
          open_stateid=, lock_owner=  |  lock_stateid=) -> Stateid
  st.locku(clientid, stateid, file, locktype, offset, length) -> Stateid
  st.lockt(clientid, owner, file, locktype, offset, length, now)  (None or DENIED)
  st.layoutget(clientid, stateid, file, iomode, now, fsid=, ip=, data=) -> Stateid
  st.layoutreturn_file(clientid, stateid, file, iomode, offset, length) -> Stateid|None
  st.layoutreturn_all(clientid, fsid=None)   st.layoutcommit(clientid, stateid, file)
  st.layouts_of_file(file)  st.forget_file_layouts(file)  st.take_revocations()
  st.test_stateid(clientid, stateids) -> [nfsstat4]
  st.free_stateid(clientid, stateid)       st.delegreturn(clientid, stateid)
  st.in_grace(now)    st.expire(now) -> [ExpiredClient]
  st.record() -> bytes, st.record_generation (changes when the record must be stored)
  special_kind(stateid), is_current_stateid(stateid), INVALID_STATEID (nfs4stateid)

Decisions:
- Leases: a client that sent no SEQUENCE for lease_time is expired: expire(now)
  drops it whole (client id, sessions, opens, locks), as Linux nfsd did before
  its courteous server; and a request that conflicts with an expired client's
  open or lock drops that client at once, so the outcome never depends on when
  the shell last called expire(). A dropped client learns it from
  NFS4ERR_BADSESSION / NFS4ERR_STALE_CLIENTID, so no revocation flags are ever
  set in sr_status_flags (the SEQ4_STATUS_* constants are defined for the codec).
- Grace: only after a restart whose previous record named clients, for
  grace_time (default lease_time) or until every recorded client sent
  RECLAIM_COMPLETE. A client enters the record at its RECLAIM_COMPLETE (as Linux
  nfsd does for 4.1), and the previous boot's entries stay in it until grace
  ends: a restart during grace lets the same clients reclaim again, while a
  client that let a whole grace period pass without finishing cannot reclaim
  after a later restart, since others may have taken what it held meanwhile
  (the edge cases of RFC 8881 8.4.3).
- CLOSE frees the byte-range locks taken through that open (RFC 8881 18.2.4
  lets the server free them; the Linux client unlocks first anyway).
- Bounds: every table has a constant (MAX_* here, in nfs4opens and nfs4sessions). A full table answers NFS4ERR_DELAY
  when time or other clients will free it (the global tables) and
  NFS4ERR_SERVERFAULT when only the same client could (its own caps), since a
  DELAY there would be retried forever; NFS4ERR_RESOURCE is not a 4.1 status.
- Share reservations are enforced for I/O with the anonymous stateids
  (NFS4ERR_LOCKED, as Linux); byte-range locks are advisory (nfs4locks).
"""

import dataclasses
import hashlib
import hmac
import secrets
import struct

from common.nfs4 import (
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
    EXCHGID4_FLAG_USE_NON_PNFS,
    EXCHGID4_FLAG_USE_PNFS_MDS,
    NFS4_VERIFIER_SIZE,
    nfsstat4,
)
from common.nfs4error import Nfs4Error
from common.nfs4sessions import (
    CDFC4_FORE,
    CDFC4_FORE_OR_BOTH,
    CDFS4_FORE,
    DEFAULT_SERVER_LIMITS,
    ChannelAttrs,
    Replay,
    ReplyCacheBudget,
    Session,
    SlotHandle,
    negotiate_back,
    negotiate_fore,
)
from nfspd.nfs4layoutstate import LayoutState
from nfspd.nfs4locks import LockDenied
from nfspd.nfs4opens import (  # noqa: F401 (re-exported for the COMPOUND layer)
    MAX_LOCK_RANGES,
    MAX_LOCK_RANGES_PER_OWNER,
    MAX_OWNERS_PER_CLIENT,
    MAX_STATEIDS,
    MAX_STATEIDS_PER_CLIENT,
    OpenResult,
    OpensAndLocks,
)
from nfspd.nfs4record import NFS4_OPAQUE_LIMIT, decode_record, encode_record
from nfspd.nfs4stateid import (
    INVALID_STATEID,
    Stateid,
    StateidMinter,
    is_current_stateid,
    special_kind,
)

__all__ = [
    "INVALID_STATEID",
    "ChannelAttrs",
    "LockDenied",
    "Nfs4Error",
    "Nfs4State",
    "OpenResult",
    "Replay",
    "SlotHandle",
    "Stateid",
    "is_current_stateid",
    "special_kind",
]

UINT32_MAX = 0xFFFFFFFF




DEFAULT_LEASE_TIME = 90

# Bounds of every table.
MAX_CLIENTS = 1024                 # confirmed and unconfirmed client ids (DELAY)
MAX_SESSIONS_PER_CLIENT = 8        # (SERVERFAULT)
# stateids, owners and lock ranges: nfs4opens;
# (slots per session: nfs4sessions.MAX_SLOTS; connections: MAX_CONNECTIONS_PER_SESSION)


@dataclasses.dataclass(frozen=True)
class ExchangeIdResult:
    clientid: int
    sequenceid: int
    flags: int


@dataclasses.dataclass(frozen=True)
class CreateSessionResult:
    sessionid: bytes
    sequenceid: int
    flags: int
    fore: ChannelAttrs
    back: ChannelAttrs


@dataclasses.dataclass(frozen=True)
class ExpiredClient:
    clientid: int
    owner: bytes
    principal: str


class _Client:
    def __init__(self, clientid, owner, verifier, principal, now):
        self.clientid = clientid
        self.owner = owner
        self.verifier = verifier
        self.principal = principal
        self.confirmed = False
        self.cs_seq = 0          # CREATE_SESSION's one slot: last executed sequence
        self.cs_reply = None
        self.last_renew = now
        self.sessions = {}
        self.open_owners = {}    # owner bytes -> set of open state indices
        self.lock_owners = {}    # owner bytes -> set of lock state indices
        self.nstates = 0
        self.reclaim_complete = False

    @property
    def identity(self):
        return (self.owner, self.principal)


def _lease_expired(client, lease_time, now):
    return now - client.last_renew >= lease_time


class Nfs4State(OpensAndLocks, LayoutState):
    def __init__(self, *, now, boot_epoch, secret=None, previous_record=None,
                 lease_time=DEFAULT_LEASE_TIME, grace_time=None,
                 server_limits=DEFAULT_SERVER_LIMITS, pnfs=False):
        previous_epoch, previous = (0, frozenset())
        if previous_record:
            previous_epoch, previous = decode_record(previous_record)
        # Client ids and stateids carry the epoch: it must differ from the
        # previous boot's even when the daemon restarts within a second.
        epoch = boot_epoch & UINT32_MAX
        if previous_record and epoch <= previous_epoch:
            epoch = (previous_epoch + 1) & UINT32_MAX
        self.epoch = epoch
        self._secret = bytes(secret) if secret is not None else secrets.token_bytes(16)
        self._minter = StateidMinter(epoch, self._secret)
        self.lease_time = lease_time
        self.server_limits = server_limits
        self._clients = {}
        self._confirmed_by_owner = {}
        self._unconfirmed_by_owner = {}
        self._sessions = {}
        self._reply_budget = ReplyCacheBudget()
        self._init_opens_and_locks()
        self._init_layouts()
        # A metadata server of pNFS or a plain server: Linux refuses a reply
        # with both USE_PNFS_MDS and USE_NON_PNFS (nfs4_check_cl_exchange_flags),
        # though RFC 8881 13.1 allows it.
        self._pnfs_flag = EXCHGID4_FLAG_USE_PNFS_MDS if pnfs else EXCHGID4_FLAG_USE_NON_PNFS
        self._next_client = 1
        self._next_session = 1
        # Grace (RFC 8881 8.4.2): only clients of the previous record may reclaim.
        self._previous = set(previous)
        self._completed = set()
        self._grace_end = now + (lease_time if grace_time is None else grace_time)
        if not self._previous:
            self._grace_end = now
        self._recorded = None
        self.record_generation = 0
        self._touch_record()

    # ---- the durable record -------------------------------------------------

    def _record_set(self):
        live = {c.identity for c in self._clients.values() if c.confirmed and c.reclaim_complete}
        return frozenset(live | self._previous)

    def _touch_record(self):
        current = self._record_set()
        if current != self._recorded:
            self._recorded = current
            self.record_generation += 1

    def record(self):
        """The bytes to store durably, for the next boot's previous_record."""
        return encode_record(self.epoch, self._recorded)

    # ---- grace --------------------------------------------------------------

    def in_grace(self, now):
        return now < self._grace_end and not self._previous <= self._completed

    def _end_grace_if_over(self, now):
        if self._previous and not self.in_grace(now):
            self._previous = set()
            self._completed = set()
            self._grace_end = min(self._grace_end, now)
            self._touch_record()

    def _check_reclaim(self, client, now):
        # Linux nfsd's order: outside grace or after RECLAIM_COMPLETE there is
        # nothing to reclaim; a client the record does not know never had state.
        if not self.in_grace(now) or client.reclaim_complete:
            raise Nfs4Error(nfsstat4.NFS4ERR_NO_GRACE)
        if client.identity not in self._previous:
            raise Nfs4Error(nfsstat4.NFS4ERR_RECLAIM_BAD)

    def _check_new_state(self, client, reclaim, now):
        if reclaim:
            self._check_reclaim(client, now)
        elif self.in_grace(now):
            raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)

    def reclaim_complete(self, clientid, one_fs, now):
        """RECLAIM_COMPLETE (RFC 8881 18.51); rca_one_fs is accepted and ignored
        (we reclaim per client, not per file system)."""
        client = self._client(clientid)
        if one_fs:
            return
        if client.reclaim_complete:
            raise Nfs4Error(nfsstat4.NFS4ERR_COMPLETE_ALREADY)
        client.reclaim_complete = True
        if client.identity in self._previous:
            self._completed.add(client.identity)
        self._touch_record()
        self._end_grace_if_over(now)

    # ---- client ids ---------------------------------------------------------

    def _client(self, clientid):
        client = self._clients.get(clientid)
        if client is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE_CLIENTID)
        return client

    def _exchange_result(self, client):
        flags = self._pnfs_flag
        if client.confirmed:
            flags |= EXCHGID4_FLAG_CONFIRMED_R
        return ExchangeIdResult(client.clientid, (client.cs_seq + 1) & UINT32_MAX, flags)

    def exchange_id(self, owner, verifier, principal, flags, now):
        """EXCHANGE_ID, the case table of RFC 8881 18.35.5. Only SP4_NONE state
        protection is handled here; the COMPOUND layer refuses the others."""
        owner, verifier = bytes(owner), bytes(verifier)
        if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT or len(verifier) != NFS4_VERIFIER_SIZE:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        if flags & EXCHGID4_FLAG_CONFIRMED_R:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        confirmed = self._confirmed_by_owner.get(owner)
        if flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A:
            if confirmed is None:
                raise Nfs4Error(nfsstat4.NFS4ERR_NOENT)
            if confirmed.principal != principal:
                raise Nfs4Error(nfsstat4.NFS4ERR_PERM)
            if confirmed.verifier != verifier:
                raise Nfs4Error(nfsstat4.NFS4ERR_NOT_SAME)
            confirmed.last_renew = now
            return self._exchange_result(confirmed)
        if confirmed is not None:
            if confirmed.principal != principal:
                if not _lease_expired(confirmed, self.lease_time, now):
                    raise Nfs4Error(nfsstat4.NFS4ERR_CLID_INUSE)
            elif confirmed.verifier == verifier:
                confirmed.last_renew = now
                return self._exchange_result(confirmed)
            # Otherwise the client restarted (or the squatted owner's lease ran
            # out): a new record, and the old one goes when the new is confirmed.
        unconfirmed = self._unconfirmed_by_owner.pop(owner, None)
        if unconfirmed is not None:
            self._drop_client(unconfirmed)
        if len(self._clients) >= MAX_CLIENTS:
            self.expire(now)
            if len(self._clients) >= MAX_CLIENTS:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
        if self._next_client > UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        clientid = (self.epoch << 32) | self._next_client
        self._next_client += 1
        client = _Client(clientid, owner, verifier, principal, now)
        self._clients[clientid] = client
        self._unconfirmed_by_owner[owner] = client
        return self._exchange_result(client)

    def create_session(self, clientid, sequenceid, flags, fore, back, principal, now,
                       connection=None, cb_program=0):
        """CREATE_SESSION (RFC 8881 18.36) with its own one-slot replay cache;
        the first one confirms the client id."""
        client = self._client(clientid)
        if client.cs_reply is not None and sequenceid == client.cs_seq:
            return client.cs_reply
        if sequenceid != (client.cs_seq + 1) & UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SEQ_MISORDERED)
        if principal != client.principal:
            raise Nfs4Error(nfsstat4.NFS4ERR_CLID_INUSE)
        if len(client.sessions) >= MAX_SESSIONS_PER_CLIENT:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        fore = negotiate_fore(fore, self.server_limits)
        back = negotiate_back(back)
        if not client.confirmed:
            old = self._confirmed_by_owner.get(client.owner)
            if old is not None:
                self._drop_client(old)
            del self._unconfirmed_by_owner[client.owner]
            self._confirmed_by_owner[client.owner] = client
            client.confirmed = True
        counter = self._next_session
        self._next_session += 1
        head = struct.pack(">QI", clientid, counter & UINT32_MAX)
        sessionid = head + hmac.new(self._secret, head, hashlib.sha256).digest()[:4]
        session = Session(sessionid, clientid, 0, fore, back, cb_program, self._reply_budget)
        session.bind(connection)
        client.sessions[sessionid] = session
        self._sessions[sessionid] = session
        client.cs_seq = sequenceid
        client.cs_reply = CreateSessionResult(sessionid, sequenceid, 0, fore, back)
        client.last_renew = now
        self._touch_record()
        return client.cs_reply

    def destroy_session(self, sessionid):
        session = self._sessions.pop(bytes(sessionid), None)
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        self._clients[session.clientid].sessions.pop(session.sessionid, None)
        session.destroy()

    def destroy_clientid(self, clientid):
        client = self._client(clientid)
        if client.sessions or client.nstates:
            raise Nfs4Error(nfsstat4.NFS4ERR_CLIENTID_BUSY)
        self._drop_client(client)

    def bind_conn_to_session(self, sessionid, connection, direction, now):
        """BIND_CONN_TO_SESSION: fore channel only (no back channel, see nfs4sessions)."""
        session = self._sessions.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        if direction not in (CDFC4_FORE, CDFC4_FORE_OR_BOTH):
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        session.bind(connection)
        self._clients[session.clientid].last_renew = now
        return CDFS4_FORE

    def connection_closed(self, connection):
        for session in self._sessions.values():
            session.connections.pop(connection, None)

    def session_connections(self, sessionid):
        session = self._sessions.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        return list(session.connections)

    def sequence(self, sessionid, sequenceid, slotid, highest_slotid, cachethis, now,
                 connection=None):
        """SEQUENCE (RFC 8881 18.46). sa_highest_slotid and sa_cachethis are
        accepted for the record: the shell decides what to cache (see SlotHandle)."""
        session = self._sessions.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        outcome = session.sequence(sequenceid, slotid, status_flags=0)
        # SP4_NONE: a SEQUENCE binds the connection it came on (RFC 8881 2.10.5.1).
        session.bind(connection)
        self._clients[session.clientid].last_renew = now
        return outcome

    # ---- leases -------------------------------------------------------------

    def expire(self, now):
        """Drop every client whose lease ran out; returns them for the log."""
        gone = []
        for client in list(self._clients.values()):
            if _lease_expired(client, self.lease_time, now) and self._droppable(client):
                gone.append(ExpiredClient(client.clientid, client.owner, client.principal))
                self._drop_client(client)
        self._end_grace_if_over(now)
        return gone

    def _droppable(self, client):
        # A client with a request running is not expired under it.
        return not any(s.busy() for s in client.sessions.values())

    def _expired_holder(self, clientid, now):
        holder = self._clients.get(clientid)
        if holder is not None and _lease_expired(holder, self.lease_time, now) \
                and self._droppable(holder):
            self._drop_client(holder)
            return True
        return False

    def _drop_client(self, client):
        self._drop_client_layouts(client.clientid)
        for indices in list(client.open_owners.values()):
            for index in list(indices):
                self._remove_open(self._states[index])
        for indices in list(client.lock_owners.values()):
            for index in list(indices):
                self._remove_lock(self._states[index])
        for session in client.sessions.values():
            self._sessions.pop(session.sessionid, None)
            session.destroy()
        client.sessions.clear()
        self._clients.pop(client.clientid, None)
        for table in (self._confirmed_by_owner, self._unconfirmed_by_owner):
            if table.get(client.owner) is client:
                del table[client.owner]
        self._touch_record()
