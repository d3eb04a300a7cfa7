"""Calls that wait only for the group commit, answered by the loop that received them.

Under a ``sync`` export a namespace change is answered once the group commit
(nfspd/fs/commit.py) has flushed it: its handler returns a dispatch Wait
marked ``commit`` (nfspd/durable.py). Run as a task of its own, such a call
paid a spawn, its scheduler passes and a chain of coroutines, more than the
change itself (py-spy, 8 clients, issue 15). A transport's receive loop
parks it instead and goes on taking calls; at the end of its batch (the
socket drained, or a batch's worth taken) it settles the parked calls in
arrival order. The first one waits for the flush exactly as its task would
have (GroupCommit.stable lets the calls already received elsewhere, TCP
connections included, note their changes first); that flush covers every
change the loop's batch made, so the others find theirs durable and finish
at once, in the loop, with no task and no further scheduling.

A parked call is finished by the same code as a task's (Deferred.run): the
same reply bytes, the same failure for a flush that failed (the procedure's
failure arm: NFS3ERR_IO...), the same duplicate request cache states (a
retransmission that arrives while its call is parked finds it in progress
and is dropped; one after gets the cached reply). An NFSv4 COMPOUND whose
operations are all done and whose reply waits only for the flush is parked
alike (its session slot, not the reply cache, catches retries; one given up
frees its slot as a cancelled task does). Waits of other kinds (a layout
revocation, a relayed READ, an NFSv4 operation that has to wait halfway)
still run as tasks.

Bounded: at most ``limit`` calls are parked; the transport runs any more as
tasks, as before.
"""


class Parked:
    __slots__ = ("_calls", "_limit")

    def __init__(self, limit):
        self._calls = []
        self._limit = limit

    def __bool__(self):
        return bool(self._calls)

    def __len__(self):
        return len(self._calls)

    def park(self, deferred, to=None):
        """Hold ``deferred`` until settle() if all it waits for is the group
        commit and fewer than ``limit`` are held; False: run it as a task.
        ``to`` is what the transport needs to send its reply."""
        if not deferred.waits_for_commit or len(self._calls) >= self._limit:
            return False
        self._calls.append((deferred, to))
        return True

    async def settle(self):
        """[(reply, to)] for every call parked, in arrival order, once durable
        (a reply None: nothing to send). Calls left unsettled by a
        cancellation are abandoned (a retransmission runs them again)."""
        calls, self._calls = self._calls, []
        replies = []
        try:
            for deferred, to in calls:
                replies.append((await deferred.run(), to))
        finally:
            for deferred, _ in calls[len(replies) + 1:]:
                deferred.abandon()
        return replies

    def abandon(self):
        """Give up the calls parked (their loop is ending): a retransmission
        runs them again, as when their tasks were cancelled."""
        calls, self._calls = self._calls, []
        for deferred, _ in calls:
            deferred.abandon()
