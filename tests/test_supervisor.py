"""`nfsp up`'s supervisor (tools/supervisor.py): the restart policy with the
time given, then real child processes that crash, fail at start-up, or keep
crashing."""

import os
import signal
import sys

import pytest

from tools.supervisor import ChildDied, RestartPolicy, Stopped, Supervisor

# --- the policy ----------------------------------------------------------------


def test_back_off_doubles_from_half_a_second_to_thirty():
    p = RestartPolicy(burst=100, window=1e9)
    s = p.new_state()
    delays = [p.next_delay(s, now=float(i), ran_for=1.0) for i in range(10)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_a_daemon_that_stayed_up_starts_the_back_off_anew():
    p = RestartPolicy(burst=100, window=1e9, stable=60.0)
    s = p.new_state()
    for i in range(4):
        p.next_delay(s, now=float(i), ran_for=1.0)
    assert p.next_delay(s, now=100.0, ran_for=61.0) == 0.5


def test_past_the_burst_in_the_window_it_stays_down():
    p = RestartPolicy(burst=3, window=100.0)
    s = p.new_state()
    assert [p.next_delay(s, now=t, ran_for=1.0) is not None for t in (0, 10, 20, 30)] == [
        True, True, True, False]
    # ...until the oldest restart has left the window.
    assert p.next_delay(s, now=101.0, ran_for=1.0) is not None


# --- real children ---------------------------------------------------------------


def python(code):
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisor():
    changes = []
    sup = Supervisor(dict(os.environ), RestartPolicy(first_delay=0.05, burst=3, window=60.0),
                     on_change=lambda s: changes.append([c["state"] for c in s.status()]))
    sup.changes = changes
    yield sup
    sup.stop_all(5, 5)
    signal.set_wakeup_fd(-1)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def wait_for(sup, predicate, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        sup.wait(0.05)
    raise AssertionError("not reached")


def test_a_crash_after_serving_is_restarted_with_the_same_command_line(supervisor):
    child = supervisor.start("sleeper", python("import time; time.sleep(60)"))
    supervisor.served([child])
    first = child.proc.pid
    os.kill(first, signal.SIGKILL)
    wait_for(supervisor, lambda: child.restarts == 1 and child.state == "running")
    assert child.proc.pid != first and child.proc.poll() is None
    assert child.proc.args == python("import time; time.sleep(60)")
    st = child.status()
    assert st["restarts"] == 1 and st["pid"] == child.proc.pid
    assert st["last_exit"] == "was killed by SIGKILL"
    assert [e["event"].split(" (")[0] for e in st["history"]] == [
        "started", "was killed by SIGKILL", "started"]


def test_a_daemon_that_dies_before_it_served_is_not_restarted(supervisor):
    child = supervisor.start("broken", python("import sys; sys.exit(3)"))
    with pytest.raises(ChildDied) as e:
        wait_for(supervisor, lambda: False)
    assert e.value.child is child and child.describe_exit() == "exited with status 3"
    assert child.restarts == 0 and child.state == "failed"


def test_one_that_keeps_crashing_is_left_down_while_the_others_run(supervisor, caplog):
    steady = supervisor.start("steady", python("import time; time.sleep(60)"))
    crashy = supervisor.start("crashy", python("import time; time.sleep(0.2); raise SystemExit(1)"))
    supervisor.served([steady, crashy])
    wait_for(supervisor, lambda: crashy.state == "failed")
    assert crashy.restarts == 3
    assert steady.proc.poll() is None and steady.restarts == 0
    assert "leaving it down" in caplog.text
    supervisor.wait(0.3)       # no more restarts come
    assert crashy.restarts == 3 and crashy.status()["pid"] is None


def test_sigterm_stops_the_wait(supervisor):
    supervisor.start("sleeper", python("import time; time.sleep(60)"))
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Stopped):
        supervisor.wait(5)


def test_stopping_one_still_starting_is_no_problem_even_before_its_handler(supervisor):
    """Our SIGTERM ends a daemon still importing (no handler yet): that is
    the stop asked for, not a failure to report."""
    child = supervisor.start("starting", python("import time; time.sleep(60)"))
    assert supervisor.stop([child], 5) == []
    assert child.proc.returncode == -signal.SIGTERM


def test_one_that_served_and_dies_of_sigterm_while_stopping_is_reported(supervisor):
    child = supervisor.start("served", python("import time; time.sleep(60)"))
    supervisor.served([child])
    assert supervisor.stop([child], 5) == ["served was killed by SIGTERM while stopping"]
