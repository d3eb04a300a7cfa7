"""Which data-server handles (common/dsfh.py) an iod no longer honours.
Pure; the times are the iod's wall clock in milliseconds, the time base
handles are minted in (the metaserver stamps its frames in each iod's time).

- A handle minted before ``floor`` is STALE. The floor starts at the iod's
  start: a restarted iod has forgotten what was revoked while it was down, so
  it honours only handles minted since (clients fetch fresh layouts). A
  REVOKE of everything (the exports changed) raises it to the REVOKE's time.
- A revoked file: every handle of that (ino, seed) is STALE. The metaserver
  revokes a file it removes (REVOKE), and a PURGE (unlinkd, the scrub)
  revokes what it purges, so a WRITE through an old handle can never bring a
  datafile back (a leak nothing would ever purge).
- A revoked client (its lease expired): its handles minted before the
  revocation are STALE; those minted after, for its new lease, are not.

Bounded: at most ``limit`` files and clients are remembered. Past that the
oldest revocation is forgotten and the floor raised to its time, so the
handles it covered, all minted before it, stay refused (with every other
handle as old: clients fetch fresh ones). The same trick as the replay
guard's (common/iodproto.py).

Thread-safe: the iod's I/O threads revoke (PURGE) and check (data server)
at once. A WRITE checks its handle and lands inside ``writing(handle)``, and
a revocation returns only once the writes admitted before it have landed
(bounded by ``drain_timeout``): when the iod acknowledges a REVOKE, no write
through a handle it covers can land any more, which is what lets the
metaserver truncate right after (its truncation fence, nfspd/pnfs.py).
"""

import collections
import contextlib
import ipaddress
import threading

DEFAULT_LIMIT = 1 << 18      # ~40 MiB at worst
DRAIN_TIMEOUT = 30.0         # seconds a revocation waits for admitted writes (a stalled disk)


class Stale(Exception):
    """The handle is revoked (NFS4ERR_STALE)."""


class Revoked:
    def __init__(self, floor, limit=DEFAULT_LIMIT, drain_timeout=DRAIN_TIMEOUT):
        self.floor = floor
        self.limit = limit
        self.drain_timeout = drain_timeout
        self._files = collections.OrderedDict()   # (ino, seed) -> revoked at, oldest first
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._epoch = 0                            # bumped by every revocation
        self._writing = collections.Counter()      # epoch admitted in -> writes in flight

    def revoke(self, at, files=(), clients=(), everything=False):
        """Revoke (ino, seed) files, client addresses (ValueError if one is not
        an address) or everything, at ``at``; return once the writes admitted
        before have landed. One call for a whole PURGE or REVOKE frame: one wait."""
        keys = [_client_key(ip) for ip in clients] + [tuple(f) for f in files]
        with self._lock:
            for key in keys:
                self._files.pop(key, None)
                self._files[key] = at
            while len(self._files) > self.limit:
                _, when = self._files.popitem(last=False)
                self.floor = max(self.floor, when)
            if everything:
                self.floor = max(self.floor, at)
            self._drain()

    def _drain(self):
        """Under the lock, after a revocation: wait for the writes admitted before it."""
        self._epoch += 1
        epoch = self._epoch
        self._drained.wait_for(lambda: not any(e < epoch for e in self._writing),
                               self.drain_timeout)

    @contextlib.contextmanager
    def writing(self, handle):
        """Admit one write through ``handle``: Stale if it is revoked; else the
        body runs with the write counted, so revocations wait for it."""
        with self._lock:
            if self._stale(handle):
                raise Stale
            epoch = self._epoch
            self._writing[epoch] += 1
        try:
            yield
        finally:
            with self._lock:
                self._writing[epoch] -= 1
                if not self._writing[epoch]:
                    del self._writing[epoch]
                self._drained.notify_all()

    def revoke_file(self, ino, seed, at):
        self.revoke(at, files=[(ino, seed)])

    def revoke_client(self, ip, at):
        """ValueError if ``ip`` is not an address."""
        self.revoke(at, clients=[ip])

    def revoke_all(self, at):
        self.revoke(at, everything=True)

    def stale(self, handle):
        """Whether the DsHandle ``handle`` is revoked."""
        with self._lock:
            return self._stale(handle)

    def _stale(self, handle):
        if handle.minted < self.floor or (handle.ino, handle.seed) in self._files:
            return True
        client = self._files.get(("client", handle.client.packed))
        return client is not None and handle.minted < client

    def __len__(self):
        return len(self._files)


def _client_key(ip):
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        addr = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
    return ("client", addr.packed)
