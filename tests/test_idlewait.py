"""IdleWait: a wait that skips trio's scheduler when nothing else could run,
and never keeps anything else from running.

In the tests of what must end a wait, the waiting task can go on only once
something else has run (another task's I/O, a thread's result, a deadline,
a cancellation, a task due in the same batch). A wait that ignored it would
end only at MAX_WAIT, set here to GUARD: the watch on its epoll counts such
waits as stuck. Every test that bypasses asserts that it can: on a trio
whose internals have changed they fail, rather than nfspd silently losing
the bypass."""

import socket

import pytest
import trio
import trio.testing

from common.runtime import idlewait
from common.runtime.idlewait import IdleWait

GUARD = 30  # seconds: only reached when a wait is stuck


@pytest.fixture(autouse=True)
def guarded(monkeypatch):
    monkeypatch.setattr(idlewait, "MAX_WAIT", GUARD)


class _Watch:
    """IdleWait's epoll, counting the waits that ran to GUARD."""

    def __init__(self, ep):
        self.ep, self.stuck = ep, 0

    def poll(self, timeout, maxevents):
        events = self.ep.poll(timeout, maxevents)
        if not events and timeout >= GUARD:
            self.stuck += 1
        return events

    def close(self):
        self.ep.close()


def stuck_waits(fd, body):
    """Run ``body(wait)`` in trio, ``wait`` an IdleWait on ``fd``; how many
    of its waits ran to GUARD."""
    stuck = []

    async def main():
        wait = IdleWait(fd)
        assert wait.bypasses
        watch = wait._ep = _Watch(wait._ep)
        try:
            await body(wait)
        finally:
            stuck.append(watch.stuck)
            wait.close()

    trio.run(main)
    return stuck[0]


async def until_readable(sock, wait):
    while not _readable(sock):
        await wait.readable()


@pytest.fixture
def pairs():
    made = [socket.socketpair() for _ in range(2)]
    for a, b in made:
        a.setblocking(False)
        b.setblocking(False)
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_returns_without_a_checkpoint_when_its_descriptor_is_ready(pairs):
    (a, b), _ = pairs

    async def body(wait):
        await trio.testing.wait_all_tasks_blocked()  # nothing else to run
        b.send(b"x")
        assert await wait.readable() is False
        assert a.recv(1) == b"x"

    assert stuck_waits(a.fileno(), body) == 0


def test_another_tasks_io_ends_the_wait(pairs):
    (a, b), (c, d) = pairs
    order = []

    async def other():
        await trio.lowlevel.wait_readable(c)
        order.append("other")
        b.send(b"x")  # only now may the waiting task go on

    async def body(wait):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.testing.wait_all_tasks_blocked()
            d.send(b"y")  # for trio's epoll, not the wait's
            await until_readable(a, wait)
            order.append("waiter")

    assert stuck_waits(a.fileno(), body) == 0
    assert order == ["other", "waiter"]


async def _thread_done():
    await trio.to_thread.run_sync(lambda: None)


async def _deadline():
    await trio.sleep(0.01)


@pytest.mark.parametrize("event", [_thread_done, _deadline], ids=["thread", "deadline"])
def test_what_ends_trios_own_wait_ends_the_wait(pairs, event):
    (a, b), _ = pairs

    async def then_send():
        await event()
        b.send(b"x")

    async def body(wait):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(then_send)
            await until_readable(a, wait)

    assert stuck_waits(a.fileno(), body) == 0


def test_a_cancelled_wait_ends(pairs):
    (a, _), _ = pairs
    cancelled = []

    async def body(wait):
        with trio.move_on_after(0.01) as scope:
            while True:
                await wait.readable()
        cancelled.append(scope.cancelled_caught)

    assert stuck_waits(a.fileno(), body) == 0
    assert cancelled == [True]


def test_tasks_due_in_the_same_batch_run_before_it_waits(pairs):
    # The scheduler takes its whole run queue as a batch, in a random order: a
    # task after the waiter in that batch is in no queue the waiter could
    # see. In one of twenty rounds the waiter runs first but with
    # probability 2**-20.
    (a, b), _ = pairs
    rounds = []

    async def waiter(wait, order):
        order.append("waiter")
        await until_readable(a, wait)
        a.recv(1)

    async def sender(order):
        order.append("sender")
        b.send(b"x")

    async def body(wait):
        for _ in range(20):
            order = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter, wait, order)
                nursery.start_soon(sender, order)
            rounds.append(order[0])

    assert stuck_waits(a.fileno(), body) == 0
    assert "waiter" in rounds  # the case this test is for did occur


def test_plain_wait_among_many_tasks(pairs, monkeypatch):
    # Looking for a task due to run costs a look at each.
    monkeypatch.setattr(idlewait, "MAX_TASKS", 4)
    (a, b), _ = pairs

    async def body(wait):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            b.send(b"x")
            assert await wait.readable() is True
            nursery.cancel_scope.cancel()

    assert stuck_waits(a.fileno(), body) == 0


def test_plain_wait_under_a_test_clock(pairs):
    (a, b), _ = pairs

    async def main():
        wait = IdleWait(a.fileno())
        try:
            assert not wait.bypasses
            b.send(b"x")
            assert await wait.readable() is True
        finally:
            wait.close()

    trio.run(main, clock=trio.testing.MockClock())


def _readable(sock):
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_quiet_only_when_nothing_else_could_run(pairs):
    # quiet(): what the group commit asks before it yields to let other
    # receive loops note their changes (nfspd/fs/commit.py). It must say no
    # whenever a yield would let something run.
    (a, b), _ = pairs
    seen = {}

    async def main():
        await trio.testing.wait_all_tasks_blocked()  # (trio's own tasks settled)
        seen["alone"] = idlewait.quiet()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
            seen["task due"] = idlewait.quiet()
            await trio.testing.wait_all_tasks_blocked()

            async def reader():
                await trio.lowlevel.wait_readable(a)
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            seen["waiting, nothing ready"] = idlewait.quiet()
            b.send(b"x")
            seen["its I/O ready"] = idlewait.quiet()
    trio.run(main)
    assert seen == {"alone": True, "task due": False, "waiting, nothing ready": True,
                    "its I/O ready": False}


def test_never_quiet_under_a_test_clock():
    async def main():
        return idlewait.quiet()
    assert trio.run(main, clock=trio.testing.MockClock()) is False
