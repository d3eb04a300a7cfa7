"""The client ids and sessions of the iod's pNFS data server, pure.

A data server holds no opens, locks or layouts (those are the metaserver's),
only what RFC 8881 requires of any NFSv4.1 server a client talks to: client
ids (EXCHANGE_ID), sessions with their slot tables and replay caches
(CREATE_SESSION, SEQUENCE: common/nfs4sessions.py, the same rules as the
metaserver's) and RECLAIM_COMPLETE (Linux sends one to a data server too;
there is nothing to reclaim, so it only ends the client's grace).

The client learns the data server's lease time from the metaserver (Linux
nfs4_init_ds_session), and nothing of value dies with a data-server client
id, so leases are not enforced to the second: a client silent for
IDLE_LIMIT is forgotten when room is needed, and the table never holds more
than MAX_CLIENTS (the least recently heard goes first). A forgotten client
gets NFS4ERR_BADSESSION / STALE_CLIENTID and sets up a new session, as
after a data-server restart.

Sans-IO: every call takes ``now`` (seconds, monotonic); not thread-safe (the
shell holds a lock around each call).
"""

import collections
import dataclasses
import hashlib
import hmac
import secrets
import struct

from common.nfs4 import (
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
    EXCHGID4_FLAG_USE_PNFS_DS,
    NFS4_OPAQUE_LIMIT,
    NFS4_VERIFIER_SIZE,
    nfsstat4,
)
from common.nfs4error import Nfs4Error
from common.nfs4sessions import (
    CDFC4_FORE,
    CDFC4_FORE_OR_BOTH,
    CDFS4_FORE,
    DEFAULT_SERVER_LIMITS,
    ReplyCacheBudget,
    Session,
    negotiate_back,
    negotiate_fore,
)

UINT32_MAX = 0xFFFFFFFF
MAX_CLIENTS = 4096
MAX_SESSIONS_PER_CLIENT = 16
IDLE_LIMIT = 600.0           # seconds without a request before a client may be forgotten
# Replies cached by all sessions together: a data server's are small (Linux
# never asks to cache a READ or WRITE), so far less than the metaserver's.
REPLY_CACHE_BYTES = 16 << 20


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
    fore: object
    back: object


class _Client:
    def __init__(self, clientid, owner, verifier, principal, now):
        self.clientid = clientid
        self.owner = owner
        self.verifier = verifier
        self.principal = principal
        self.confirmed = False
        self.cs_seq = 0
        self.cs_reply = None
        self.last_heard = now
        self.sessions = {}
        self.reclaim_complete = False


class DsState:
    def __init__(self, *, boot_epoch, secret=None, server_limits=DEFAULT_SERVER_LIMITS,
                 max_clients=MAX_CLIENTS, idle_limit=IDLE_LIMIT):
        self.epoch = boot_epoch & UINT32_MAX
        self._secret = bytes(secret) if secret is not None else secrets.token_bytes(16)
        self.server_limits = server_limits
        self.max_clients = max_clients
        self.idle_limit = idle_limit
        self._clients = collections.OrderedDict()   # clientid -> _Client, least recently heard first
        self._by_owner = {}                          # owner -> the confirmed _Client
        self._unconfirmed = {}                       # owner -> _Client
        self._sessions = {}
        self._budget = ReplyCacheBudget(REPLY_CACHE_BYTES)
        self._next_client = 1
        self._next_session = 1

    def _heard(self, client, now):
        client.last_heard = now
        self._clients.move_to_end(client.clientid)

    def _client(self, clientid):
        client = self._clients.get(clientid)
        if client is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE_CLIENTID)
        return client

    def _result(self, client):
        # Only the data-server role, whatever the client asked for: Linux
        # takes a server for a data server when this flag comes back
        # (is_ds_client), and it refuses to mount one that has only this role.
        flags = EXCHGID4_FLAG_USE_PNFS_DS
        if client.confirmed:
            flags |= EXCHGID4_FLAG_CONFIRMED_R
        return ExchangeIdResult(client.clientid, (client.cs_seq + 1) & UINT32_MAX, flags)

    def exchange_id(self, owner, verifier, principal, flags, now):
        """EXCHANGE_ID (RFC 8881 18.35), the cases a data server meets: a
        known owner with the same verifier keeps its client id, a new
        verifier (the client restarted) gets a new one that replaces the old
        at its first CREATE_SESSION; an owner held by another principal is
        NFS4ERR_CLID_INUSE while that client is heard from."""
        owner, verifier = bytes(owner), bytes(verifier)
        if not 0 < len(owner) <= NFS4_OPAQUE_LIMIT or len(verifier) != NFS4_VERIFIER_SIZE:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        if flags & EXCHGID4_FLAG_CONFIRMED_R:
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        confirmed = self._by_owner.get(owner)
        if flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A:
            if confirmed is None:
                raise Nfs4Error(nfsstat4.NFS4ERR_NOENT)
            if confirmed.principal != principal:
                raise Nfs4Error(nfsstat4.NFS4ERR_PERM)
            if confirmed.verifier != verifier:
                raise Nfs4Error(nfsstat4.NFS4ERR_NOT_SAME)
            self._heard(confirmed, now)
            return self._result(confirmed)
        if confirmed is not None:
            if confirmed.principal != principal:
                if now - confirmed.last_heard < self.idle_limit:
                    raise Nfs4Error(nfsstat4.NFS4ERR_CLID_INUSE)
            elif confirmed.verifier == verifier:
                self._heard(confirmed, now)
                return self._result(confirmed)
        old = self._unconfirmed.pop(owner, None)
        if old is not None:
            self._drop(old)
        self._make_room(now)
        if self._next_client > UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        clientid = (self.epoch << 32) | self._next_client
        self._next_client += 1
        client = _Client(clientid, owner, verifier, principal, now)
        self._clients[clientid] = client
        self._unconfirmed[owner] = client
        return self._result(client)

    def _make_room(self, now):
        """Forget idle clients, and past MAX_CLIENTS the least recently heard
        one not in the middle of a request."""
        for client in list(self._clients.values()):
            if len(self._clients) < self.max_clients and now - client.last_heard < self.idle_limit:
                break
            if not any(s.busy() for s in client.sessions.values()):
                self._drop(client)
        if len(self._clients) >= self.max_clients:
            raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)

    def create_session(self, clientid, sequenceid, flags, fore, back, principal, now,
                       connection=None):
        """CREATE_SESSION (RFC 8881 18.36): its own one-slot replay cache; the
        first confirms the client id. No back channel and no persistence: the
        flags granted are 0."""
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
            old = self._by_owner.get(client.owner)
            if old is not None:
                self._drop(old)
            del self._unconfirmed[client.owner]
            self._by_owner[client.owner] = client
            client.confirmed = True
        counter = self._next_session
        self._next_session += 1
        head = struct.pack(">QI", clientid, counter & UINT32_MAX)
        sessionid = head + hmac.new(self._secret, head, hashlib.sha256).digest()[:4]
        session = Session(sessionid, clientid, 0, fore, back, 0, self._budget)
        session.bind(connection)
        client.sessions[sessionid] = session
        self._sessions[sessionid] = session
        client.cs_seq = sequenceid
        client.cs_reply = CreateSessionResult(sessionid, sequenceid, 0, fore, back)
        self._heard(client, now)
        return client.cs_reply

    def _session(self, sessionid):
        session = self._sessions.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        return session

    def destroy_session(self, sessionid):
        session = self._session(sessionid)
        del self._sessions[session.sessionid]
        self._clients[session.clientid].sessions.pop(session.sessionid, None)
        session.destroy()

    def destroy_clientid(self, clientid):
        client = self._client(clientid)
        if client.sessions:
            raise Nfs4Error(nfsstat4.NFS4ERR_CLIENTID_BUSY)
        self._drop(client)

    def bind_conn_to_session(self, sessionid, connection, direction, now):
        """BIND_CONN_TO_SESSION: the fore channel only (there is no back channel)."""
        session = self._session(sessionid)
        if direction not in (CDFC4_FORE, CDFC4_FORE_OR_BOTH):
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        session.bind(connection)
        self._heard(self._clients[session.clientid], now)
        return CDFS4_FORE

    def sequence(self, sessionid, sequenceid, slotid, now, connection=None):
        """SEQUENCE (RFC 8881 18.46): a SlotHandle to complete, or a Replay."""
        session = self._session(sessionid)
        outcome = session.sequence(sequenceid, slotid, status_flags=0)
        session.bind(connection)
        self._heard(self._clients[session.clientid], now)
        return outcome

    def reclaim_complete(self, clientid, one_fs):
        client = self._client(clientid)
        if one_fs:
            return
        if client.reclaim_complete:
            raise Nfs4Error(nfsstat4.NFS4ERR_COMPLETE_ALREADY)
        client.reclaim_complete = True

    def connection_closed(self, connection):
        for session in self._sessions.values():
            session.connections.pop(connection, None)

    def _drop(self, client):
        for session in client.sessions.values():
            self._sessions.pop(session.sessionid, None)
            session.destroy()
        client.sessions.clear()
        self._clients.pop(client.clientid, None)
        for table in (self._by_owner, self._unconfirmed):
            if table.get(client.owner) is client:
                del table[client.owner]

    def __len__(self):
        return len(self._clients)
