"""The client ids and sessions of the iod's pNFS data server, pure.

A data server holds no opens, locks or layouts (those are the metaserver's),
only what RFC 8881 requires of any NFSv4.1 server a client talks to: client
ids (EXCHANGE_ID), sessions with their slot tables and replay caches
(CREATE_SESSION, SEQUENCE: common/nfs4clients.py and common/nfs4sessions.py,
the metaserver's own rules) and RECLAIM_COMPLETE (Linux sends one to a data server too;
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

from common.nfs4 import EXCHGID4_FLAG_USE_PNFS_DS, nfsstat4
from common.nfs4clients import ClientTable
from common.nfs4error import Nfs4Error
from common.nfs4sessions import DEFAULT_SERVER_LIMITS, ReplyCacheBudget

MAX_CLIENTS = 4096
MAX_SESSIONS_PER_CLIENT = 16
IDLE_LIMIT = 600.0           # seconds without a request before a client may be forgotten
# Replies cached by all sessions together: a data server's are small (Linux
# never asks to cache a READ or WRITE), so far less than the metaserver's.
REPLY_CACHE_BYTES = 16 << 20


class DsState(ClientTable):
    # Only the data-server role, whatever the client asked for: Linux takes a
    # server for a data server when this flag comes back (is_ds_client), and
    # it refuses to mount one that has only this role.
    role_flag = EXCHGID4_FLAG_USE_PNFS_DS
    max_sessions_per_client = MAX_SESSIONS_PER_CLIENT

    def __init__(self, *, boot_epoch, secret=None, server_limits=DEFAULT_SERVER_LIMITS,
                 max_clients=MAX_CLIENTS, idle_limit=IDLE_LIMIT):
        self._init_clients(boot_epoch, secret, server_limits,
                           ReplyCacheBudget(REPLY_CACHE_BYTES))
        self._clients = collections.OrderedDict()   # clientid -> Client, least recently heard first
        self.max_clients = max_clients
        self.idle_limit = idle_limit

    def _heard(self, client, now):
        client.last_heard = now
        self._clients.move_to_end(client.clientid)

    def _holds_owner(self, client, now):
        return now - client.last_heard < self.idle_limit

    def _make_room(self, now):
        """Forget idle clients, and past max_clients the least recently heard
        one not in the middle of a request."""
        for client in list(self._clients.values()):
            if len(self._clients) < self.max_clients and now - client.last_heard < self.idle_limit:
                break
            if not any(s.busy() for s in client.sessions.values()):
                self._drop_client(client)
        if len(self._clients) >= self.max_clients:
            raise Nfs4Error(nfsstat4.NFS4ERR_DELAY)

    def sequence(self, sessionid, sequenceid, slotid, now, connection=None):
        """SEQUENCE (RFC 8881 18.46): a SlotHandle to complete, or a Replay."""
        return self._sequence(sessionid, sequenceid, slotid, now, connection)

    def reclaim_complete(self, clientid, one_fs):
        # Nothing to reclaim on a data server: this only ends the client's grace.
        self._mark_reclaim_complete(clientid, one_fs)
