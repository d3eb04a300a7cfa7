"""An ext4 made for a test or a benchmark run on a loop device: as mke2fs
makes it by default (with its journal), or without its journal. The image is
sparse (it takes what is written) and lives beside the mount point."""

import contextlib
import os
import subprocess


@contextlib.contextmanager
def ext4(directory, name="fs", size="64M", journal=True, keep=False):
    """Mount a new ext4 from ``name``.img on ``directory``/``name`` and yield
    the mount point; unmounted (detached if still busy: it goes once the last
    process holding a file there lets go) and its image removed (unless
    ``keep``) on exit. Needs root."""
    mnt = os.path.join(directory, name)
    image = _image(mnt)
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["truncate", "-s", size, image], check=True)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F"] + ([] if journal else ["-O", "^has_journal"])
                       + [image], check=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
        try:
            yield mnt
        finally:
            unmount(mnt)
    finally:
        if not keep:
            os.unlink(image)
        os.rmdir(mnt)


def unmount(mnt):
    """Unmount ``mnt``; detached if still busy (a process holding a file
    there), it goes once the last one lets go."""
    if subprocess.run(["umount", mnt], check=False, stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["umount", "-l", mnt], check=True)


def remount(mnt):
    """Unmount ``mnt`` (nothing may hold a file there) and mount its image
    again, as a reboot would: an ext4 replays its journal."""
    subprocess.run(["umount", mnt], check=True)
    subprocess.run(["mount", "-o", "loop", _image(mnt), mnt], check=True)


def _image(mnt):
    return f"{mnt}.img"
