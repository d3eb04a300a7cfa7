"""How a thread has spent its time, from its /proc schedstat (Linux with
CONFIG_SCHED_INFO): nanoseconds on a core, and nanoseconds runnable but
waiting for one. nfspd answers every call on its event loop's thread, so
these two say what holds it back: the calls themselves (on a core), the
rest of the machine (waiting for a core), or nothing (waiting for calls).
`nfsp status`, nfspd's metrics and the metadata benchmark show them."""


def read(pid=None, tid=None):
    """(on_cpu_ns, waiting_ns) so far of thread ``tid`` of process ``pid``,
    or of the calling thread; None where the kernel does not keep them, or
    the thread is gone."""
    path = "/proc/thread-self/schedstat" if pid is None else f"/proc/{pid}/task/{tid}/schedstat"
    try:
        with open(path) as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return None


def shares(first, last):
    """The shares of the time between two samples (seconds, on_cpu_ns,
    waiting_ns) that the thread spent on a core and waiting for one:
    {"on_cpu", "waiting_for_cpu"}, or None if no time passed between them."""
    (t0, run0, wait0), (t1, run1, wait1) = first, last
    if t1 <= t0:
        return None
    span = (t1 - t0) * 1e9
    return {"on_cpu": round((run1 - run0) / span, 3),
            "waiting_for_cpu": round((wait1 - wait0) / span, 3)}
