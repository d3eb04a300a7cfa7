"""Whether fsyncing a directory also makes an inode just made in it durable.

Under ``sync`` a SYMLINK or MKNOD is answered once it would survive a crash
of the machine; Linux's nfsd commits the new object and its parent. From
user space a symlink or a device node cannot be fsynced (an O_PATH
descriptor refuses it, and opening a device or a fifo is not harmless), so
nfspd fsyncs the parent. That is enough on a file system that journals its
metadata: the parent's commit carries the transaction that made the inode
(ext3 and ext4 with a journal, xfs, btrfs). Without a journal (ext2, an ext4
made or mounted without one) the parent's fsync writes the directory's
block and not the new inode: after a crash the name points to an inode
never written, and fsck removes it. There the flush asks for syncfs(2) of
the file system instead (nfspd/fs/commit.py), which writes every dirty
inode, once per flush that has such a change.

What a file system is comes from /proc/self/mountinfo (by device number);
whether an ext3/ext4 has a journal, from /proc/fs/jbd2, where each mounted
journal has an entry named after its device. Anything not known to journal
counts as not journalled: a syncfs too many costs time, one too few a file.

On ext3 and ext4 with a journal, an fsync of a directory does more: it
commits the journal's running transaction whole (ext4_sync_file treats a
directory as journalled data, ext4_force_commit; since Linux 6.4 in
ext4_fsync_journal, for every non-regular file). A metafile whose record is
an attribute (metadata, in that transaction), or whose pages were written
out before it (their blocks allocated in that transaction, their writes
complete), is then durable with it, and a flush need not fsync it: that
would only flush the device's cache once more per file. XFS and btrfs force
their log only up to the directory's own last change, so there the files
are fsynced.
"""

import os

# Their metadata changes are logged: a directory's fsync commits the
# transaction that made an inode in it.
JOURNALLED = frozenset({"xfs", "btrfs", "jfs", "reiserfs", "nilfs2", "zfs"})
# Whatever is made there is gone after a crash anyway: no flush helps.
VOLATILE = frozenset({"tmpfs", "ramfs"})
# Journalled only when mounted with a journal (jbd2 then lists its device).
EXT_JBD2 = frozenset({"ext3", "ext4"})


def parent_fsync_suffices(fstype, device, jbd2_entries):
    """Whether, on a file system of type ``fstype`` on block device ``device``
    (its kernel name, "sda1"), an fsync of a directory also makes durable an
    inode just made in it; ``jbd2_entries`` are the names in /proc/fs/jbd2
    ("sda1-8": device, then the journal's inode)."""
    return (fstype in JOURNALLED or fstype in VOLATILE
            or directory_fsync_commits_all(fstype, device, jbd2_entries))


def directory_fsync_commits_all(fstype, device, jbd2_entries):
    """Whether an fsync of a directory on that file system (arguments as for
    parent_fsync_suffices) commits every change made on it before, data
    written out included: ext3 or ext4 mounted with its journal."""
    return (fstype in EXT_JBD2 and bool(device)
            and any(entry.rpartition("-")[0] == device for entry in jbd2_entries))


def parent_fsync_suffices_at(path):
    """parent_fsync_suffices() for the file system ``path`` is on."""
    return parent_fsync_suffices(*identify(path))


def directory_fsync_commits_all_at(path):
    """directory_fsync_commits_all() for the file system ``path`` is on."""
    return directory_fsync_commits_all(*identify(path))


def identify(path):
    """(fstype, device, jbd2 entries) of the file system ``path`` is on."""
    st = os.stat(path)
    fstype = _fstype(os.major(st.st_dev), os.minor(st.st_dev))
    try:
        device = os.path.basename(os.readlink(f"/sys/dev/block/{os.major(st.st_dev)}:"
                                              f"{os.minor(st.st_dev)}"))
    except OSError:
        device = None  # not a block device (tmpfs, btrfs subvolumes, ...)
    try:
        entries = os.listdir("/proc/fs/jbd2")
    except OSError:
        entries = []   # no journal mounted at all
    return fstype, device, entries


def _fstype(major, minor):
    dev = f"{major}:{minor}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == dev and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        pass
    return None
