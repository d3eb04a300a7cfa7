"""Logging set-up shared by every daemon: one line per event, to stderr or syslog."""

import logging
import logging.handlers
import os

LEVELS = ("debug", "info", "warning", "error")


def setup(name, level="info", syslog=False):
    handlers = []
    if syslog and os.path.exists("/dev/log"):
        h = logging.handlers.SysLogHandler(address="/dev/log",
                                           facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        h.setFormatter(logging.Formatter(f"{name}[%(process)d]: %(levelname)s %(name)s: %(message)s"))
        handlers.append(h)
    else:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(h)
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=handlers, force=True)
