"""Waiting for a descriptor without a pass through trio's scheduler, when the
event loop has nothing else to do.

A trio.lowlevel.wait_readable() is a trip through the scheduler: the task
suspended, the descriptor armed again (trio registers EPOLLONESHOT), the run
loop's pass (deadlines, run queue, the I/O manager's events), the task
resumed. A server with one client waits between every two calls and pays
that trip each time: about 50,000 instructions per wake-up (callgrind, a
ping-pong over loopback TCP), 10-15 us of CPU here.

IdleWait.readable() waits in an epoll of its own instead whenever nothing
else could run meanwhile: no task due to run (in the run queue, or later in
the batch the scheduler took from it), no callbacks from threads queued,
nobody in wait_all_tasks_blocked. That epoll holds the descriptor and trio's own epoll, so whatever
would have ended trio's wait ends it too (another task's I/O; threads and
signals, which wake trio through a socket in its epoll), and it never waits
past trio's next deadline. On the descriptor it returns at once; on anything
else it lets trio run first.

quiet() answers the same question for a task that would yield only to let
others go first (the group commit, before a flush): nothing due, and no
I/O ready in trio's epoll. It spares such a task two passes through trio
for nothing (CREATE+REMOVE under `sync`, 8 clients over TCP, 5 alternating
rounds: 8.8-11.5 us less of nfspd's CPU per call in four, 1.2 more in one).

This reads trio's internals (the runner, its epoll). Where they are not as
expected (another trio version or I/O backend, a guest run, a test clock,
instruments), readable() is plain wait_readable and quiet() says no:
slower, never wrong.
"""

import math
import select
import threading

import trio

try:
    # Imported once: an import statement per call showed on PyPy's profile.
    from trio._core import _run
except ImportError:  # trio's internals are not as expected: no bypass
    _run = None

# Longest wait in our epoll before trio gets a pass anyway (when it has no
# deadline at all): a bound, not a tuning knob.
MAX_WAIT = 1.0
# Finding a task due to run means looking at every task: beyond this many,
# that look would cost more than the pass through trio it saves.
MAX_TASKS = 128


class IdleWait:
    """Waits for ``fd`` (an int) to be readable; one per waiting loop. Use
    within the trio run that waits; close() when done."""

    def __init__(self, fd):
        self.fd = fd
        self._runner = _runner()
        self._ep = None
        if self._runner is not None:
            self._ep = select.epoll()
            self._ep.register(fd, select.EPOLLIN)
            self._ep.register(self._runner.io_manager._epoll.fileno(), select.EPOLLIN)

    @property
    def bypasses(self):
        """Whether waits may skip trio's scheduler (trio's internals as expected)."""
        return self._ep is not None

    async def readable(self):
        """Return once ``fd`` may be readable (or, rarely, sooner: the caller
        reads and waits again on EAGAIN). True if other tasks may have run
        meanwhile (a checkpoint), False if the wait bypassed trio."""
        runner = self._runner
        if runner is not None and _nothing_due(runner):
            timeout = runner.deadlines.next_deadline() - runner.clock.current_time()
            if timeout > 0:
                events = self._ep.poll(min(timeout, MAX_WAIT), 2)
                if len(events) == 1 and events[0][0] == self.fd:
                    return False
                # Trio's own I/O is ready, or its deadline came: trio first.
                await trio.lowlevel.checkpoint()
                return True
        await trio.lowlevel.wait_readable(self.fd)
        return True

    def close(self):
        if self._ep is not None:
            self._ep.close()
            self._ep = None
            self._runner = None


def quiet():
    """Whether nothing but the caller could run if it yielded now: no task
    due (as readable() checks) and no I/O ready in trio's epoll. A caller
    that yields only to let others go first may then skip it. False where
    trio's internals are not as expected (see _runner)."""
    runner = _runner_cached()
    return runner is not None and _nothing_due(runner) and not _poller(runner).poll(0)


# Per thread (trio's run is): the runner last seen, _runner()'s verdict on it,
# and a poll object holding its epoll, for quiet().
_seen = threading.local()


def _runner_cached():
    if _run is None:
        return None
    current = getattr(_run.GLOBAL_RUN_CONTEXT, "runner", None)
    if current is None:
        return None
    if getattr(_seen, "runner", None) is not current:
        _seen.runner, _seen.verdict, _seen.poller = current, _runner(), None
    return _seen.verdict


def _poller(runner):
    poller = _seen.poller
    if poller is None:
        poller = _seen.poller = select.poll()
        poller.register(runner.io_manager._epoll.fileno(), select.POLLIN)
    return poller


def _nothing_due(runner):
    """No task due to run (in the run queue, or later in the scheduler's
    current batch), no callbacks from threads queued, nobody in
    wait_all_tasks_blocked; False too beyond MAX_TASKS tasks."""
    entries = runner.entry_queue
    tasks = runner.tasks
    return not (runner.runq or entries.queue or entries.idempotent_queue
                or runner.waiting_for_idle or len(tasks) > MAX_TASKS or _scheduled(tasks))


def _scheduled(tasks):
    """Whether a task is due to run: in the run queue, or in the batch the
    scheduler is running now (which it took out of the queue) after the
    caller."""
    for task in tasks:
        if task._next_send_fn is not None:
            return True
    return False


def _runner():
    """The running trio loop's Runner, if its internals are as readable()
    expects; else None."""
    if _run is None:
        return None
    try:
        runner = _run.GLOBAL_RUN_CONTEXT.runner
        runner.io_manager._epoll.fileno()
        entries = runner.entry_queue
        entries.queue, entries.idempotent_queue  # noqa: B018 (present)
        runner.runq, runner.deadlines.next_deadline, runner.waiting_for_idle  # noqa: B018
        for task in runner.tasks:
            task._next_send_fn  # noqa: B018
        if (runner.is_guest or type(runner.clock) is not _run.SystemClock
                or runner.clock_autojump_threshold != math.inf
                or runner.instruments.data["_all"]):
            return None
    except AttributeError:
        return None
    return runner
