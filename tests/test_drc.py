"""The duplicate request cache answers retransmissions without running them twice."""

import pytest

from nfspd.drc import DONE, IN_PROGRESS, NEW, DuplicateRequestCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_retransmission_after_completion_gets_the_cached_reply():
    drc = DuplicateRequestCache(clock=Clock())
    assert drc.lookup("k") == (NEW, None)
    drc.begin("k")
    drc.finish("k", b"reply")
    assert drc.lookup("k") == (DONE, b"reply")


def test_retransmission_while_running_is_reported_in_progress():
    drc = DuplicateRequestCache(clock=Clock())
    drc.begin("k")
    assert drc.lookup("k") == (IN_PROGRESS, None)


def test_a_call_without_reply_is_forgotten():
    drc = DuplicateRequestCache(clock=Clock())
    drc.begin("k")
    drc.finish("k", None)
    assert drc.lookup("k") == (NEW, None)


def test_entries_expire():
    clock = Clock()
    drc = DuplicateRequestCache(ttl=10, clock=clock)
    drc.begin("k")
    drc.finish("k", b"r")
    clock.now = 11
    assert drc.lookup("k") == (NEW, None)


@pytest.mark.parametrize("begin", ["begin", "start"])
def test_size_is_bounded_and_running_calls_are_kept(begin):
    drc = DuplicateRequestCache(max_entries=3, clock=Clock())
    getattr(drc, begin)("running")
    for i in range(10):
        getattr(drc, begin)(i)
        drc.finish(i, b"r")
    assert len(drc) == 3
    assert drc.lookup("running") == (IN_PROGRESS, None)
    assert drc.lookup(9) == (DONE, b"r")
    assert drc.lookup(0) == (NEW, None)


def test_start_is_a_lookup_then_for_a_new_call_a_begin():
    clock = Clock()
    drc = DuplicateRequestCache(ttl=10, clock=clock)
    assert drc.start("k") == (NEW, None)
    assert drc.lookup("k") == (IN_PROGRESS, None)
    assert drc.start("k") == (IN_PROGRESS, None)
    drc.finish("k", b"reply")
    assert drc.start("k") == (DONE, b"reply")
    clock.now = 11  # a stale reply answers nothing: the call runs again
    assert drc.start("k") == (NEW, None)
    assert drc.lookup("k") == (IN_PROGRESS, None)


def test_start_drops_the_oldest_reply_once_stale():
    clock = Clock()
    drc = DuplicateRequestCache(ttl=10, clock=clock)
    drc.start("old")
    drc.finish("old", b"r")
    clock.now = 11
    drc.start("new")
    assert len(drc) == 1
