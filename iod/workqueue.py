"""The bounded buffer between the iod's receivers and its I/O threads.

Bounded twice: by the number of requests and by their bytes (a TCP WRITE
carries up to 1 MiB), so a burst can neither exhaust memory nor hide behind a
short queue. The UDP receiver uses put_nowait and drops (and counts) a
request that does not fit -- the NFS client retransmits; the TCP receiver
waits in put, so the sender sees TCP's window close: back-pressure.
"""

import collections
import threading
import time


class WorkQueue:
    def __init__(self, max_items, max_bytes):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a work queue needs room for at least one request")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items = collections.deque()
        self._bytes = 0
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self.high_water = 0

    def _fits(self, size):
        # One request larger than the byte bound still goes in alone, or a
        # small bound would block it forever.
        return (len(self._items) < self.max_items
                and (self._bytes + size <= self.max_bytes or not self._items))

    def _append(self, item, size):
        self._items.append((item, size))
        self._bytes += size
        self.high_water = max(self.high_water, len(self._items))
        self._not_empty.notify()

    def put_nowait(self, item, size):
        """Queue item (``size`` bytes) if it fits now. Returns whether it did."""
        with self._lock:
            if self._closed or not self._fits(size):
                return False
            self._append(item, size)
            return True

    def put(self, item, size, timeout):
        """Queue item, waiting at most ``timeout`` seconds for room. Returns
        whether it was queued (False also once the queue is closed)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._closed and not self._fits(size):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._not_full.wait(remaining)
            if self._closed:
                return False
            self._append(item, size)
            return True

    def get(self):
        """The next item, waiting for one; None once the queue is closed
        (what was still queued then is abandoned)."""
        with self._lock:
            while not self._items and not self._closed:
                self._not_empty.wait()
            if self._closed:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            self._not_full.notify()
            return item

    def close(self):
        with self._lock:
            self._closed = True
            self._items.clear()
            self._bytes = 0
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def __len__(self):
        with self._lock:
            return len(self._items)
