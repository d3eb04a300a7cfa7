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
at once.
"""

import collections
import ipaddress
import threading

DEFAULT_LIMIT = 1 << 18      # ~40 MiB at worst


class Revoked:
    def __init__(self, floor, limit=DEFAULT_LIMIT):
        self.floor = floor
        self.limit = limit
        self._files = collections.OrderedDict()   # (ino, seed) -> revoked at, oldest first
        self._lock = threading.Lock()

    def _add(self, key, at):
        with self._lock:
            self._files.pop(key, None)
            self._files[key] = at
            while len(self._files) > self.limit:
                _, when = self._files.popitem(last=False)
                self.floor = max(self.floor, when)

    def revoke_file(self, ino, seed, at):
        self._add((ino, seed), at)

    def revoke_client(self, ip, at):
        """ValueError if ``ip`` is not an address."""
        self._add(_client_key(ip), at)

    def revoke_all(self, at):
        with self._lock:
            self.floor = max(self.floor, at)

    def stale(self, handle):
        """Whether the DsHandle ``handle`` is revoked."""
        with self._lock:
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
