"""Bytes received from a stream and not yet taken, kept as the chunks they
came in: what the TCP record and frame readers (common/rpc.py,
common/iodproto.py) build their records from.

Appending each read to one bytearray and slicing records out of it copied a
relayed WRITE's MiB three to four times (each copy a fresh MiB, its pages
faulted in: ~1 ms here), and on PyPy appending to a bytearray costs 0.7-1.7
ms a MiB by itself. Here a record is one join of the chunks it spans, and a
record that is one whole chunk is that chunk, not copied. A 1 MiB record fed
in 64 KiB reads: 2.5-3.2 ms -> 57 us on CPython, 2.2-3.3 ms -> 0.17-0.22 ms
on PyPy.

Small reads (a peer trickling a byte per segment) are gathered in one
bytearray until it holds SMALL bytes, then kept as one chunk: what is held
stays within a few KiB of the bytes themselves, and each byte is copied
twice at most (joining the chunks whenever there were too many of them made
a trickle's cost grow with the square of the record).
"""

import collections

SMALL = 4096


class ChunkQueue:
    __slots__ = ("_chunks", "_len", "_off", "_tail")

    def __init__(self):
        self._chunks = collections.deque()
        self._off = 0  # bytes of the first chunk already taken
        self._len = 0  # bytes held, the tail's included
        self._tail = bytearray()  # small reads, after the chunks

    def __len__(self):
        return self._len

    def append(self, data):
        if not data:
            return
        self._len += len(data)
        if len(data) < SMALL:
            self._tail += data
            if len(self._tail) >= SMALL:
                self._close_tail()
            return
        self._close_tail()
        # (bytes(): the caller may reuse a buffer of its own.)
        self._chunks.append(data if type(data) is bytes else bytes(data))

    def _close_tail(self):
        if self._tail:
            self._chunks.append(bytes(self._tail))
            self._tail = bytearray()

    def peek(self, n):
        """The first ``n`` bytes (at most len(self)), left in place."""
        self._close_tail()
        chunk = self._chunks[0] if self._chunks else b""
        if len(chunk) - self._off >= n:
            return chunk[self._off:self._off + n]
        return b"".join(self._views(n))

    def take(self, n):
        """Remove and return the first ``n`` bytes (n <= len(self)), copied once
        at most."""
        if n == 0:
            return b""
        if n > self._len:
            raise ValueError(f"taking {n} of {self._len} bytes")
        self._close_tail()
        chunks, off = self._chunks, self._off
        first = chunks[0]
        if off == 0 and len(first) == n:
            out = first
        elif len(first) - off >= n:
            out = first[off:off + n]
        else:
            out = b"".join(self._views(n))
        self._len -= n
        # Drop what was taken: whole chunks, then a part of the next.
        left = n
        while left:
            rest = len(chunks[0]) - off
            if rest > left:
                off += left
                break
            chunks.popleft()
            left -= rest
            off = 0
        self._off = off
        return out

    def _views(self, n):
        """Views of the chunks holding the first ``n`` bytes, in order."""
        views, off = [], self._off
        for chunk in self._chunks:
            view = memoryview(chunk)[off:off + n]
            views.append(view)
            n -= len(view)
            off = 0
            if not n:
                break
        return views
