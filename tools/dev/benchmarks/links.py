"""Per-link traffic of a testbed run, from the bridge ports' byte counters
(tools/dev/testbed.Testbed.counters: a host cannot hide what it sent through a
raw socket from them)."""

import threading
import time

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


class CpuSampler:
    """Samples the machine's CPU counters every ``interval`` seconds in a
    thread, so the busy fraction can be taken over the measured window only
    (not the loadgens' start-up)."""

    def __init__(self, interval=0.25):
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append((time.time(),) + MachineCpu._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(),) + MachineCpu._sample())

    def busy(self, t0, t1):
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            before = [s for s in self.samples if s[0] <= t0][-1:]
            after = [s for s in self.samples if s[0] >= t1][:1]
            inside = before + inside + after
        if len(inside) < 2:
            return None
        (_, tot0, idle0), (_, tot1, idle1) = inside[0][:3], inside[-1][:3]
        return round(1 - (idle1 - idle0) / (tot1 - tot0), 3) if tot1 > tot0 else None
