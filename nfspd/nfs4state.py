"""NFSv4.1 server state, pure: client ids, sessions, leases, grace, opens and locks.

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
  st.connection_closed(connection)
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
  nfsd does for 4.1): a client that had not finished reclaiming when the server
  restarted again cannot reclaim state it might no longer rightly hold. The
  previous boot's entries stay in the record until grace ends.
- CLOSE frees the byte-range locks taken through that open (RFC 8881 18.2.4
  lets the server free them; the Linux client unlocks first anyway).
- Bounds: every table has a constant below. A full table answers NFS4ERR_DELAY
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

from common.nfs4 import NFS4_VERIFIER_SIZE, nfsstat4
from nfspd.nfs4error import Nfs4Error
from nfspd.nfs4locks import (
    READ_LT, WRITE_LT, FileLocks, LockDenied, is_write, lock_range, range_length)
from nfspd.nfs4record import NFS4_OPAQUE_LIMIT, decode_record, encode_record
from nfspd.nfs4sessions import (
    CDFC4_FORE, CDFC4_FORE_OR_BOTH, CDFS4_FORE, DEFAULT_SERVER_LIMITS, ChannelAttrs,
    Replay, Session, SlotHandle, negotiate_back, negotiate_fore)
from nfspd.nfs4stateid import (
    ANONYMOUS, CURRENT, INVALID_STATEID, READ_BYPASS, Stateid, StateidMinter,
    is_current_stateid, next_seqid, special_kind)

__all__ = [
    "Nfs4State", "Nfs4Error", "Stateid", "ChannelAttrs", "Replay", "SlotHandle",
    "LockDenied", "INVALID_STATEID", "special_kind", "is_current_stateid"]

UINT32_MAX = 0xFFFFFFFF

EXCHGID4_FLAG_SUPP_MOVED_REFER = 0x00000001
EXCHGID4_FLAG_SUPP_MOVED_MIGR = 0x00000002
EXCHGID4_FLAG_SUPP_FENCE_OPS = 0x00000004
EXCHGID4_FLAG_BIND_PRINC_STATEID = 0x00000100
EXCHGID4_FLAG_USE_NON_PNFS = 0x00010000
EXCHGID4_FLAG_USE_PNFS_MDS = 0x00020000
EXCHGID4_FLAG_USE_PNFS_DS = 0x00040000
EXCHGID4_FLAG_MASK_PNFS = 0x00070000
EXCHGID4_FLAG_UPD_CONFIRMED_REC_A = 0x40000000
EXCHGID4_FLAG_CONFIRMED_R = 0x80000000

SEQ4_STATUS_CB_PATH_DOWN = 0x00000001
SEQ4_STATUS_CB_GSS_CONTEXTS_EXPIRING = 0x00000002
SEQ4_STATUS_CB_GSS_CONTEXTS_EXPIRED = 0x00000004
SEQ4_STATUS_EXPIRED_ALL_STATE_REVOKED = 0x00000008
SEQ4_STATUS_EXPIRED_SOME_STATE_REVOKED = 0x00000010
SEQ4_STATUS_ADMIN_STATE_REVOKED = 0x00000020
SEQ4_STATUS_RECALLABLE_STATE_REVOKED = 0x00000040
SEQ4_STATUS_LEASE_MOVED = 0x00000080
SEQ4_STATUS_RESTART_RECLAIM_NEEDED = 0x00000100
SEQ4_STATUS_CB_PATH_DOWN_SESSION = 0x00000200
SEQ4_STATUS_BACKCHANNEL_FAULT = 0x00000400
SEQ4_STATUS_DEVID_CHANGED = 0x00000800
SEQ4_STATUS_DEVID_DELETED = 0x00001000

OPEN4_SHARE_ACCESS_READ = 0x1
OPEN4_SHARE_ACCESS_WRITE = 0x2
OPEN4_SHARE_ACCESS_BOTH = 0x3
OPEN4_SHARE_DENY_NONE = 0x0
OPEN4_SHARE_DENY_READ = 0x1
OPEN4_SHARE_DENY_WRITE = 0x2
OPEN4_SHARE_DENY_BOTH = 0x3

DEFAULT_LEASE_TIME = 90

# Bounds of every table.
MAX_CLIENTS = 1024                 # confirmed and unconfirmed client ids (DELAY)
MAX_SESSIONS_PER_CLIENT = 8        # (SERVERFAULT)
MAX_STATEIDS = 65536               # open and lock stateids, all clients (DELAY)
MAX_STATEIDS_PER_CLIENT = 16384    # (SERVERFAULT)
MAX_OWNERS_PER_CLIENT = 4096       # open owners and lock owners, each (SERVERFAULT)
MAX_LOCK_RANGES = 65536            # byte ranges held, all owners (DELAY)
MAX_LOCK_RANGES_PER_OWNER = 4096   # (SERVERFAULT)
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
class OpenResult:
    stateid: Stateid
    share_access: int
    share_deny: int


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


class _OpenState:
    def __init__(self, index, other, clientid, owner, file):
        self.index, self.other, self.clientid = index, other, clientid
        self.owner, self.file = owner, file
        self.seqid = 0
        self.access = self.deny = 0
        # Every access/deny value an OPEN asked for: OPEN_DOWNGRADE may only
        # return to one of them (RFC 8881 18.18.3), as Linux's bitmaps check.
        self.access_seen = set()
        self.deny_seen = set()
        self.locks = set()

    def stateid(self):
        return Stateid(self.seqid, self.other)


class _LockState:
    def __init__(self, index, other, clientid, owner, file, open_index):
        self.index, self.other, self.clientid = index, other, clientid
        self.owner, self.file, self.open_index = owner, file, open_index
        self.seqid = 0

    def stateid(self):
        return Stateid(self.seqid, self.other)


class _File:
    def __init__(self):
        self.opens = set()
        self.locks = FileLocks()


def _lease_expired(client, lease_time, now):
    return now - client.last_renew >= lease_time


class Nfs4State:
    def __init__(self, *, now, boot_epoch, secret=None, previous_record=None,
                 lease_time=DEFAULT_LEASE_TIME, grace_time=None,
                 server_limits=DEFAULT_SERVER_LIMITS):
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
        self._states = {}
        self._files = {}
        self._nranges = 0
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
        flags = EXCHGID4_FLAG_USE_NON_PNFS
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
        session = Session(sessionid, clientid, 0, fore, back, cb_program)
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
        for indices in list(client.open_owners.values()):
            for index in list(indices):
                self._remove_open(self._states[index])
        for indices in list(client.lock_owners.values()):
            for index in list(indices):
                self._remove_lock(self._states[index])
        for sessionid in client.sessions:
            self._sessions.pop(sessionid, None)
        client.sessions.clear()
        self._clients.pop(client.clientid, None)
        for table in (self._confirmed_by_owner, self._unconfirmed_by_owner):
            if table.get(client.owner) is client:
                del table[client.owner]
        self._touch_record()

    # ---- stateids -----------------------------------------------------------

    def _find(self, clientid, stateid, file, kind, check_seqid=True):
        if special_kind(stateid) is not None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        state = self._states.get(self._minter.index_of(stateid.other))
        if state is None or state.clientid != clientid or (kind and not isinstance(state, kind)):
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if file is not None and state.file != file:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if check_seqid and stateid.seqid != 0:
            if stateid.seqid < state.seqid:
                raise Nfs4Error(nfsstat4.NFS4ERR_OLD_STATEID)
            if stateid.seqid > state.seqid:
                raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        return state

    def _new_state(self, client, now):
        if client.nstates >= MAX_STATEIDS_PER_CLIENT:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        if len(self._states) >= MAX_STATEIDS:
            self.expire(now)
            if len(self._states) >= MAX_STATEIDS:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
        return self._minter.mint()

    def test_stateid(self, clientid, stateids):
        """TEST_STATEID: a status per stateid; another boot's is BAD_STATEID here
        (RFC 8881 18.48 lists no STALE)."""
        out = []
        for stateid in stateids:
            try:
                self._find(clientid, stateid, None, None)
                out.append(nfsstat4.NFS4_OK)
            except Nfs4Error as e:
                out.append(nfsstat4.NFS4ERR_BAD_STATEID
                           if e.status == nfsstat4.NFS4ERR_STALE_STATEID else e.status)
        return out

    def free_stateid(self, clientid, stateid):
        """FREE_STATEID: a lock stateid without locks goes; one with locks, or an
        open stateid (CLOSE frees those), is NFS4ERR_LOCKS_HELD, as Linux."""
        state = self._find(clientid, stateid, None, None, check_seqid=False)
        if isinstance(state, _OpenState) or self._files[state.file].locks.held_by(
                (clientid, state.owner)):
            raise Nfs4Error(nfsstat4.NFS4ERR_LOCKS_HELD)
        self._remove_lock(state)

    def delegreturn(self, clientid, stateid):
        """DELEGRETURN: we never grant delegations, so no stateid names one."""
        if special_kind(stateid) is None:
            self._minter.index_of(stateid.other)     # another boot's: STALE
        raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)

    # ---- opens and share reservations ---------------------------------------

    def _file(self, file):
        f = self._files.get(file)
        if f is None:
            f = self._files[file] = _File()
        return f

    def _forget_file_if_unused(self, file):
        f = self._files.get(file)
        if f is not None and not f.opens and not f.locks.ranges:
            del self._files[file]

    def _share_conflict(self, file, skip, access, deny, now):
        """The first open of another owner whose reservation clashes, after
        dropping expired clients in the way; None when there is none."""
        f = self._files.get(file)
        while f is not None:
            clash = next((self._states[i] for i in f.opens if i != skip and (
                self._states[i].deny & access or self._states[i].access & deny)), None)
            if clash is None or not self._expired_holder(clash.clientid, now):
                return clash
        return None

    def open(self, clientid, owner, file, share_access, share_deny, now, reclaim=False):
        """OPEN's state part: share_access may carry the WANT_* delegation bits
        (ignored: we never grant one); reclaim=True for CLAIM_PREVIOUS."""
        client = self._client(clientid)
        access = share_access & 0xFF
        if access not in (1, 2, 3) or share_deny not in (0, 1, 2, 3):
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        self._check_new_state(client, reclaim, now)
        owner = bytes(owner)
        if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        indices = client.open_owners.get(owner, set())
        state = next((self._states[i] for i in indices if self._states[i].file == file), None)
        if self._share_conflict(file, state.index if state else None, access, share_deny, now):
            raise Nfs4Error(nfsstat4.NFS4ERR_SHARE_DENIED)
        if state is None:
            if owner not in client.open_owners and len(client.open_owners) >= MAX_OWNERS_PER_CLIENT:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            other, index = self._new_state(client, now)
            state = _OpenState(index, other, clientid, owner, file)
            self._states[index] = state
            client.open_owners.setdefault(owner, set()).add(index)
            client.nstates += 1
            self._file(file).opens.add(index)
        state.access |= access
        state.deny |= share_deny
        state.access_seen.add(access)
        state.deny_seen.add(share_deny)
        state.seqid = next_seqid(state.seqid)
        return OpenResult(state.stateid(), state.access, state.deny)

    def open_downgrade(self, clientid, stateid, file, share_access, share_deny):
        state = self._find(clientid, stateid, file, _OpenState)
        access = share_access & 0xFF
        if access not in state.access_seen or share_deny not in state.deny_seen:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        state.access, state.deny = access, share_deny
        state.access_seen = {a for a in state.access_seen if a & ~access == 0}
        state.deny_seen = {d for d in state.deny_seen if d & ~share_deny == 0}
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def close(self, clientid, stateid, file):
        """CLOSE: the open and the locks taken through it go; the reply's stateid
        is the reserved invalid one (RFC 8881 8.2.3)."""
        self._remove_open(self._find(clientid, stateid, file, _OpenState))
        return INVALID_STATEID

    def _remove_open(self, state):
        for index in list(state.locks):
            self._remove_lock(self._states[index])
        client = self._clients[state.clientid]
        self._states.pop(state.index, None)
        client.nstates -= 1
        owned = client.open_owners.get(state.owner)
        owned.discard(state.index)
        if not owned:
            del client.open_owners[state.owner]
        self._files[state.file].opens.discard(state.index)
        self._forget_file_if_unused(state.file)

    def check_io(self, clientid, stateid, file, write, now):
        """May this READ (write=False), WRITE or SETATTR of size (write=True) go
        ahead? A read-only open refuses writes (NFS4ERR_OPENMODE); reads are
        allowed with any open, as Linux. The current stateid must already have
        been replaced by the COMPOUND layer."""
        kind = special_kind(stateid)
        if kind == CURRENT:
            raise Nfs4Error(nfsstat4.NFS4ERR_BAD_STATEID)
        if kind == READ_BYPASS and not write:
            return
        if kind in (ANONYMOUS, READ_BYPASS):
            if self.in_grace(now):
                raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)
            if write:
                clash = self._share_conflict(file, None, OPEN4_SHARE_ACCESS_WRITE, 0, now)
            else:
                clash = self._share_conflict(file, None, OPEN4_SHARE_ACCESS_READ, 0, now)
            if clash is not None:
                raise Nfs4Error(nfsstat4.NFS4ERR_LOCKED)
            return
        state = self._find(clientid, stateid, file, None)
        if isinstance(state, _LockState):
            state = self._states[state.open_index]
        if write and not state.access & OPEN4_SHARE_ACCESS_WRITE:
            raise Nfs4Error(nfsstat4.NFS4ERR_OPENMODE)

    # ---- byte-range locks ---------------------------------------------------

    def _lock_conflict(self, file, key, start, end, write, now):
        f = self._files.get(file)
        if f is None:
            return
        while True:
            clash = f.locks.conflict(key, start, end, write)
            if clash is None:
                return
            if not self._expired_holder(clash.owner[0], now):
                break
        raise Nfs4Error(nfsstat4.NFS4ERR_DENIED, denied=LockDenied(
            clash.start, range_length(clash.start, clash.end),
            WRITE_LT if clash.write else READ_LT, clash.owner[0], clash.owner[1]))

    def _owner_ranges(self, client, owner):
        return sum(len(self._files[self._states[i].file].locks.held_by((client.clientid, owner)))
                   for i in client.lock_owners.get(owner, ()))

    def _set_ranges(self, client, owner, file, ranges):
        locks = self._files[file].locks
        key = (client.clientid, owner)
        delta = len(ranges) - len(locks.held_by(key))
        if delta > 0:
            if self._owner_ranges(client, owner) + delta > MAX_LOCK_RANGES_PER_OWNER:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            if self._nranges + delta > MAX_LOCK_RANGES:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)
        locks.replace(key, ranges)
        self._nranges += delta

    def lock(self, clientid, file, locktype, offset, length, now, reclaim=False, *,
             open_stateid=None, lock_owner=None, lock_stateid=None):
        """LOCK (RFC 8881 18.10): either a new lock owner (open_stateid and
        lock_owner: locker4's open_to_lock_owner4) or an existing lock stateid.
        Blocking types are tried once like the others (no callbacks). A conflict
        raises NFS4ERR_DENIED with .denied."""
        client = self._client(clientid)
        write = is_write(locktype)
        start, end = lock_range(offset, length)
        if lock_stateid is not None:
            state = self._find(clientid, lock_stateid, file, _LockState)
            opened, owner = self._states[state.open_index], state.owner
        else:
            opened = self._find(clientid, open_stateid, file, _OpenState)
            owner = bytes(lock_owner)
            if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT:
                raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
            state = next((self._states[i] for i in client.lock_owners.get(owner, ())
                          if self._states[i].file == file), None)
        self._check_new_state(client, reclaim, now)
        need = OPEN4_SHARE_ACCESS_WRITE if write else OPEN4_SHARE_ACCESS_READ
        if not opened.access & need:
            raise Nfs4Error(nfsstat4.NFS4ERR_OPENMODE)
        key = (clientid, owner)
        self._lock_conflict(file, key, start, end, write, now)
        ranges = self._files[file].locks.after_set(key, start, end, write)
        if state is None:
            if owner not in client.lock_owners and len(client.lock_owners) >= MAX_OWNERS_PER_CLIENT:
                raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
            other, index = self._new_state(client, now)
            state = _LockState(index, other, clientid, owner, file, opened.index)
            self._states[index] = state
            client.lock_owners.setdefault(owner, set()).add(index)
            client.nstates += 1
            opened.locks.add(index)
            try:
                self._set_ranges(client, owner, file, ranges)
            except Nfs4Error:
                self._remove_lock(state)
                raise
        else:
            self._set_ranges(client, owner, file, ranges)
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def locku(self, clientid, stateid, file, locktype, offset, length):
        """LOCKU: unlocking what is not locked is no error; the middle of a
        range splits it."""
        state = self._find(clientid, stateid, file, _LockState)
        is_write(locktype)
        start, end = lock_range(offset, length)
        client = self._clients[clientid]
        key = (clientid, state.owner)
        self._set_ranges(client, state.owner, file,
                         self._files[file].locks.after_set(key, start, end, None))
        state.seqid = next_seqid(state.seqid)
        return state.stateid()

    def lockt(self, clientid, owner, file, locktype, offset, length, now):
        """LOCKT: tests without creating state; the owner need not have any."""
        self._client(clientid)
        write = is_write(locktype)
        start, end = lock_range(offset, length)
        if self.in_grace(now):
            raise Nfs4Error(nfsstat4.NFS4ERR_GRACE)
        self._lock_conflict(file, (clientid, bytes(owner)), start, end, write, now)

    def _remove_lock(self, state):
        client = self._clients[state.clientid]
        f = self._files[state.file]
        key = (state.clientid, state.owner)
        self._nranges -= len(f.locks.held_by(key))
        f.locks.drop_owner(key)
        self._states.pop(state.index, None)
        client.nstates -= 1
        owned = client.lock_owners.get(state.owner)
        owned.discard(state.index)
        if not owned:
            del client.lock_owners[state.owner]
        opened = self._states.get(state.open_index)
        if opened is not None:
            opened.locks.discard(state.index)
        self._forget_file_if_unused(state.file)
