"""NFSv4.1 server state, pure: client ids, sessions, leases, grace, opens and locks.

Parts: common/nfs4clients (client ids and sessions, shared with the iods' data
servers), common/nfs4sessions (channel attributes, slots, SEQUENCE), nfs4opens (stateids,
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

from common.nfs4 import (
    EXCHGID4_FLAG_USE_NON_PNFS,
    EXCHGID4_FLAG_USE_PNFS_MDS,
    nfsstat4,
)
from common.nfs4clients import Client, ClientTable
from common.nfs4error import Nfs4Error
from common.nfs4sessions import (
    DEFAULT_SERVER_LIMITS,
    ChannelAttrs,
    Replay,
    SlotHandle,
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
from nfspd.nfs4record import decode_record, encode_record
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
class ExpiredClient:
    clientid: int
    owner: bytes
    principal: str


class _Client(Client):
    def __init__(self, clientid, owner, verifier, principal, now):
        super().__init__(clientid, owner, verifier, principal, now)
        self.open_owners = {}    # owner bytes -> set of open state indices
        self.lock_owners = {}    # owner bytes -> set of lock state indices
        self.nstates = 0


def _lease_expired(client, lease_time, now):
    return now - client.last_heard >= lease_time


class Nfs4State(ClientTable, OpensAndLocks, LayoutState):
    client_class = _Client
    max_sessions_per_client = MAX_SESSIONS_PER_CLIENT

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
        self._init_clients(epoch, secret, server_limits)
        self._minter = StateidMinter(self.epoch, self._secret)
        self.lease_time = lease_time
        self._init_opens_and_locks()
        self._init_layouts()
        # A metadata server of pNFS or a plain server: Linux refuses a reply
        # with both USE_PNFS_MDS and USE_NON_PNFS (nfs4_check_cl_exchange_flags),
        # though RFC 8881 13.1 allows it.
        self.role_flag = EXCHGID4_FLAG_USE_PNFS_MDS if pnfs else EXCHGID4_FLAG_USE_NON_PNFS
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
        client = self._mark_reclaim_complete(clientid, one_fs)
        if client is None:
            return
        if client.identity in self._previous:
            self._completed.add(client.identity)
        self._touch_record()
        self._end_grace_if_over(now)

    # ---- client ids: common/nfs4clients, with leases ------------------------

    def _holds_owner(self, client, now):
        return not _lease_expired(client, self.lease_time, now)

    def _make_room(self, now):
        if len(self._clients) >= MAX_CLIENTS:
            self.expire(now)
            if len(self._clients) >= MAX_CLIENTS:
                raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)

    def _busy(self, client):
        return bool(client.sessions or client.nstates)

    def _confirmed(self, client):
        self._touch_record()

    def sequence(self, sessionid, sequenceid, slotid, highest_slotid, cachethis, now,
                 connection=None):
        """SEQUENCE (RFC 8881 18.46). sa_highest_slotid and sa_cachethis are
        accepted for the record: the shell decides what to cache (see SlotHandle)."""
        return self._sequence(sessionid, sequenceid, slotid, now, connection)

    def clients_view(self, now):
        """What `nfsp status` shows of each client id: plain values, newest last."""
        view = []
        for client in self._clients.values():
            addresses = {conn[1] for session in client.sessions.values()
                         for conn in session.connections
                         if isinstance(conn, tuple) and len(conn) > 1}
            view.append({
                "clientid": f"{client.clientid:016x}",
                "owner": client.owner.decode("utf-8", "replace"),
                "principal": client.principal,
                "confirmed": client.confirmed,
                "addresses": sorted(str(a[0] if isinstance(a, tuple) else a) for a in addresses),
                "sessions": len(client.sessions),
                "states": client.nstates,
                "layouts": self._nlayouts.get(client.clientid, 0),
                "idle": round(now - client.last_heard, 3),
                "lease_left": round(max(0.0, client.last_heard + self.lease_time - now), 3),
            })
        return view

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
        super()._drop_client(client)
        self._touch_record()
