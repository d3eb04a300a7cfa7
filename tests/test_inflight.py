"""nfspd/fs/inflight.py: a truncation waits for the WRITEs planned before it,
and for nothing else, and never without bound. Trio's mock clock drives
both the waits and the deadlines: no test waits for real time."""

import pytest
import trio
import trio.testing

from nfspd.fs.inflight import WritesInFlight


def tracker(**kw):
    kw.setdefault("forward_ttl", 10.0)
    kw.setdefault("relay_ttl", 60.0)
    return WritesInFlight(clock=trio.current_time, **kw)


def run(test):
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


async def landed_when(w, file):
    """(whether landed() waited, the trio time it returned at), from now."""
    waited = await w.landed(file)
    return waited, trio.current_time()


def test_nothing_in_flight_is_nothing_to_wait_for():
    async def test():
        w = tracker()
        assert await w.landed("f") is False
        w.begin("f", 1)
        w.end(1)
        assert await w.landed("f") is False
        assert len(w) == 0 and w.counters == {}
    run(test)


def test_the_truncation_goes_once_the_last_write_before_it_is_in():
    async def test():
        w = tracker()
        w.begin("f", 1)
        w.begin("f", 2)
        w.begin("other", 3)              # another file's write holds nothing up
        result = {}

        async def truncate():
            result["waited"], result["at"] = await landed_when(w, "f")
        async with trio.open_nursery() as n:
            n.start_soon(truncate)
            await trio.sleep(1)
            w.end(1)
            await trio.sleep(1)
            assert result == {}
            w.end(2)
        assert result == {"waited": True, "at": 2.0}
        assert w.counters == {"truncations_held": 1}
        assert len(w) == 1               # "other" is still on its way
    run(test)


def test_a_forward_never_answered_is_given_up_after_the_forward_ttl():
    async def test():
        w = tracker(forward_ttl=10.0)
        w.begin("f", 1)
        waited, at = await landed_when(w, "f")
        assert waited and at == 10.0
        assert w.counters == {"truncations_held": 1, "writes_given_up": 1}
        assert len(w) == 0
        w.end(1)                         # a late answer changes nothing
    run(test)


def test_a_relayed_write_is_waited_for_up_to_the_relay_ttl():
    async def test():
        w = tracker(forward_ttl=10.0, relay_ttl=60.0)
        w.begin("f", 1)
        await trio.sleep(5)
        w.relaying(1)                    # the relay has its own (longer) timeout
        waited, at = await landed_when(w, "f")
        assert waited and at == 65.0
        assert w.counters["writes_given_up"] == 1
    run(test)


def test_the_table_is_bounded_forgetting_the_oldest():
    async def test():
        w = tracker(max_writes=3)
        for token in range(1, 6):
            w.begin("f" if token == 1 else "g", token)
        assert len(w) == 3
        assert w.counters == {"writes_forgotten": 2}
        assert await w.landed("f") is False      # token 1 was forgotten
        for token in (3, 4, 5):
            w.end(token)
        assert await w.landed("g") is False
    run(test)


@pytest.mark.parametrize("end_first", [True, False])
def test_several_waiters_on_one_file_all_go(end_first):
    async def test():
        w = tracker()
        w.begin("f", 1)
        done = []

        async def truncate(name):
            await w.landed("f")
            done.append(name)
        async with trio.open_nursery() as n:
            n.start_soon(truncate, "a")
            n.start_soon(truncate, "b")
            await trio.sleep(1)
            assert done == []
            if end_first:
                w.end(1)
        assert sorted(done) == ["a", "b"]
        assert trio.current_time() == (1.0 if end_first else 10.0)
    run(test)
