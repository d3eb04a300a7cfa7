"""Whether a directory's fsync also makes an inode just made in it durable
(nfspd/fs/journal.py): where it does not, a SYMLINK or MKNOD under sync
costs a syncfs of the file system. And whether it commits every change before
it, the metafiles written out included: where it does, the group commit
fdatasyncs none of them."""

import os
import subprocess

import pytest

from nfspd.fs.journal import (
    directory_fsync_commits_all,
    directory_fsync_commits_all_at,
    parent_fsync_suffices,
    parent_fsync_suffices_at,
)
from tools.dev import loopfs


@pytest.mark.parametrize("fstype, device, jbd2, suffices", [
    ("xfs", "sda1", [], True),                        # a log, always
    ("btrfs", None, [], True),
    ("tmpfs", None, [], True),                        # nothing survives a crash anyway
    ("ext4", "sda1", ["sda1-8"], True),               # mounted with its journal
    ("ext4", "dm-0", ["sda1-8", "dm-0-8"], True),     # device names with a dash
    ("ext4", "sda1", [], False),                      # made or mounted without one
    ("ext4", "sda", ["sda1-8"], False),               # another device's journal
    ("ext3", "vdb", ["vdb-8"], True),
    ("ext2", "sda1", ["sda1-8"], False),              # never journals
    ("fuse.sshfs", None, [], False),                  # unknown: sync to be safe
    (None, None, [], False),
])
def test_which_file_systems_write_a_new_inode_with_its_directory(fstype, device, jbd2, suffices):
    assert parent_fsync_suffices(fstype, device, jbd2) is suffices


@pytest.mark.parametrize("fstype, device, jbd2, commits_all", [
    ("ext4", "sda1", ["sda1-8"], True),               # jbd2 commits its transaction whole
    ("ext3", "vdb", ["vdb-8"], True),
    ("ext4", "loop0", ["loop0-8"], True),
    ("ext4", "sda1", [], False),                      # no journal: nothing to commit
    ("ext4", "sda", ["sda1-8"], False),
    ("ext2", "sda1", ["sda1-8"], False),
    ("xfs", "sda1", [], False),                       # forces its log only up to the directory
    ("btrfs", None, [], False),
    ("tmpfs", None, [], False),
    (None, None, [], False),
])
def test_which_file_systems_commit_everything_with_a_directory(fstype, device, jbd2, commits_all):
    assert directory_fsync_commits_all(fstype, device, jbd2) is commits_all


@pytest.mark.parametrize("journal", [True, False])
def test_an_ext4_made_with_or_without_a_journal_is_told_apart(tmp_path, journal):
    # A real ext4 on a loop device, as mke2fs makes it by default and without
    # its journal (-O ^has_journal): what /proc/fs/jbd2 and the mount table say.
    with loopfs.ext4(str(tmp_path), journal=journal) as mnt:
        assert parent_fsync_suffices_at(mnt) is journal
        assert directory_fsync_commits_all_at(mnt) is journal


def test_the_file_system_of_a_path_is_found_from_the_mount_table(tmp_path):
    # Checked against findmnt (util-linux) for the test's own directory.
    found = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "-T", str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout.split()
    fstype, source = found[0], found[1] if len(found) > 1 else ""
    device = os.path.basename(os.path.realpath(source)) if source.startswith("/dev/") else None
    entries = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
    assert parent_fsync_suffices_at(tmp_path) is parent_fsync_suffices(fstype, device, entries)
    assert (directory_fsync_commits_all_at(tmp_path)
            is directory_fsync_commits_all(fstype, device, entries))


@pytest.mark.parametrize("journalled", [False, True])
def test_nfspd_warns_once_per_export_on_a_file_system_without_a_journal(
        tmp_path, monkeypatch, caplog, journalled):
    import logging

    import nfspd.fs.objects
    from nfspd.server import Config, Metaserver
    monkeypatch.setattr(nfspd.fs.objects, "parent_fsync_suffices", lambda *fs: journalled)
    export = tmp_path / "export"
    export.mkdir()
    exports = tmp_path / "exports"
    exports.write_text(f"{export} *(rw,no_root_squash)\n")
    with caplog.at_level(logging.WARNING, logger="nfspd"):
        ms = Metaserver(Config(str(exports), str(tmp_path / "state"), pnfs=False, unlinkd="off"))
    ms.group_commit.close()
    warned = [r.getMessage() for r in caplog.records if "journals no metadata" in r.getMessage()]
    if journalled:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].startswith(f"{export}: ")
