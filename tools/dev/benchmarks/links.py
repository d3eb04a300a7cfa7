"""Per-link traffic of a testbed run, from the bridge ports' byte counters
(tools/dev/testbed.Testbed.counters: a host cannot hide what it sent through a
raw socket from them)."""

import threading
import time

from common.runtime import schedstat
from tools.dev.benchmarks.harness import MachineCpu


def link_traffic(before, after, seconds, rate_MBps):
    """{port: {"rx_MBps", "tx_MBps", "util"}} and the busiest port; a link's
    utilisation is its busier direction over the cap."""
    ports = {}
    for port, c1 in after.items():
        c0 = before.get(port, {"rx_bytes": 0, "tx_bytes": 0})
        rx = (c1["rx_bytes"] - c0["rx_bytes"]) / seconds / 1e6
        tx = (c1["tx_bytes"] - c0["tx_bytes"]) / seconds / 1e6
        ports[port] = {"rx_MBps": round(rx, 2), "tx_MBps": round(tx, 2),
                       "util": round(max(rx, tx) / rate_MBps, 3) if rate_MBps else None}
    busiest = max(ports, key=lambda p: max(ports[p]["rx_MBps"], ports[p]["tx_MBps"]),
                  default=None)
    return ports, busiest


def _ends(samples, t0, t1):
    """The first and last of ``samples`` (each beginning with its time) within
    the window [t0, t1], else the nearest around it; None without two."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2:
        before = [s for s in samples if s[0] <= t0][-1:]
        after = [s for s in samples if s[0] >= t1][:1]
        inside = before + inside + after
    return (inside[0], inside[-1]) if len(inside) >= 2 else None


def thread_share(samples, t0, t1):
    """From ``samples`` [(time, on_cpu_ns, waiting_ns)], the shares of the
    window [t0, t1] the thread spent on a core and runnable but waiting for
    one (schedstat.shares), or None without two samples."""
    ends = _ends(samples, t0, t1)
    return schedstat.shares(*ends) if ends else None


class CpuSampler:
    """Samples the machine's CPU counters every ``interval`` seconds in a
    thread, so the busy fraction can be taken over the measured window only
    (not the loadgens' start-up); and, given ``thread`` (pid, tid), how that
    thread spent the window (thread_share)."""

    def __init__(self, interval=0.25, thread=None):
        self.interval = interval
        self.samples = []
        self.thread, self.thread_samples = thread, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self):
        now = time.time()
        self.samples.append((now,) + MachineCpu._sample())
        got = self.thread and schedstat.read(*self.thread)
        if got:
            self.thread_samples.append((now,) + got)

    def _loop(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def thread_share(self, t0, t1):
        return thread_share(self.thread_samples, t0, t1) if self.thread else None

    def busy(self, t0, t1):
        ends = _ends(self.samples, t0, t1)
        if ends is None:
            return None
        (_, tot0, idle0), (_, tot1, idle1) = ends[0][:3], ends[1][:3]
        return round(1 - (idle1 - idle0) / (tot1 - tot0), 3) if tot1 > tot0 else None
