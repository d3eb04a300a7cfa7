"""NFSv4.1 client ids and sessions, pure: what every NFSv4.1 server a client
talks to must keep, the metaserver (nfspd/nfs4state.py) and the iods' pNFS
data servers (iod/nfs4dsstate.py) alike.

EXCHANGE_ID (RFC 8881 18.35), CREATE_SESSION (18.36) with its one-slot replay
cache, DESTROY_SESSION, DESTROY_CLIENTID, BIND_CONN_TO_SESSION (fore channel
only: no back channel is ever granted, see nfs4sessions) and SEQUENCE (18.46)
over common/nfs4sessions' slot tables.

What differs between the two roles is left to a subclass: the EXCHGID4 role
flag it answers, when a silent client may lose its owner to another principal
(``_holds_owner``), how room is made in a full table (``_make_room``), what
else a client holds that dropping it must free (``_drop_client``), and when a
client is too busy to be destroyed (``_busy``).

Sans-IO: every call that depends on time takes ``now`` (seconds, monotonic).
"""

import dataclasses
import hashlib
import hmac
import secrets
import struct

from common.nfs4 import (
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
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
    ChannelAttrs,
    ReplyCacheBudget,
    Session,
    negotiate_back,
    negotiate_fore,
)

UINT32_MAX = 0xFFFFFFFF


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


class Client:
    def __init__(self, clientid, owner, verifier, principal, now):
        self.clientid = clientid
        self.owner = owner
        self.verifier = verifier
        self.principal = principal
        self.confirmed = False
        self.cs_seq = 0          # CREATE_SESSION's one slot: last executed sequence
        self.cs_reply = None
        self.last_heard = now
        self.sessions = {}
        self.reclaim_complete = False

    @property
    def identity(self):
        return (self.owner, self.principal)


class ClientTable:
    """Client ids and sessions. Subclasses set ``role_flag`` and
    ``max_sessions_per_client``, call ``_init_clients`` and override the hooks."""

    client_class = Client
    role_flag = 0
    max_sessions_per_client = 8

    def _init_clients(self, epoch, secret, server_limits=DEFAULT_SERVER_LIMITS,
                      reply_budget=None):
        # Client ids carry the epoch, so one from an earlier boot is STALE.
        self.epoch = epoch & UINT32_MAX
        self._secret = bytes(secret) if secret is not None else secrets.token_bytes(16)
        self.server_limits = server_limits
        self._clients = {}
        self._confirmed_by_owner = {}
        self._unconfirmed_by_owner = {}
        self._sessions = {}
        self._reply_budget = reply_budget if reply_budget is not None else ReplyCacheBudget()
        self._next_client = 1
        self._next_session = 1

    # ---- hooks --------------------------------------------------------------

    def _heard(self, client, now):
        client.last_heard = now

    def _holds_owner(self, client, now):
        """Whether a confirmed client still holds its owner against another
        principal (NFS4ERR_CLID_INUSE)."""
        raise NotImplementedError

    def _make_room(self, now):
        """Before a new client id: forget whom the role lets go, and raise
        NFS4ERR_DELAY if the table is still full."""
        raise NotImplementedError

    def _busy(self, client):
        return bool(client.sessions)

    def _confirmed(self, client):
        """Called once a CREATE_SESSION has executed (the record may change)."""

    def _drop_client(self, client):
        for session in client.sessions.values():
            self._sessions.pop(session.sessionid, None)
            session.destroy()
        client.sessions.clear()
        self._clients.pop(client.clientid, None)
        for table in (self._confirmed_by_owner, self._unconfirmed_by_owner):
            if table.get(client.owner) is client:
                del table[client.owner]

    # ---- lookups ------------------------------------------------------------

    def _client(self, clientid):
        client = self._clients.get(clientid)
        if client is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_STALE_CLIENTID)
        return client

    def _session(self, sessionid):
        session = self._sessions.get(bytes(sessionid))
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        return session

    def _exchange_result(self, client):
        flags = self.role_flag
        if client.confirmed:
            flags |= EXCHGID4_FLAG_CONFIRMED_R
        return ExchangeIdResult(client.clientid, (client.cs_seq + 1) & UINT32_MAX, flags)

    # ---- operations ---------------------------------------------------------

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
            self._heard(confirmed, now)
            return self._exchange_result(confirmed)
        if confirmed is not None:
            if confirmed.principal != principal:
                if self._holds_owner(confirmed, now):
                    raise Nfs4Error(nfsstat4.NFS4ERR_CLID_INUSE)
            elif confirmed.verifier == verifier:
                self._heard(confirmed, now)
                return self._exchange_result(confirmed)
            # Otherwise the client restarted (or the squatted owner went
            # silent): a new record; the old one goes when the new is confirmed.
        unconfirmed = self._unconfirmed_by_owner.pop(owner, None)
        if unconfirmed is not None:
            self._drop_client(unconfirmed)
        self._make_room(now)
        if self._next_client > UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SERVERFAULT)
        clientid = (self.epoch << 32) | self._next_client
        self._next_client += 1
        client = self.client_class(clientid, owner, verifier, principal, now)
        self._clients[clientid] = client
        self._unconfirmed_by_owner[owner] = client
        return self._exchange_result(client)

    def create_session(self, clientid, sequenceid, flags, fore, back, principal, now,
                       connection=None, cb_program=0):
        """CREATE_SESSION (RFC 8881 18.36) with its own one-slot replay cache;
        the first one confirms the client id. No back channel and no
        persistence: the flags granted are 0."""
        client = self._client(clientid)
        if client.cs_reply is not None and sequenceid == client.cs_seq:
            return client.cs_reply
        if sequenceid != (client.cs_seq + 1) & UINT32_MAX:
            raise Nfs4Error(nfsstat4.NFS4ERR_SEQ_MISORDERED)
        if principal != client.principal:
            raise Nfs4Error(nfsstat4.NFS4ERR_CLID_INUSE)
        if len(client.sessions) >= self.max_sessions_per_client:
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
        self._heard(client, now)
        self._confirmed(client)
        return client.cs_reply

    def destroy_session(self, sessionid):
        session = self._sessions.pop(bytes(sessionid), None)
        if session is None:
            raise Nfs4Error(nfsstat4.NFS4ERR_BADSESSION)
        self._clients[session.clientid].sessions.pop(session.sessionid, None)
        session.destroy()

    def destroy_clientid(self, clientid):
        client = self._client(clientid)
        if self._busy(client):
            raise Nfs4Error(nfsstat4.NFS4ERR_CLIENTID_BUSY)
        self._drop_client(client)

    def bind_conn_to_session(self, sessionid, connection, direction, now):
        """BIND_CONN_TO_SESSION: the fore channel only."""
        session = self._session(sessionid)
        if direction not in (CDFC4_FORE, CDFC4_FORE_OR_BOTH):
            raise Nfs4Error(nfsstat4.NFS4ERR_INVAL)
        session.bind(connection)
        self._heard(self._clients[session.clientid], now)
        return CDFS4_FORE

    def connection_closed(self, connection):
        for session in self._sessions.values():
            session.connections.pop(connection, None)

    def session_connections(self, sessionid):
        return list(self._session(sessionid).connections)

    def _sequence(self, sessionid, sequenceid, slotid, now, connection):
        """SEQUENCE (RFC 8881 18.46): a SlotHandle to complete, or a Replay."""
        session = self._session(sessionid)
        outcome = session.sequence(sequenceid, slotid, status_flags=0)
        # SP4_NONE: a SEQUENCE binds the connection it came on (RFC 8881 2.10.5.1).
        session.bind(connection)
        self._heard(self._clients[session.clientid], now)
        return outcome

    def _mark_reclaim_complete(self, clientid, one_fs):
        """RECLAIM_COMPLETE (RFC 8881 18.51): the client, or None for
        rca_one_fs (accepted and ignored: reclaim is per client here)."""
        client = self._client(clientid)
        if one_fs:
            return None
        if client.reclaim_complete:
            raise Nfs4Error(nfsstat4.NFS4ERR_COMPLETE_ALREADY)
        client.reclaim_complete = True
        return client

    def __len__(self):
        return len(self._clients)
