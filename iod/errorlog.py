"""The iod's error lines: one per error kind, then again only after a quiet
interval, so a storm of one error is one line a minute (how many there were
is in the counters, iod/counters.py)."""

import logging
import threading
import time

ERROR_LOG_INTERVAL = 60.0

log = logging.getLogger("iod")


class ErrorLog:
    """``errors(level, kind, fmt, *args)`` logs like log.log, unless ``kind``
    was logged less than ``interval`` seconds of ``clock`` ago."""

    def __init__(self, interval=ERROR_LOG_INTERVAL, clock=time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last = {}
        self._lock = threading.Lock()

    def __call__(self, level, kind, fmt, *args, **kwargs):
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                return
            if len(self._last) > 1024:
                self._last.clear()
            self._last[kind] = now
        log.log(level, fmt, *args, **kwargs)
