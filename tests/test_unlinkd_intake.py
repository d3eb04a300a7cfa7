"""unlinkd's intake (unlinkd/daemon.py): how often it reads the journal when
nfspd wakes it, on trio's mock clock (no real time involved)."""

import trio
import trio.testing

from common.runtime.purgejournal import JournalWriter
from unlinkd.daemon import COALESCE_MAX, Options, Unlinkd


def _counting_unlinkd(directory):
    JournalWriter(directory).close()
    u = Unlinkd(directory, [("127.0.0.1", 9)], keys=None, options=Options(batch_delay=0.2))
    reads = []
    refresh = u.reader.refresh

    def counted():
        reads.append(trio.current_time())
        return refresh()
    u.reader.refresh = counted

    async def in_the_loop(fn, *args):
        # Not in a thread as unlinkd does: the mock clock would jump ahead
        # while a thread ran, and the times read here would be the thread's luck.
        return fn(*args)
    u._journal = in_the_loop
    return u, reads


def _run(test):
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_stream_of_wake_ups_is_read_a_few_times_not_once_each(tmp_path):
    u, reads = _counting_unlinkd(str(tmp_path / "journal"))

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(u._intake)
            for _ in range(200):  # one wake-up a millisecond, as nfspd sends them per REMOVE
                u._wake.set()
                await trio.sleep(0.001)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    _run(main)
    # 0.2 s of wake-ups: one read per COALESCE_MAX (plus the last), not 200.
    assert 1 <= len(reads) <= 0.2 / COALESCE_MAX + 2


def test_a_lone_wake_up_is_read_within_the_coalescing_window(tmp_path):
    u, reads = _counting_unlinkd(str(tmp_path / "journal"))

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(u._intake)
            await trio.sleep(0.5)
            woken = trio.current_time()
            u._wake.set()
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        return woken
    woken = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(reads) == 1
    assert woken <= reads[0] <= woken + COALESCE_MAX + 0.01
