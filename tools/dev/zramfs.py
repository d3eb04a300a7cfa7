"""An ext4 with its journal on a zram device made for a benchmark run: a
disk in RAM, whose flushes cost nothing (an fdatasync after an append took
11 us here, against 0.5-0.9 ms on the loop device of tools/dev/loopfs.py),
as on a drive with power-loss protection. It measures what a server's
``sync`` costs it apart from the disk's flush.

The device is a new one (zram's hot_add), so a zram the machine uses (for
swap) is never touched; it is reset and removed on exit, its memory given
back."""

import contextlib
import os
import subprocess

from tools.dev import loopfs

CONTROL = "/sys/class/zram-control"


def available():
    """Whether zram devices can be made here (loading the module if need be)."""
    if not os.path.isdir(CONTROL):
        subprocess.run(["modprobe", "zram", "num_devices=0"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.isdir(CONTROL)


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


@contextlib.contextmanager
def ext4(directory, name="ram", size="4G"):
    """Mount a new journalled ext4 on a new zram device of ``size`` on
    ``directory``/``name`` and yield the mount point; unmounted (detached if
    still busy), the device reset and removed on exit. Needs root."""
    if not available():
        raise RuntimeError("no zram here (modprobe zram failed)")
    with open(os.path.join(CONTROL, "hot_add")) as f:
        n = int(f.read())
    dev, sysfs = f"/dev/zram{n}", f"/sys/block/zram{n}"
    mnt = os.path.join(directory, name)
    try:
        _write(os.path.join(sysfs, "disksize"), size)
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
        os.makedirs(mnt, exist_ok=True)
        try:
            subprocess.run(["mount", dev, mnt], check=True)
            try:
                yield mnt
            finally:
                loopfs.unmount(mnt)
        finally:
            os.rmdir(mnt)
    finally:
        try:
            _write(os.path.join(sysfs, "reset"), "1")
            _write(os.path.join(CONTROL, "hot_remove"), str(n))
        except OSError:
            pass  # (still held by a lazily unmounted file system: it goes with it)
