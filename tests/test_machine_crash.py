"""A crash of the metaserver's machine after `sync` changes were answered loses
none of them (issue 15; a kill -9 of nfspd: tests/test_nfspd_e2e.py). The
crash: ext4's shutdown ioctl without a log flush, as xfstests' godown does.
From then on nothing more reaches the disk, so what survives (the journal
replayed at the next mount) is exactly what the group commit's flushes
committed; the running transaction and unwritten pages are lost."""

import errno
import fcntl
import os
import struct

import pytest
import trio

from common.runtime import metarecord
from nfspd.datapath import LocalDataPath
from nfspd.fs.commit import GroupCommit
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, SetAttr
from tools.dev import loopfs

KEY = b"export secret key 0123456789abcd"
ALICE = Caller(1001, 1001, (1001,))
EXT4_IOC_SHUTDOWN = 0x8004587D        # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def crash(mnt):
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


@pytest.mark.parametrize("record_in", ["attribute", "data"])
def test_sync_changes_answered_survive_a_crash_of_the_machine(tmp_path, monkeypatch, record_in):
    if record_in == "data":  # as on a file system without trusted attributes
        def unsupported(*args):
            raise OSError(errno.EOPNOTSUPP, "no trusted attributes")
        monkeypatch.setattr(metarecord.os, "setxattr", unsupported)
    (tmp_path / "data").mkdir()
    with loopfs.ext4(str(tmp_path), size="64M") as mnt:
        export = os.path.join(mnt, "export")
        os.mkdir(export)
        os.chmod(export, 0o777)
        commit = GroupCommit()
        fs = MetaFS(export, 42, KEY, LocalDataPath(str(tmp_path / "data")),
                    purge=lambda ino, seed: None, commit=commit)
        try:
            d, _, _ = fs.mkdir(fs.root_fh, b"d", ALICE, SetAttr(mode=0o755))
            fh_b, _, _ = fs.create(d, b"b", ALICE, CreateHow.GUARDED, SetAttr(mode=0o640))
            # (A FILE_SYNC write fsyncs, which commits everything before it:
            # first, so that only the group commit's flush covers the rest.)
            trio.run(fs.write, fh_b, ALICE, 70000, b"x", True)
            for name in (b"a", b"c"):
                fs.create(d, name, ALICE, CreateHow.GUARDED, SetAttr(mode=0o640))
            fs.rename(d, b"a", d, b"a2", ALICE)
            fs.remove(d, b"c", ALICE)
            # A new directory, and a file in it: on this journalled ext4 the
            # flush fsyncs the parents only (their commit carries the rest).
            e, _, _ = fs.mkdir(d, b"e", ALICE, SetAttr(mode=0o755))
            fs.create(e, b"f", ALICE, CreateHow.GUARDED, SetAttr(mode=0o640))
            trio.run(fs.stable, fs.stable_ticket())  # what the replies waited for
            path = os.path.join(export, "d")
            before = {n: (os.stat(os.path.join(path, n)).st_ino,
                          metarecord.of_path(os.path.join(path, n)))
                      for n in os.listdir(path) if n != "e"}
            assert sorted(before) == ["a2", "b"] and before["b"][1].size == 70001
            made = os.stat(os.path.join(path, "e")).st_ino, os.listdir(os.path.join(path, "e"))
            crash(mnt)
        finally:
            fs.close()
            commit.close()
        loopfs.remount(mnt)
        after = {n: (os.stat(os.path.join(path, n)).st_ino,
                     metarecord.of_path(os.path.join(path, n)))
                 for n in os.listdir(path) if n != "e"}
        assert after == before
        assert (os.stat(os.path.join(path, "e")).st_ino, os.listdir(os.path.join(path, "e"))) \
            == made == (made[0], ["f"])
        assert {os.stat(os.path.join(path, n)).st_uid for n in after} == {ALICE.uid}
