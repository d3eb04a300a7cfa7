"""A thread's time on a core and waiting for one, from /proc (what `nfsp
status` and the metadata benchmark say of nfspd's event loop)."""

import os
import threading
import time

from common.runtime import schedstat


def _spin(seconds):
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_threads_time_on_a_core_grows_as_it_runs():
    before = schedstat.read()
    _spin(0.05)
    after = schedstat.read()
    assert after[0] - before[0] >= 40_000_000 and after[1] >= before[1]


def test_another_threads_counts_are_read_by_pid_and_tid():
    main = schedstat.read(os.getpid(), threading.get_native_id())
    assert main is not None and main[0] > 0
    assert schedstat.read(os.getpid(), 2**22 + 1) is None  # no such thread


def test_shares_are_of_the_time_between_two_samples():
    assert schedstat.shares((10.0, 0, 0), (12.0, 900_000_000, 300_000_000)) == {
        "on_cpu": 0.45, "waiting_for_cpu": 0.15}
    assert schedstat.shares((10.0, 0, 0), (10.0, 5, 5)) is None
