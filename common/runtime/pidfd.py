"""pidfd_open(2): a descriptor that becomes readable when a process exits.

os.pidfd_open where the os module has it; else (PyPy 3.9's) the system call
itself, whose number is 434 on every architecture (the table unified since
Linux 5.3)."""

import ctypes
import os

_NR_pidfd_open = 434


def _pidfd_open(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(_NR_pidfd_open), ctypes.c_long(pid), ctypes.c_long(0))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


pidfd_open = getattr(os, "pidfd_open", _pidfd_open)
