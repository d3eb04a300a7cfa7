"""The iod's event counters (requests by op, drops by reason, errors by
errno, bytes), bumped from every I/O thread and read by the log summaries and
the metrics page (iod/metrics.py)."""

import threading


class Counters:
    """Each thread counts in a dict of its own (no lock on the hot path);
    the dicts are summed when read."""

    def __init__(self):
        self._local = threading.local()
        self._dicts = []
        self._lock = threading.Lock()

    def add(self, name, n=1):
        try:
            mine = self._local.counts
        except AttributeError:
            mine = self._local.counts = {}
            with self._lock:
                self._dicts.append(mine)
        mine[name] = mine.get(name, 0) + n

    def snapshot(self):
        with self._lock:
            dicts = list(self._dicts)
        total = {}
        for d in dicts:
            for k, v in d.copy().items():    # dict.copy is atomic under the GIL
                total[k] = total.get(k, 0) + v
        return total

    def summary(self):
        return " ".join(f"{k}={v}" for k, v in sorted(self.snapshot().items()))
