"""Duplicate request cache for non-idempotent calls (CREATE, REMOVE, RENAME...).

A UDP client that loses a reply retransmits the call with the same xid; running
a REMOVE twice would answer the retransmission with NOENT although the remove
succeeded. Like the Linux kernel server's reply cache, the key is the client
address, xid, program/version/procedure, credential, and the arguments' length
and a checksum of their first bytes (nfspd/dispatch.py args_checksum); a
retransmission that arrives while the original is still running is
dropped, one that arrives after gets the cached reply.

Pure: the clock is an argument, so tests are deterministic.
"""

import collections
import time

NEW = "new"
IN_PROGRESS = "in_progress"
DONE = "done"


TTL = 120.0  # seconds a reply is kept for retransmissions


class DuplicateRequestCache:
    def __init__(self, max_entries=8192, ttl=TTL, clock=time.monotonic):
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # key -> (state, reply, time); ordered oldest first for eviction.
        self._entries = collections.OrderedDict()
        self.hits = 0
        self.lookups = 0

    def __len__(self):
        return len(self._entries)

    def lookup(self, key):
        """(NEW, None), (IN_PROGRESS, None) or (DONE, reply)."""
        self.lookups += 1
        entry = self._entries.get(key)
        if entry is None:
            return NEW, None
        state, reply, stamp = entry
        if state == DONE and self._clock() - stamp > self.ttl:
            del self._entries[key]
            return NEW, None
        if state == DONE:
            self.hits += 1
        return state, reply

    def begin(self, key):
        self._entries[key] = (IN_PROGRESS, None, self._clock())
        self._entries.move_to_end(key)
        self._evict()

    def start(self, key):
        """lookup(), and begin() when the call is NEW: what a server does for
        every non-idempotent call, in one probe of the cache and one reading
        of the clock, where lookup(), begin() and begin's eviction made two
        and three."""
        self.lookups += 1
        entries = self._entries
        now = self._clock()
        entry = entries.get(key)
        if entry is not None:
            state, reply, stamp = entry
            if state is not DONE or now - stamp <= self.ttl:
                if state is DONE:
                    self.hits += 1
                return state, reply
            del entries[key]
        entries[key] = (IN_PROGRESS, None, now)  # (a new key: last already)
        if len(entries) > self.max_entries:
            self._evict()
        else:
            # The oldest reply, once stale, goes (one a call keeps pace).
            oldest = next(iter(entries.values()))
            if oldest[0] is DONE and now - oldest[2] > self.ttl:
                entries.popitem(last=False)
        return NEW, None

    def finish(self, key, reply):
        """Record the reply; a call that produced none (it was cancelled, or its
        reply is sent by an iod) is forgotten so a retransmission runs again."""
        if reply is None:
            self._entries.pop(key, None)
            return
        self._entries[key] = (DONE, reply, self._clock())
        self._entries.move_to_end(key)

    def _evict(self):
        now = self._clock()
        entries = self._entries
        # Expired answers first, then the oldest answers; calls still running
        # are never evicted (their number is bounded by the servers' concurrency).
        while len(entries) > self.max_entries:
            for key, (state, _, stamp) in entries.items():
                if state == DONE:
                    del entries[key]
                    break
            else:
                return
        while entries:
            key, (state, _, stamp) = next(iter(entries.items()))
            if state == DONE and now - stamp > self.ttl:
                del entries[key]
            else:
                break
