"""glibc's malloc told to keep the MiB buffers file data moves through.

A relayed WRITE's record, a stripe read or written, an iod frame: buffers of
up to a MiB or so, made and freed hundreds of times a second. glibc serves a
block that size with a fresh mmap (its threshold starts at 128 KiB and only
rises as such blocks are freed) and gives the heap's free top back to the
kernel beyond twice that threshold, so each new buffer's pages fault in
again: about 1 ms a MiB on this VM, more than copying it. Fixed thresholds
keep blocks up to 32 MiB (glibc's largest threshold) on the heap and up to
64 MiB of its free top in the process. Measured, NFSv3 WRITEs of 1 MiB over
TCP relayed to 2 iods (tools.dev.loadgen seqwrite), CPU per MiB, two
alternating runs: nfspd 3.01-3.10 -> 2.67-2.73 ms, the iods 6.1-6.6 ->
5.3-5.8 ms; what the processes keep afterwards: nfspd 48-52 -> 63 MB
(its peak unchanged, 62 MB), each iod 70-75 -> 90-92 MB (peak 86-88 ->
90-92); minor faults per MiB: nfspd 86-118 -> 3, the iods 326-422 -> 11.
How much it saves depends on the pattern of allocations: under the pNFS
benchmark's NFSv3 relay (tools.dev.benchmarks --only pnfs --quick, three
alternating runs) nfspd faulted ~30 times a MiB without it, and the
figures moved within their noise either way.

An admin's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (or
GLIBC_TUNABLES) in the environment wins: then nothing is changed.
"""

import ctypes
import ctypes.util
import os

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20

_ADMIN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_buffers():
    """Set the thresholds (once, at start, before threads make arenas of
    their own); True if set, False if the admin's environment decides or
    the C library is not glibc."""
    if any(name in os.environ for name in _ADMIN_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
