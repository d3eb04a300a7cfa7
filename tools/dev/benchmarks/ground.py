"""The file system a benchmark's exports live on.

Where the results directory's file system journals its metadata (ext4 with a
journal, xfs: what a Debian install makes), the exports live there. Where it
does not (this machine's disk is an ext4 made without a journal) or keeps
nothing (tmpfs), they live on an ext4 made for the run as mke2fs makes it by
default, with its journal, on a loop device over an image file beside the
results: that is what an admin's export is on, and without a journal
the figures were a lottery. There the kernel's inode allocator skips every
inode freed in the last ~35 s (ext4's recently_deleted; README:
troubleshooting), so what a server paid for depended on the removals made
before it: ganesha made 1,820 and 3,812 MKDIR+RMDIR pairs/s over TCP in two
runs 45 s apart, against 4,136 and 4,417 on a journalled ext4 made for each.

The image's writes and flushes reach the disk through the loop device and
the image file: a ``sync`` export's flushes cost what they cost on that
disk, once more through the host's file system (0.5-0.9 ms each here,
mostly the journal's commit). "ram" puts the exports on a journalled ext4
on a zram device instead (tools/dev/zramfs.py), whose flushes cost nothing,
as on a drive with power-loss protection: what ``sync`` costs a server
apart from its disk.
"""

import contextlib
import os

from nfspd.fs.journal import VOLATILE, identify, parent_fsync_suffices
from tools.dev import loopfs, zramfs

IMAGE_SIZE = "16G"  # sparse: takes what is written


def journals(path):
    """Whether ``path``'s file system keeps metadata with a journal or log."""
    fstype, device, entries = identify(path)
    return fstype not in VOLATILE and parent_fsync_suffices(fstype, device, entries)


def chosen(ctx, where, name):
    """The ground ``where`` names (--meta-ground): "journalled" (journalled()
    below), "ram" (ram() below) or "work" (ctx.work, whatever its file
    system)."""
    if where == "work":
        return contextlib.nullcontext((ctx.work, "results directory's file system"))
    if where == "ram":
        return ram(ctx, name)
    return journalled(ctx, name)


@contextlib.contextmanager
def ram(ctx, name):
    """The root of a new journalled ext4 on a zram device, gone on exit."""
    with zramfs.ext4(ctx.work, name) as mnt:
        ctx.log(f"{name}: exports on a journalled ext4 on a zram device made for the run")
        yield mnt, "ext4 with a journal on a zram device (RAM: a flush costs nothing)"


@contextlib.contextmanager
def journalled(ctx, name):
    """A directory on a journalled file system for the servers' trees:
    under ctx.work if its file system journals, else the root of a new ext4
    (with its journal) mounted from ``name``.img in ctx.work, unmounted and
    removed on exit (kept with --keep). Yields (directory, what it is, for
    the results)."""
    if journals(ctx.work):
        yield ctx.work, "results directory's file system"
        return
    # A server's process still holding a file there does not leave the mount
    # behind: detached then, it goes once that one exits (tools/dev/loopfs.py).
    with loopfs.ext4(ctx.work, name, IMAGE_SIZE, keep=ctx.keep) as mnt:
        ctx.log(f"{name}: exports on a journalled ext4 made for the run "
                f"({os.path.join(ctx.work, name)}.img)")
        yield mnt, "ext4 with a journal on a loop device, made for the run"
