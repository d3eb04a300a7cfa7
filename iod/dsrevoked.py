"""Which data-server handles (common/dsfh.py) an iod no longer honours:
their file is gone, or they were minted before the iod started. Pure; the
times are the iod's wall clock in milliseconds, the time base handles are
minted in.

- A handle minted before ``floor`` is STALE. The floor starts at the iod's
  start: a restarted iod has forgotten what was revoked while it was down, so
  it honours only handles minted since (clients fetch fresh layouts).
- A file whose datafile was purged (a PURGE from unlinkd or the scrub: the
  file was removed, or never existed for the metaserver) is revoked: every
  handle of that (ino, seed) is STALE, and a WRITE through one can never bring
  the datafile back (a leak nothing would ever purge).

Bounded: at most ``limit`` files are remembered. Past that the oldest
revocation is forgotten and the floor raised to its time, so its handles,
all minted before it, stay refused (with every other handle as old: clients
fetch fresh ones). The same trick as the replay guard's (common/iodproto.py).

Thread-safe: the iod's I/O threads revoke (PURGE) and check (data server)
at once.
"""

import collections
import threading

DEFAULT_LIMIT = 1 << 18      # ~40 MiB at worst


class Revoked:
    def __init__(self, floor, limit=DEFAULT_LIMIT):
        self.floor = floor
        self.limit = limit
        self._files = collections.OrderedDict()   # (ino, seed) -> revoked at, oldest first
        self._lock = threading.Lock()

    def revoke_file(self, ino, seed, at):
        with self._lock:
            key = (ino, seed)
            self._files.pop(key, None)
            self._files[key] = at
            while len(self._files) > self.limit:
                _, when = self._files.popitem(last=False)
                self.floor = max(self.floor, when)

    def stale(self, handle):
        """Whether the DsHandle ``handle`` is revoked."""
        with self._lock:
            return handle.minted < self.floor or (handle.ino, handle.seed) in self._files

    def __len__(self):
        return len(self._files)
