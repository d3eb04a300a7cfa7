"""The WRITEs planned on each file whose data may still be on its way: a
truncation of the file is carried out only once they are in.

A WRITE is planned first (size grown, reply built: nfspd/fs/fileio.py) and its
data moves after: over UDP the metaserver forwards it to an iod, which writes
and answers the client itself; otherwise the data path relays it. A SETATTR
that shrinks a file is answered at once and its truncation carried out on the
data servers before data next moves (FileIO._settle). Were that TRUNCATE sent
while a WRITE planned before the SETATTR was still on its way (a datagram in
flight, a request queued in the iod, a relay not yet sent), the WRITE could
land after it and bring cut bytes back past the new end. The rule: the order
in which the metaserver planned a WRITE and a truncation of the same file is
the order in which they land. A WRITE planned after the truncation settles it
first (it waits); one planned before is waited for here.

A write is tracked from its plan (``begin``) until it landed or failed
(``end``: the relay returned or raised; the iod's REPLY to a forwarded WRITE,
which it sends once the data is written, nfspd/iodpath.py). Waiting is
bounded: a forwarded WRITE the iod has not answered after ``forward_ttl``
(when the data path forgets the forward, too) is given up: the datagram or
the iod's full queue dropped it, and should it still reach the iod, the iod
refuses it as older than iodproto.FORWARD_MAX_AGE (shorter than the TTL).
A relayed one is bounded by the relay's own timeout, which ends it as failed
(the one window left: an iod that takes the request but does not write it
within that timeout), and is given up after ``relay_ttl`` only if something
failed to end it. Those given up are counted (writes_given_up), as is each
truncation that had to wait (truncations_held).
At most ``max_writes`` writes are tracked; beyond, the oldest is forgotten
(writes_forgotten). One file's wait never holds up another's.
"""

import collections
import math
import time

import trio

MAX_WRITES = 65536


class WritesInFlight:
    def __init__(self, forward_ttl, relay_ttl, counters=None, max_writes=MAX_WRITES,
                 clock=time.monotonic):
        self.forward_ttl = forward_ttl
        self.relay_ttl = relay_ttl
        self.max_writes = max_writes
        self.counters = collections.Counter() if counters is None else counters
        self._clock = clock
        self._writes = collections.OrderedDict()   # token -> [file, deadline], oldest first
        self._by_file = {}                           # file -> {token, ...}
        self._landed = {}                            # file -> trio.Event of a waiting truncation

    def __len__(self):
        return len(self._writes)

    def begin(self, file, token):
        """A WRITE on ``file`` (any hashable) was planned; ``token`` (unique,
        increasing) names it for end()."""
        writes = self._writes
        while len(writes) >= self.max_writes:
            oldest = next(iter(writes))
            self._forget(oldest)
            self.counters["writes_forgotten"] += 1
        writes[token] = [file, self._clock() + self.forward_ttl]
        tokens = self._by_file.get(file)
        if tokens is None:
            self._by_file[file] = {token}
        else:
            tokens.add(token)

    def relaying(self, token):
        """The WRITE is being relayed: its end is certain (a reply or the
        relay's timeout), later than a forward's may be."""
        entry = self._writes.get(token)
        if entry is not None:
            entry[1] = self._clock() + self.relay_ttl

    def end(self, token):
        """The WRITE landed, or failed: it can no longer land later."""
        if token in self._writes:
            self._forget(token)

    def _forget(self, token):
        file, _ = self._writes.pop(token)
        tokens = self._by_file[file]
        tokens.discard(token)
        if not tokens:
            del self._by_file[file]
            event = self._landed.pop(file, None)
            if event is not None:
                event.set()

    async def landed(self, file):
        """Return once every WRITE begun on ``file`` so far has ended or been
        given up; whether that took waiting."""
        waited = False
        while True:
            tokens = self._by_file.get(file)
            if not tokens:
                return waited
            now = self._clock()
            soonest = math.inf
            for token in list(tokens):
                deadline = self._writes[token][1]
                if deadline <= now:
                    self._forget(token)
                    self.counters["writes_given_up"] += 1
                else:
                    soonest = min(soonest, deadline)
            if file not in self._by_file:
                return waited
            if not waited:
                waited = True
                self.counters["truncations_held"] += 1
            event = self._landed.get(file)
            if event is None:
                event = self._landed[file] = trio.Event()
            with trio.move_on_after(soonest - now):
                await event.wait()
