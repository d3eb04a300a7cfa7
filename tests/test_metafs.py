"""MetaFS on a real directory, as root, with callers of several uids."""

import errno
import logging
import os
import random
import stat
import struct
import subprocess
import sys
import time

import pytest
import trio
import trio.testing

from common.metafile import HEADER as META_HEADER, SIZE as META_SIZE, Metafile
from common.nfs3 import nfsstat3
from common.runtime import metarecord
from nfspd.datapath import LocalDataPath
from nfspd.fs.access import ACCESS3_ALL, ACCESS3_LOOKUP, ACCESS3_READ
from nfspd.fs import metafs as metafs_module
from nfspd.fs import metafiles
from nfspd.fs import objects as objects_module
from nfspd.fs.creds import as_caller
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import (SET_TO_SERVER_TIME, Caller, CreateHow, FileType, FsError, SetAttr,
                            TargetExists)
from tools.dev import REPO

KEY = b"export secret key 0123456789abcd"
ROOT = Caller(0, 0)
ALICE = Caller(1001, 1001, (1001,))
BOB = Caller(1002, 1002, (1002, 500))
UNCHECKED, GUARDED, EXCLUSIVE = CreateHow.UNCHECKED, CreateHow.GUARDED, CreateHow.EXCLUSIVE


class Env:
    def __init__(self, tmp_path, sync=True):
        self.root = tmp_path / "export"
        self.data = tmp_path / "data"
        self.root.mkdir(exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.purged = []
        self.dp = LocalDataPath(str(self.data))
        self.sync = sync
        self.fs = self.make()

    def make(self):
        return MetaFS(str(self.root), 42, KEY, self.dp,
                      purge=lambda ino, seed: self.purged.append((ino, seed)),
                      sync_metadata=self.sync)

    def create(self, name, caller=ROOT, mode=0o644, d=None, **kw):
        fh, attr, _ = self.fs.create(d or self.fs.root_fh, name, caller, UNCHECKED,
                                     SetAttr(mode=mode, **kw))
        return fh

    def lookup(self, name, caller=ROOT, d=None):
        return self.fs.lookup(d or self.fs.root_fh, name, caller)[0]

    def written(self, fh, caller=ROOT):
        """``fh`` once a byte was written to it: a file with data, which
        its removal purges (one never written has none anywhere)."""
        run(self.fs.write, fh, caller, 0, b"d", 2)
        return fh


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.fs.close()


def status_of(fn, *args, **kw):
    with pytest.raises(FsError) as e:
        fn(*args, **kw)
    return e.value.status


def run(fn, *args):
    return trio.run(fn, *args)


def snapshot(path):
    """Everything about a tree that an operation could change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink)
    return out


# --- attributes and the metafile ---------------------------------------------------


def test_root_attributes(env):
    a = env.fs.getattr(env.fs.root_fh)
    assert a.type == FileType.DIR
    assert a.fileid == os.stat(env.root).st_ino
    assert a.fsid == env.fs.fsid
    assert len(env.fs.root_fh) <= 32


def test_a_regular_file_is_a_small_metafile_with_the_real_size(env):
    fh = env.create(b"f")

    async def main():
        n, committed, verf, wcc = await env.fs.write(fh, ROOT, 295000, b"x" * 456, 2)
        assert (n, committed, len(verf)) == (456, 2, 8)
        assert wcc.pre.size == 0 and wcc.post.size == 295456
        data, eof, attr = await env.fs.read(fh, ROOT, 294990, 1000)
        assert data == bytes(10) + b"x" * 456 and eof and attr.size == 295456
    run(main)
    # Sized by its length: a stat tells the size (issue 15).
    assert os.stat(env.root / "f").st_size == META_HEADER + 295456
    meta = metarecord.of_path(env.root / "f")
    assert meta.size == 295456
    a = env.fs.getattr(fh)
    assert a.size == 295456 and a.used == 73 * 4096  # rounded up to 4 KiB
    assert env.fs.lookup(env.fs.root_fh, b"f", ROOT)[1].size == 295456


def test_write_updates_mtime_and_reads_past_the_end_are_empty(env):
    fh = env.create(b"f")
    before = env.fs.getattr(fh)

    async def main():
        await env.fs.write(fh, ROOT, 0, b"abc", 0)
        assert await env.fs.read(fh, ROOT, 3, 10) == (b"", True, env.fs.getattr(fh))
        data, eof, _ = await env.fs.read(fh, ROOT, 1, 1)
        assert (data, eof) == (b"b", False)
    run(main)
    after = env.fs.getattr(fh)
    assert after.mtime_ns >= before.mtime_ns and after.ctime_ns >= before.ctime_ns
    assert after.size == 3


def test_unstable_write_then_commit(env):
    fh = env.create(b"f")

    async def main():
        n, committed, verf, _ = await env.fs.write(fh, ROOT, 0, b"hello", 0)
        assert committed == 0
        cverf, wcc = await env.fs.commit(fh, ROOT, 0, 0)
        assert cverf == verf == env.dp.verifier
        assert wcc.post.size == 5
    run(main)


def test_shrink_then_grow_reads_zeros(env):
    fh = env.create(b"f")

    async def main():
        await env.fs.write(fh, ROOT, 0, b"y" * 100, 2)
        env.fs.setattr(fh, ROOT, SetAttr(size=10))
        assert env.fs.getattr(fh).size == 10
        env.fs.setattr(fh, ROOT, SetAttr(size=100))
        data, eof, _ = await env.fs.read(fh, ROOT, 0, 200)
        assert data == b"y" * 10 + bytes(90) and eof
        # Growing by writing beyond a shrink is as good.
        env.fs.setattr(fh, ROOT, SetAttr(size=5))
        await env.fs.write(fh, ROOT, 50, b"z", 2)
        data, _, _ = await env.fs.read(fh, ROOT, 0, 100)
        assert data == b"y" * 5 + bytes(45) + b"z"
    run(main)
    # The truncation was carried out on the data, not just recorded.
    ino = os.stat(env.root / "f").st_ino
    seed = metarecord.of_path(env.root / "f").seed
    assert metarecord.of_path(env.root / "f").trunc_to is None
    assert env.dp.store.size(ino, seed)[0] == 51


def test_a_pending_truncation_survives_a_restart(env):
    fh = env.create(b"f")

    async def fill():
        await env.fs.write(fh, ROOT, 0, b"q" * 64, 2)
    run(fill)
    env.fs.setattr(fh, ROOT, SetAttr(size=8))
    env.fs.setattr(fh, ROOT, SetAttr(size=64))
    env.fs.close()
    env.fs = env.make()

    # What a READ can plan without waiting, it plans; this one has to wait.
    assert env.fs.read_plan_now(fh, ROOT, 0, 64) is None
    os.chmod(env.root / "f", 0o600)
    assert status_of(env.fs.read_plan_now, fh, Caller(7, 7), 0, 64) == nfsstat3.NFS3ERR_ACCES

    async def check():
        data, _, _ = await env.fs.read(fh, ROOT, 0, 64)
        assert data == b"q" * 8 + bytes(56)
    run(check)
    plan = env.fs.read_plan_now(fh, ROOT, 60, 64)
    assert (plan.offset, plan.count, plan.eof, plan.attr.size) == (60, 4, True, 64)


def test_a_regular_file_that_is_not_a_metafile_is_an_io_error_not_a_crash(env, caplog):
    (env.root / "junk").write_bytes(b"not a metafile at all")
    caplog.set_level(logging.ERROR)
    objects = env.fs._objects
    fh = objects.codec.encode_at(objects.root_fd, b"junk")
    for _ in range(3):
        assert status_of(env.fs.getattr, fh) == nfsstat3.NFS3ERR_IO
    assert status_of(env.fs.lookup, env.fs.root_fh, b"junk", ROOT) == nfsstat3.NFS3ERR_IO
    assert status_of(run, env.fs.read, fh, ROOT, 0, 10) == nfsstat3.NFS3ERR_IO
    assert len([r for r in caplog.records if "not a valid metafile" in r.getMessage()]) == 1
    names = [e.name for e in env.fs.readdir(env.fs.root_fh, 0, None, ROOT, 100)[0]]
    assert b"junk" in names
    env.fs.remove(env.fs.root_fh, b"junk", ROOT)
    assert not (env.root / "junk").exists()
    assert env.purged == []


def test_a_metafile_copied_without_its_attribute_is_an_io_error_not_a_hole(env, caplog):
    # Its data is a hole: no record there to fall back on.
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"x" * 10, True)
    os.removexattr(env.root / "f", metarecord.XATTR)
    env.fs.close()
    env.fs = env.make()
    caplog.set_level(logging.ERROR)
    assert status_of(run, env.fs.read, fh, ROOT, 0, 10) == nfsstat3.NFS3ERR_IO
    assert status_of(run, env.fs.write, fh, ROOT, 0, b"y", True) == nfsstat3.NFS3ERR_IO
    assert [r for r in caplog.records if "not a valid metafile" in r.getMessage()]


def test_a_changed_record_of_the_old_format_moves_to_the_attribute(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"y" * 100, True)
    old = metarecord.of_path(env.root / "f")
    os.removexattr(env.root / "f", metarecord.XATTR)
    with open(env.root / "f", "r+b") as f:             # what nfspd wrote before
        f.write(old.encode())
    env.fs.close()
    env.fs = env.make()
    env.fs.setattr(fh, ROOT, SetAttr(size=10))          # a pending cut: in the record
    assert os.stat(env.root / "f").st_size == META_SIZE
    assert metarecord.of_path(env.root / "f") == old.replace(size=10, trunc_to=10)
    assert Metafile.decode(os.getxattr(env.root / "f", metarecord.XATTR)).trunc_to == 10


def length_on_disk(env, name):
    return os.stat(env.root / name).st_size


def test_lookup_getattr_and_listing_of_many_files_read_no_metafile(env):
    names = [b"f%d" % i for i in range(50)]
    for i, n in enumerate(names):
        run(env.fs.write, env.create(n), ROOT, i * 1000, b"x", True)
    env.fs.close()
    env.fs = env.make()                 # a restarted metaserver: nothing cached
    entries, eof, _, _ = env.fs.readdir(env.fs.root_fh, 0, None, ROOT, 100)
    assert eof
    sizes = {}
    for e in entries:
        if e.name in names:
            fh, attr, _ = env.fs.lookup(env.fs.root_fh, e.name, ROOT)
            assert env.fs.getattr(fh).size == attr.size
            sizes[e.name] = attr.size
    assert sizes == {n: i * 1000 + 1 for i, n in enumerate(names)}
    assert env.fs.meta_reads == 0


def test_a_metafile_of_the_old_format_is_read_and_sized_by_its_length_once_written(env):
    fh = env.create(b"f")
    old = metarecord.of_path(env.root / "f").replace(size=777)
    os.removexattr(env.root / "f", metarecord.XATTR)
    (env.root / "f").write_bytes(old.encode())          # what nfspd wrote before issue 15
    env.fs.close()
    env.fs = env.make()
    assert env.fs.getattr(fh).size == 777
    assert env.fs.lookup(env.fs.root_fh, b"f", ROOT)[1].size == 777
    run(env.fs.write, fh, ROOT, 1000, b"y", True)
    assert length_on_disk(env, "f") == META_HEADER + 1001
    assert metarecord.of_path(env.root / "f").seed == old.seed
    assert env.fs.getattr(fh).size == 1001


def test_a_truncation_is_kept_in_the_record_until_carried_out(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"y" * 100, True)
    env.fs.setattr(fh, ROOT, SetAttr(size=10))
    # Pending: sized by its record, which also says what is still to cut.
    assert os.stat(env.root / "f").st_size == META_SIZE
    assert metarecord.of_path(env.root / "f").trunc_to == 10
    assert env.fs.getattr(fh).size == 10
    env.fs.setattr(fh, ROOT, SetAttr(size=30))          # grown again, still pending
    assert metarecord.of_path(env.root / "f").trunc_to == 10
    assert env.fs.getattr(fh).size == 30
    data, _, _ = run(env.fs.read, fh, ROOT, 0, 100)     # carries the cut out
    assert data == b"y" * 10 + bytes(20)
    assert length_on_disk(env, "f") == META_HEADER + 30
    assert env.fs.getattr(fh).size == 30


def test_a_crash_between_recording_a_truncation_and_switching_forms_leaves_it_undone(env):
    # SETATTR writes the record (pending trunc_to) and then ftruncates the
    # metafile to the record's length. Killed between the two: a metafile
    # sized by its length, whose record's pending cut is ignored, so the file
    # is as before the (unanswered) SETATTR and no cut is ever carried out.
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"y" * 100, True)
    meta = metarecord.of_path(env.root / "f")
    os.setxattr(env.root / "f", metarecord.XATTR, meta.replace(size=10, trunc_to=10).encode())
    env.fs.close()
    env.fs = env.make()
    assert env.fs.getattr(fh).size == 100
    data, _, attr = run(env.fs.read, fh, ROOT, 0, 200)
    assert data == b"y" * 100 and attr.size == 100


def test_a_failed_write_gives_back_the_metafiles_length(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"a" * 100, True)
    w = env.fs.write_plan_now(fh, ROOT, 100, 100, 2)
    assert length_on_disk(env, "f") == META_HEADER + 200
    env.fs.write_failed(w)
    assert length_on_disk(env, "f") == META_HEADER + 100
    env.fs.close()
    env.fs = env.make()
    assert env.fs.getattr(fh).size == 100


def test_metafile_cache_notices_a_metafile_rewritten_behind_our_back(env):
    fh = env.create(b"f")
    assert env.fs.getattr(fh).size == 0
    m = metarecord.of_path(env.root / "f")
    os.setxattr(env.root / "f", metarecord.XATTR, m.replace(size=777).encode())
    os.truncate(env.root / "f", META_SIZE)              # sized by its record
    assert env.fs.getattr(fh).size == 777


# --- handles ---------------------------------------------------------------------------


def test_handles_survive_a_restart_and_renames(env):
    fh_file = env.create(b"f")
    d = env.fs.root_fh
    for part in (b"a", b"b", b"c", b"d"):
        d = env.fs.mkdir(d, part, ROOT, SetAttr(mode=0o755))[0]
    deep = d
    env.fs.close()
    os.rename(env.root / "a", env.root / "renamed")
    os.rename(env.root / "renamed" / "b" / "c", env.root / "renamed" / "c2")
    env.fs = env.make()
    assert env.fs.getattr(fh_file).fileid == os.stat(env.root / "f").st_ino
    assert env.fs.getattr(deep).fileid == os.stat(env.root / "renamed" / "c2" / "d").st_ino
    # v2 padding as well
    assert env.fs.getattr(deep + bytes(32 - len(deep))).type == FileType.DIR


def test_forged_truncated_and_foreign_handles(env, tmp_path):
    fh = env.create(b"f")
    for bad in (b"", fh[:-1], fh[:10], bytes(32), b"\xff" * 32, fh[:-1] + bytes([fh[-1] ^ 1])):
        assert status_of(env.fs.getattr, bad) == nfsstat3.NFS3ERR_BADHANDLE
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = MetaFS(str(other_root), 43, KEY, env.dp)
    try:
        assert status_of(other.getattr, fh) == nfsstat3.NFS3ERR_BADHANDLE
        assert status_of(env.fs.getattr, other.root_fh) == nfsstat3.NFS3ERR_BADHANDLE
    finally:
        other.close()


def test_removed_objects_are_stale(env):
    fh = env.create(b"f")
    d = env.fs.mkdir(env.fs.root_fh, b"d", ROOT, SetAttr())[0]
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    env.fs.rmdir(env.fs.root_fh, b"d", ROOT)
    assert status_of(env.fs.getattr, fh) == nfsstat3.NFS3ERR_STALE
    assert status_of(env.fs.getattr, d) == nfsstat3.NFS3ERR_STALE
    # ...also when removed behind our back and after a restart.
    fh2 = env.create(b"g")
    env.fs.getattr(fh2)
    os.unlink(env.root / "g")
    assert status_of(env.fs.getattr, fh2) == nfsstat3.NFS3ERR_STALE
    env.fs.close()
    env.fs = env.make()
    assert status_of(env.fs.getattr, fh2) == nfsstat3.NFS3ERR_STALE


# --- lookups and symlinks ------------------------------------------------------------


def test_dot_and_dotdot(env):
    fs = env.fs
    sub = fs.mkdir(fs.root_fh, b"sub", ROOT, SetAttr())[0]
    assert fs.lookup(fs.root_fh, b"..", ROOT)[0] == fs.root_fh
    assert fs.lookup(fs.root_fh, b".", ROOT)[0] == fs.root_fh
    assert fs.lookup(sub, b"..", ROOT)[0] == fs.root_fh
    assert fs.lookup(sub, b".", ROOT)[0] == sub
    fh, attr, dattr = fs.lookup(sub, b"..", ROOT)
    assert attr.fileid == os.stat(env.root).st_ino
    assert dattr.fileid == os.stat(env.root / "sub").st_ino


def test_symlinks_are_never_followed(env, tmp_path):
    fs = env.fs
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    os.mkdir(tmp_path / "outdir")
    fh = fs.symlink(fs.root_fh, b"ln", ROOT, str(secret).encode(), SetAttr())[0]
    os.symlink(tmp_path / "outdir", env.root / "dirlink")
    os.symlink("..", env.root / "up")
    fh2, attr, _ = fs.lookup(fs.root_fh, b"ln", ROOT)
    assert fh2 == fh and attr.type == FileType.LNK
    assert fs.readlink(fh, ROOT)[0] == str(secret).encode()
    assert status_of(run, fs.read, fh, ROOT, 0, 10) == nfsstat3.NFS3ERR_INVAL
    assert status_of(run, fs.write, fh, ROOT, 0, b"x", 2) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.setattr, fh, ROOT, SetAttr(size=0)) == nfsstat3.NFS3ERR_INVAL
    dl = fs.lookup(fs.root_fh, b"dirlink", ROOT)[0]
    assert status_of(fs.create, dl, b"x", ROOT, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_NOTDIR
    assert status_of(fs.lookup, dl, b"x", ROOT) == nfsstat3.NFS3ERR_NOTDIR
    assert status_of(fs.readdir, dl, 0, None, ROOT, 10) == nfsstat3.NFS3ERR_NOTDIR
    up = fs.lookup(fs.root_fh, b"up", ROOT)[0]
    assert status_of(fs.mkdir, up, b"escape", ROOT, SetAttr()) == nfsstat3.NFS3ERR_NOTDIR
    for how in (GUARDED, UNCHECKED):
        assert status_of(fs.create, fs.root_fh, b"ln", ROOT, how, SetAttr()) == \
            nfsstat3.NFS3ERR_EXIST
    fs.setattr(fh, ROOT, SetAttr(mode=0o600, mtime=5 * 10**9))  # mode ignored, times on the link
    assert os.lstat(env.root / "ln").st_mtime_ns == 5 * 10**9
    assert secret.stat().st_mtime_ns != 5 * 10**9
    fs.remove(fs.root_fh, b"ln", ROOT)
    assert secret.read_bytes() == b"outside"
    assert not os.path.lexists(env.root / "escape") and not os.path.lexists(tmp_path / "escape")
    assert os.listdir(tmp_path / "outdir") == []


def test_hard_link_to_a_symlink_links_the_symlink(env):
    fs = env.fs
    fh = fs.symlink(fs.root_fh, b"ln", ROOT, b"target", SetAttr())[0]
    attr, _ = fs.link(fh, fs.root_fh, b"ln2", ROOT)
    assert attr.nlink == 2 and os.readlink(env.root / "ln2") == "target"


def test_names(env):
    fs = env.fs
    r = fs.root_fh
    assert status_of(fs.create, r, b"a/b", ROOT, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.create, r, b"a\0b", ROOT, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.create, r, b"", ROOT, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.create, r, b".", ROOT, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_EXIST
    assert status_of(fs.mkdir, r, b"..", ROOT, SetAttr()) == nfsstat3.NFS3ERR_EXIST
    assert status_of(fs.create, r, b"n" * 256, ROOT, UNCHECKED, SetAttr()) == \
        nfsstat3.NFS3ERR_NAMETOOLONG
    assert status_of(fs.lookup, r, b"n" * 256, ROOT) == nfsstat3.NFS3ERR_NAMETOOLONG
    assert status_of(fs.lookup, r, b"missing", ROOT) == nfsstat3.NFS3ERR_NOENT
    env.create(b"n" * 255)
    assert os.listdir(env.root) == ["n" * 255]


# --- creation -----------------------------------------------------------------------


def test_exclusive_create_retransmission(env):
    fs = env.fs
    fh, attr, _ = fs.create(fs.root_fh, b"x", ROOT, EXCLUSIVE, SetAttr(), verf=b"12345678")
    fh2, attr2, _ = fs.create(fs.root_fh, b"x", ROOT, EXCLUSIVE, SetAttr(), verf=b"12345678")
    assert fh2 == fh and attr2.fileid == attr.fileid
    assert status_of(fs.create, fs.root_fh, b"x", ROOT, EXCLUSIVE, SetAttr(),
                     verf=b"87654321") == nfsstat3.NFS3ERR_EXIST
    fs.setattr(fh, ROOT, SetAttr(mode=0o640))
    assert metarecord.of_path(env.root / "x").create_verf is None
    assert status_of(fs.create, fs.root_fh, b"x", ROOT, EXCLUSIVE, SetAttr(),
                     verf=b"12345678") == nfsstat3.NFS3ERR_EXIST


@pytest.mark.parametrize("who", ("root", "owner", "other"))
def test_a_file_removed_by_someone_else_as_soon_as_it_is_made_is_still_answered_as_made(
        env, monkeypatch, who):
    # Another process (a worker, a program on the server) removes the name
    # between its link and nfspd's stat of the new file: the CREATE
    # happened, and is answered so, not STALE; its handle is stale from then
    # on, and the directory's listing does not show the name.
    fs = env.fs
    caller = {"root": ROOT, "owner": ALICE, "other": BOB}[who]
    os.chown(env.root, ALICE.uid, ALICE.gid)
    os.chmod(env.root, 0o777)
    d = fs.root_fh
    env.create(b"kept")
    assert sorted(e.name for e in fs.readdir(d, 0, None, ROOT, 100)[0]) == \
        [b".", b"..", b"kept"]
    real_link = metafiles.link_fd

    def link_then_removed(fd, dir_fd, name):
        real_link(fd, dir_fd, name)
        os.unlink(name, dir_fd=dir_fd)
    monkeypatch.setattr(metafiles, "link_fd", link_then_removed)
    fh, attr, wcc = fs.create(d, b"brief", caller, GUARDED, SetAttr(mode=0o644))
    monkeypatch.undo()
    assert attr.nlink == 0 and attr.uid == caller.uid
    assert wcc.post is not None
    assert status_of(fs.getattr, fh) == nfsstat3.NFS3ERR_STALE
    assert sorted(e.name for e in fs.readdir(d, 0, None, ROOT, 100)[0]) == \
        [b".", b"..", b"kept"]
    assert os.listdir(env.root) == ["kept"]


def test_a_directory_removed_by_someone_else_as_soon_as_it_is_made_is_still_answered_as_made(
        env, monkeypatch):
    fs = env.fs
    d = fs.root_fh
    real = metafs_module.stat_pinned

    def removed_first(pin):
        os.rmdir(env.root / "brief")
        return real(pin)
    monkeypatch.setattr(metafs_module, "stat_pinned", removed_first)
    fh, attr, _ = fs.mkdir(d, b"brief", ROOT, SetAttr(mode=0o755))
    monkeypatch.undo()
    assert attr.nlink == 0 and attr.type == FileType.DIR
    assert status_of(fs.getattr, fh) == nfsstat3.NFS3ERR_STALE
    assert os.listdir(env.root) == []


def test_guarded_and_unchecked_create_of_an_existing_file(env):
    fs = env.fs
    fh = env.create(b"f")

    async def fill():
        await fs.write(fh, ROOT, 0, b"data", 2)
    run(fill)
    assert status_of(fs.create, fs.root_fh, b"f", ROOT, GUARDED, SetAttr()) == \
        nfsstat3.NFS3ERR_EXIST
    fh2, attr, _ = fs.create(fs.root_fh, b"f", ROOT, UNCHECKED, SetAttr(mode=0o600))
    assert fh2 == fh and attr.size == 4 and attr.mode == 0o644  # untouched
    fh3, attr, _ = fs.create(fs.root_fh, b"f", ROOT, UNCHECKED, SetAttr(size=0))
    assert fh3 == fh and attr.size == 0


def test_create_sets_the_exact_mode_and_other_attributes(env):
    fs = env.fs
    fh, attr, wcc = fs.create(fs.root_fh, b"f", ROOT, UNCHECKED,
                              SetAttr(mode=0o4777, uid=7, gid=8, mtime=10**9))
    st = os.stat(env.root / "f")
    assert stat.S_IMODE(st.st_mode) == 0o4777 and (st.st_uid, st.st_gid) == (7, 8)
    assert st.st_mtime_ns == 10**9 and attr.mtime_ns == 10**9
    assert wcc.pre is not None and wcc.post.mtime_ns >= wcc.pre.mtime_ns
    d, dattr, _ = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr(mode=0o777))
    assert dattr.mode == 0o777
    p, pattr, _ = fs.mknod(fs.root_fh, b"p", ROOT, FileType.FIFO, SetAttr(mode=0o620))
    assert pattr.type == FileType.FIFO and pattr.mode == 0o620
    c, cattr, _ = fs.mknod(fs.root_fh, b"c", ROOT, FileType.CHR, SetAttr(mode=0o600), rdev=(1, 3))
    assert (cattr.rdev_major, cattr.rdev_minor) == (1, 3)
    b, battr, _ = fs.mknod(fs.root_fh, b"b", ROOT, FileType.BLK, SetAttr(),
                           rdev=((1 << 12) - 1, (1 << 20) - 1))
    assert (battr.rdev_major, battr.rdev_minor) == ((1 << 12) - 1, (1 << 20) - 1)
    for rdev in ((1 << 12, 0), (0, 1 << 20), (1 << 31, 1), (7, 0xFFFFFFFF)):
        assert status_of(fs.mknod, fs.root_fh, b"x", ROOT, FileType.CHR, SetAttr(),
                         rdev=rdev) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.mknod, fs.root_fh, b"r", ROOT, FileType.REG, SetAttr()) == \
        nfsstat3.NFS3ERR_BADTYPE


def test_a_created_metafile_is_never_seen_half_made(env):
    # O_TMPFILE + link: the name appears with its content.
    fh = env.create(b"f")
    assert metarecord.of_path(env.root / "f").size == 0
    assert env.fs.getattr(fh).size == 0


# --- removal and purge -----------------------------------------------------------------


def seed_of(path):
    return metarecord.of_path(path).seed


def test_removing_the_last_link_purges(env):
    fs = env.fs
    fh = env.written(env.create(b"f"))
    ino, seed = os.stat(env.root / "f").st_ino, seed_of(env.root / "f")
    fs.link(fh, fs.root_fh, b"g", ROOT)
    fs.remove(fs.root_fh, b"f", ROOT)
    assert env.purged == []
    assert fs.getattr(fh).nlink == 1
    fs.remove(fs.root_fh, b"g", ROOT)
    assert env.purged == [(ino, seed)]


def test_removing_a_file_no_handle_reached_since_the_start_purges_it_too(env):
    env.written(env.create(b"f"))
    env.create(b"keep")
    ino, seed = os.stat(env.root / "f").st_ino, seed_of(env.root / "f")
    os.link(env.root / "keep", env.root / "k2")
    env.fs.close()
    env.fs = fs = env.make()             # nothing cached: the name is opened
    fs.remove(fs.root_fh, b"f", ROOT)
    fs.remove(fs.root_fh, b"k2", ROOT)   # a link left: no purge
    assert env.purged == [(ino, seed)] and os.listdir(env.root) == ["keep"]


def test_rename_over_a_file_purges_it(env):
    fs = env.fs
    env.create(b"a")
    env.written(env.create(b"b"))
    ino, seed = os.stat(env.root / "b").st_ino, seed_of(env.root / "b")
    fs.rename(fs.root_fh, b"a", fs.root_fh, b"b", ROOT)
    assert env.purged == [(ino, seed)]
    assert os.listdir(env.root) == ["b"]
    # Rename onto another link of the same file changes nothing, purges nothing.
    fs.link(fs.lookup(fs.root_fh, b"b", ROOT)[0], fs.root_fh, b"c", ROOT)
    fs.rename(fs.root_fh, b"b", fs.root_fh, b"c", ROOT)
    assert len(env.purged) == 1


def test_a_renames_wcc_data_are_each_directorys_attributes_before_and_after(env):
    # RFC 1813 RENAME3resok: fromdir_wcc and todir_wcc. Within one directory
    # both are that directory's, had once (metafs.rename).
    fs = env.fs
    sub = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())[0]
    env.create(b"a")
    env.create(b"b")

    def seen(path):
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns), st.st_ino

    def pre(w):
        return (w.pre.size, w.pre.mtime_ns, w.pre.ctime_ns)

    def post(w):
        return (w.post.size, w.post.mtime_ns, w.post.ctime_ns), w.post.fileid
    for to_fh, to_path, name, new in ((fs.root_fh, env.root, b"a", b"a2"),
                                      (sub, env.root / "d", b"b", b"b2")):
        time.sleep(0.01)  # (the times to see move on)
        before = seen(env.root), seen(to_path)
        wf, wt = fs.rename(fs.root_fh, name, to_fh, new, ROOT)
        after = seen(env.root), seen(to_path)
        assert (pre(wf), pre(wt)) == (before[0][0], before[1][0])
        assert (post(wf), post(wt)) == after
        assert after[0][0][1] > before[0][0][1]   # a change each wcc shows


def test_a_rename_that_may_not_replace_leaves_everything_as_it_was(env):
    # What a namespace worker runs (nfspd/workers.py): what it cannot do
    # alone, nfspd does.
    fs = env.fs
    env.create(b"a")
    env.create(b"b")
    sub = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())[0]
    fs.mkdir(sub, b"e", ROOT, SetAttr())
    fs.mkdir(fs.root_fh, b"f", ROOT, SetAttr())
    with pytest.raises(TargetExists):
        fs.rename(fs.root_fh, b"a", fs.root_fh, b"b", ROOT, replace=False)
    with pytest.raises(TargetExists):  # an empty directory, which rename(2) replaces
        fs.rename(sub, b"e", fs.root_fh, b"f", ROOT, replace=False)
    with pytest.raises(TargetExists):  # into itself: EINVAL, nfspd's to answer
        fs.rename(fs.root_fh, b"d", sub, b"x", ROOT, replace=False)
    assert sorted(os.listdir(env.root)) == ["a", "b", "d", "f"]
    assert os.listdir(env.root / "d") == ["e"]
    assert env.purged == []
    fs.rename(fs.root_fh, b"a", sub, b"moved", ROOT, replace=False)
    assert sorted(os.listdir(env.root / "d")) == ["e", "moved"]


def test_rename_over_a_file_with_another_link_purges_nothing_handle_cached_or_not(env):
    fs = env.fs
    for name in (b"a", b"b", b"x", b"y"):
        env.create(name)
    fs.link(fs.lookup(fs.root_fh, b"b", ROOT)[0], fs.root_fh, b"b2", ROOT)
    fs.rename(fs.root_fh, b"a", fs.root_fh, b"b", ROOT)      # b's handle is cached
    os.link(env.root / "y", env.root / "y2")
    env.fs.close()
    env.fs = fs = env.make()                                  # y's is not
    fs.rename(fs.root_fh, b"x", fs.root_fh, b"y", ROOT)
    assert env.purged == []
    assert sorted(os.listdir(env.root)) == ["b", "b2", "y", "y2"]


def test_a_held_file_outlives_its_last_link_until_released(env):
    fs = env.fs
    fh = env.create(b"f")
    ino, seed = os.stat(env.root / "f").st_ino, seed_of(env.root / "f")
    run(fs.write, fh, ROOT, 0, b"kept", 2)
    assert fs.hold(fh)
    fs.remove(fs.root_fh, b"f", ROOT)
    assert env.purged == [] and os.listdir(env.root) == []
    # Still there by handle: read, written, its attributes (no links left).
    assert run(fs.read, fh, ROOT, 0, 10)[0] == b"kept"
    run(fs.write, fh, ROOT, 4, b"!", 2)
    assert fs.getattr(fh).nlink == 0 and fs.getattr(fh).size == 5
    fs.release(fh)
    assert env.purged == [(ino, seed)]
    assert status_of(fs.getattr, fh) == nfsstat3.NFS3ERR_STALE
    # A held file that keeps a link is released without a purge.
    g = env.create(b"g")
    assert fs.hold(g)
    fs.release(g)
    assert len(env.purged) == 1 and fs.getattr(g).nlink == 1


def test_a_held_file_is_purged_on_release_if_written_after_its_last_link_went(env):
    fs = env.fs
    fh = env.create(b"f")
    assert fs.hold(fh)
    fs.remove(fs.root_fh, b"f", ROOT)
    run(fs.write, fh, ROOT, 0, b"late", 0)
    fs.release(fh)
    assert len(env.purged) == 1
    # Never written, held or not: nothing anywhere to purge.
    g = env.create(b"g")
    assert fs.hold(g)
    fs.remove(fs.root_fh, b"g", ROOT)
    fs.release(g)
    assert len(env.purged) == 1


def test_purged_data_is_gone_from_the_local_store(env):
    fs = env.fs
    fh = env.create(b"f")

    async def fill():
        await fs.write(fh, ROOT, 0, b"data", 2)
    run(fill)
    env.fs.close()
    env.fs = MetaFS(str(env.root), 42, KEY, env.dp)  # default purge: the data path
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    env.dp.wait_purged()
    assert list(env.dp.store.list()) == []


def test_rename_and_rmdir_errors(env):
    fs = env.fs
    d = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())[0]
    env.create(b"f", d=d)
    assert status_of(fs.rmdir, fs.root_fh, b"d", ROOT) == nfsstat3.NFS3ERR_NOTEMPTY
    assert status_of(fs.rename, fs.root_fh, b"d", d, b"x", ROOT) == nfsstat3.NFS3ERR_INVAL
    assert status_of(fs.remove, fs.root_fh, b"d", ROOT) == nfsstat3.NFS3ERR_ISDIR
    assert status_of(fs.rmdir, d, b"f", ROOT) == nfsstat3.NFS3ERR_NOTDIR
    wf, wt = fs.rename(d, b"f", fs.root_fh, b"g", ROOT)
    assert wf.post.fileid != wt.post.fileid
    assert os.listdir(env.root / "d") == [] and (env.root / "g").exists()


# --- permissions ------------------------------------------------------------------------


@pytest.fixture
def shared(env):
    """A root-owned 0755 export with a sticky 1777 directory and a setgid directory."""
    os.chmod(env.root, 0o755)
    tmp = env.root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    proj = env.root / "proj"
    proj.mkdir()
    os.chown(proj, 0, 500)
    os.chmod(proj, 0o2775)
    return env, env.fs.lookup(env.fs.root_fh, b"tmp", ROOT)[0], \
        env.fs.lookup(env.fs.root_fh, b"proj", ROOT)[0]


def test_new_objects_belong_to_the_caller(shared):
    env, tmp, proj = shared
    fs = env.fs
    _, attr, _ = fs.create(tmp, b"a", ALICE, UNCHECKED, SetAttr(mode=0o600))
    assert (attr.uid, attr.gid) == (1001, 1001)
    st = os.stat(env.root / "tmp" / "a")
    assert (st.st_uid, st.st_gid) == (1001, 1001)
    # A setgid directory hands down its group (BOB is in group 500).
    _, attr, _ = fs.create(proj, b"b", BOB, UNCHECKED, SetAttr(mode=0o664))
    assert attr.gid == 500
    _, dattr, _ = fs.mkdir(proj, b"sub", BOB, SetAttr(mode=0o775))
    assert dattr.gid == 500 and dattr.mode & stat.S_ISGID


def test_creating_without_write_permission_is_refused_and_changes_nothing(shared):
    env, tmp, proj = shared
    fs = env.fs
    before = snapshot(env.root)
    r = fs.root_fh
    assert status_of(fs.create, r, b"x", ALICE, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.mkdir, r, b"x", ALICE, SetAttr()) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.symlink, r, b"x", ALICE, b"t", SetAttr()) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.mknod, r, b"x", ALICE, FileType.FIFO, SetAttr()) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.create, proj, b"x", ALICE, UNCHECKED, SetAttr()) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.rename, r, b"tmp", r, b"x", ALICE) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.rmdir, r, b"tmp", ALICE) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.mknod, tmp, b"dev", ALICE, FileType.CHR, SetAttr(), rdev=(1, 3)) == \
        nfsstat3.NFS3ERR_PERM
    assert snapshot(env.root) == before


def test_sticky_directory_and_ownership_rules(shared):
    env, tmp, proj = shared
    fs = env.fs
    fh, _, _ = fs.create(tmp, b"alices", ALICE, UNCHECKED, SetAttr(mode=0o666))
    env.written(fh, ALICE)
    before = snapshot(env.root)
    assert status_of(fs.remove, tmp, b"alices", BOB) == nfsstat3.NFS3ERR_PERM
    assert status_of(fs.rename, tmp, b"alices", tmp, b"bobs", BOB) == nfsstat3.NFS3ERR_PERM
    assert status_of(fs.setattr, fh, BOB, SetAttr(mode=0o777)) == nfsstat3.NFS3ERR_PERM
    assert status_of(fs.setattr, fh, ALICE, SetAttr(uid=1002)) == nfsstat3.NFS3ERR_PERM
    assert status_of(fs.setattr, fh, BOB, SetAttr(mtime=10**9)) == nfsstat3.NFS3ERR_PERM
    assert snapshot(env.root) == before
    assert env.purged == []
    # What the rules allow: BOB may set the times to now (he may write),
    # ALICE may chmod and give the file to a group she is in.
    fs.setattr(fh, BOB, SetAttr(atime=SET_TO_SERVER_TIME, mtime=SET_TO_SERVER_TIME))
    fs.setattr(fh, ALICE, SetAttr(mode=0o640, gid=1001))
    fs.remove(tmp, b"alices", ALICE)
    assert env.purged and not (env.root / "tmp" / "alices").exists()


def test_read_write_permissions(shared):
    env, tmp, proj = shared
    fs = env.fs
    fh, _, _ = fs.create(tmp, b"private", ALICE, UNCHECKED, SetAttr(mode=0o600))
    ro, _, _ = fs.create(tmp, b"readonly", ALICE, UNCHECKED, SetAttr(mode=0o444))

    async def main():
        await fs.write(fh, ALICE, 0, b"mine", 2)
        with pytest.raises(FsError) as e:
            await fs.read(fh, BOB, 0, 4)
        assert e.value.status == nfsstat3.NFS3ERR_ACCES
        with pytest.raises(FsError) as e:
            await fs.write(fh, BOB, 0, b"evil", 2)
        assert e.value.status == nfsstat3.NFS3ERR_ACCES
        # The owner writes to her 0444 file (cp -p, tar), others do not.
        await fs.write(ro, ALICE, 0, b"ok", 2)
        with pytest.raises(FsError) as e:
            await fs.write(ro, BOB, 0, b"no", 2)
        assert e.value.status == nfsstat3.NFS3ERR_ACCES
        assert (await fs.read(ro, BOB, 0, 10))[0] == b"ok"
        assert (await fs.read(fh, ALICE, 0, 10))[0] == b"mine"
        with pytest.raises(FsError) as e:
            await fs.write(fh, Caller(1001, 1001, readonly=True), 0, b"x", 2)
        assert e.value.status == nfsstat3.NFS3ERR_ROFS
    run(main)
    assert status_of(fs.setattr, fh, BOB, SetAttr(size=0)) == nfsstat3.NFS3ERR_ACCES
    assert fs.getattr(fh).size == 4
    assert fs.access(fh, BOB, ACCESS3_ALL)[0] == 0
    assert fs.access(tmp, BOB, ACCESS3_READ | ACCESS3_LOOKUP)[0] == ACCESS3_READ | ACCESS3_LOOKUP


def test_writes_by_others_clear_setuid(shared):
    env, tmp, proj = shared
    fs = env.fs
    fh, _, _ = fs.create(tmp, b"s", ALICE, UNCHECKED, SetAttr(mode=0o4777))

    async def main():
        await fs.write(fh, BOB, 0, b"x", 2)
    run(main)
    assert fs.getattr(fh).mode == 0o777


def test_search_permission_is_needed_to_look_up(shared):
    env, tmp, proj = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"closed", ALICE, SetAttr(mode=0o700))[0]
    env.create(b"inner", caller=ALICE, d=d)
    assert status_of(fs.lookup, d, b"inner", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.lookup, d, b"..", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.readdir, d, 0, None, BOB, 10) == nfsstat3.NFS3ERR_ACCES
    assert fs.lookup(d, b"inner", ALICE)[1].uid == 1001


def _acl_denying(uid):
    """A system.posix_acl_access value: the mode's 0755, but nothing for uid."""
    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 0, uid), (0x04, 5, 0xFFFFFFFF),
               (0x10, 5, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF)]  # USER_OBJ USER GROUP_OBJ MASK OTHER
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _refuse_by_acl(path, uid):
    """Give ``path`` an ACL that refuses ``uid`` everything (its mode's bits
    otherwise); skip where the file system keeps no POSIX ACLs."""
    try:
        os.setxattr(path, "system.posix_acl_access", _acl_denying(uid))
    except OSError as e:
        pytest.skip(f"no POSIX ACLs here: {e}")


def test_an_acl_refusing_the_search_is_honoured_though_the_mode_allows_it(shared):
    # Lookups in a directory everyone may search skip the switch to the
    # caller's credentials; an ACL must still be able to refuse one user.
    env, tmp, proj = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"open", ALICE, SetAttr(mode=0o755))[0]
    env.create(b"inner", caller=ALICE, d=d)
    path = env.root / "tmp" / "open"
    assert fs.lookup(d, b"inner", BOB)[1].uid == 1001
    _refuse_by_acl(path, BOB.uid)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert status_of(fs.lookup, d, b"inner", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.lookup, d, b"nothing", BOB) == nfsstat3.NFS3ERR_ACCES
    assert fs.lookup(d, b"inner", ALICE)[1].uid == 1001
    assert fs.lookup(d, b"inner", Caller(1003, 1003))[1].uid == 1001
    os.removexattr(path, "system.posix_acl_access")
    assert fs.lookup(d, b"inner", BOB)[1].uid == 1001
    os.chmod(path, 0o750)
    assert status_of(fs.lookup, d, b"inner", BOB) == nfsstat3.NFS3ERR_ACCES


class _CountedSwitches:
    """nfspd.fs.metafs's and objects' as_caller, counting the switches they
    make (a root caller's are none)."""

    made = 0

    def __init__(self, uid, gid, gids=()):
        self.inner = as_caller(uid, gid, gids)
        if uid or gid:
            _CountedSwitches.made += 1

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def _switches(monkeypatch, fn, *args):
    monkeypatch.setattr(metafs_module, "as_caller", _CountedSwitches)
    monkeypatch.setattr(objects_module, "as_caller", _CountedSwitches)
    _CountedSwitches.made = 0
    fn(*args)
    monkeypatch.undo()
    return _CountedSwitches.made


def test_an_ordinary_users_remove_and_rename_switch_credentials_once(shared, monkeypatch):
    # The names are looked up as root, and only the change itself is made as
    # the caller (a switch is four to six system calls), which the kernel
    # refuses to whoever may not search the directory or write to it.
    env, tmp, _ = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"open", ALICE, SetAttr(mode=0o775))[0]
    os.chown(env.root / "tmp" / "open", 1001, 500)  # BOB's group may write
    for name in (b"a", b"b", b"c"):
        env.create(name, caller=ALICE, d=d)
    assert _switches(monkeypatch, fs.remove, d, b"a", BOB) == 1
    assert _switches(monkeypatch, fs.rename, d, b"b", d, b"b2", BOB) == 1
    assert _switches(monkeypatch, fs.rename, d, b"b2", d, b"c", BOB) >= 1  # (c replaced)
    assert os.listdir(env.root / "tmp" / "open") == ["c"]
    # Also where not every caller may search, and what they may not do
    # they are refused.
    private = fs.mkdir(tmp, b"private", ALICE, SetAttr(mode=0o770))[0]
    os.chown(env.root / "tmp" / "private", 1001, 500)
    env.create(b"p", caller=ALICE, d=private)
    env.create(b"q", caller=ALICE, d=private)
    assert _switches(monkeypatch, fs.remove, private, b"p", BOB) == 1
    os.chmod(env.root / "tmp" / "private", 0o700)
    assert status_of(fs.remove, private, b"q", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.rename, private, b"q", private, b"r", BOB) == nfsstat3.NFS3ERR_ACCES
    # Where all may search but only the owner may write: refused by the change.
    os.chmod(env.root / "tmp" / "open", 0o755)
    assert status_of(fs.remove, d, b"c", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.rename, d, b"c", d, b"d", BOB) == nfsstat3.NFS3ERR_ACCES


def test_the_owner_of_a_directory_removes_and_renames_in_it_without_a_switch(shared,
                                                                               monkeypatch):
    # Where the kernel answers the directory's owner as it answers root
    # (write and search permission by the owner bits), no switch is made.
    env, tmp, _ = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"mine", ALICE, SetAttr(mode=0o755))[0]
    other = fs.mkdir(tmp, b"other", ALICE, SetAttr(mode=0o700))[0]
    for name in (b"a", b"b", b"c", b"e"):
        env.create(name, caller=ALICE, d=d)
    fs.mkdir(d, b"sub", ALICE, SetAttr(mode=0o755))
    assert _switches(monkeypatch, fs.remove, d, b"a", ALICE) == 0
    assert _switches(monkeypatch, fs.rename, d, b"b", d, b"b2", ALICE) == 0
    assert _switches(monkeypatch, fs.rename, d, b"b2", d, b"c", ALICE) == 0  # (c replaced)
    assert _switches(monkeypatch, fs.rename, d, b"e", other, b"e", ALICE) == 0
    assert _switches(monkeypatch, fs.rmdir, d, b"sub", ALICE) == 0
    assert os.listdir(env.root / "tmp" / "mine") == ["c"]
    assert os.listdir(env.root / "tmp" / "other") == ["e"]
    # A directory moved to another parent: the kernel asks for write
    # permission on it too, so the caller makes that change.
    fs.mkdir(d, b"moved", ALICE, SetAttr(mode=0o755))
    assert _switches(monkeypatch, fs.rename, d, b"moved", other, b"moved", ALICE) == 1
    # A file no handle reached since the start (pinned by name, not found
    # in the handle cache): in her private directory, no switch either.
    env.create(b"old", caller=ALICE, d=other)
    restarted = env.make()
    try:
        other_again = restarted.lookup(restarted.lookup(restarted.root_fh, b"tmp", ROOT)[0],
                                       b"other", ROOT)[0]
        assert _switches(monkeypatch, restarted.remove, other_again, b"old", ALICE) == 0
    finally:
        restarted.close()
    assert sorted(os.listdir(env.root / "tmp" / "other")) == ["e", "moved"]


# A directory's mode, its owner (A: ALICE, who acts), and whose entry she
# removes or renames in it (A or B: BOB's).
_KERNEL_CASES = [(mode, entry_owner) for mode in (0o755, 0o700, 0o300, 0o1755, 0o1777, 0o555,
                                                   0o655, 0o355, 0o077, 0o2770)
                 for entry_owner in ("A", "B")]


@pytest.mark.parametrize("mode,entry_owner", _KERNEL_CASES)
def test_a_removal_or_rename_gets_the_answer_the_kernel_gives_the_caller(shared, mode,
                                                                          entry_owner):
    # Each change is made twice: through MetaFS, and by the kernel directly
    # for ALICE on a twin of the same directories, and the two must agree
    # (the twin's errno as NFS says it; None: done).
    env, tmp, _ = shared
    fs = env.fs
    owner = {"A": ALICE, "B": BOB}[entry_owner]
    nfs_errors = {errno.EACCES: nfsstat3.NFS3ERR_ACCES, errno.EPERM: nfsstat3.NFS3ERR_PERM}
    for op in ("remove", "rmdir", "rename", "move", "move_dir"):
        handles = {}
        for twin in ("nfs", "kernel"):
            base = fs.mkdir(tmp, f"{op}-{twin}".encode(), ROOT, SetAttr(mode=0o755))[0]
            for sub in (b"d", b"away"):
                handles[twin, sub] = fs.mkdir(base, sub, ROOT, SetAttr(mode=0o755))[0]
                fs.mkdir(handles[twin, sub], b"keep", ROOT, SetAttr(mode=0o755))
            if op in ("rmdir", "move_dir"):
                fs.mkdir(handles[twin, b"d"], b"victim", ROOT, SetAttr(mode=0o755))
            else:
                env.create(b"victim", caller=ROOT, d=handles[twin, b"d"])
            path = env.root / "tmp" / f"{op}-{twin}"
            os.chown(path / "d" / "victim", owner.uid, owner.gid)
            for sub in ("d", "away"):
                os.chown(path / sub, ALICE.uid, ALICE.gid)
                os.chmod(path / sub, mode)
        kernel = env.root / "tmp" / f"{op}-kernel"
        d = os.open(kernel / "d", os.O_PATH)
        away = os.open(kernel / "away", os.O_PATH)
        try:
            with as_caller(ALICE.uid, ALICE.gid, ALICE.gids):
                if op == "remove":
                    os.unlink("victim", dir_fd=d)
                elif op == "rmdir":
                    os.rmdir("victim", dir_fd=d)
                elif op == "rename":
                    os.rename("victim", "renamed", src_dir_fd=d, dst_dir_fd=d)
                else:
                    os.rename("victim", "victim", src_dir_fd=d, dst_dir_fd=away)
            expected = None
        except OSError as e:
            expected = nfs_errors[e.errno]
        finally:
            os.close(d)
            os.close(away)
        d, away = handles["nfs", b"d"], handles["nfs", b"away"]
        fn, *args = {"remove": (fs.remove, d, b"victim", ALICE),
                     "rmdir": (fs.rmdir, d, b"victim", ALICE),
                     "rename": (fs.rename, d, b"victim", d, b"renamed", ALICE),
                     "move": (fs.rename, d, b"victim", away, b"victim", ALICE),
                     "move_dir": (fs.rename, d, b"victim", away, b"victim", ALICE)}[op]
        try:
            fn(*args)
            got = None
        except FsError as e:
            got = e.status
        assert got == expected, (op, oct(mode), entry_owner)
        # (What the twin showed: the owner bits decide, and moving someone
        # else's directory to another parent needs write permission on it.)
        refused_anyway = op == "move_dir" and owner is BOB
        assert (expected is None) == (mode & 0o300 == 0o300 and not refused_anyway), \
            (op, oct(mode), entry_owner, expected)
        nfs = env.root / "tmp" / f"{op}-nfs"
        for sub in ("d", "away"):
            assert sorted(os.listdir(nfs / sub)) == sorted(os.listdir(kernel / sub))


@pytest.mark.parametrize("dir_mode", (0o755, 0o2775, 0o1777, 0o555))
@pytest.mark.parametrize("dir_group", (1001, 500, 0))
@pytest.mark.parametrize("mode", (0o640, 0o4755, 0o2755))
def test_a_file_the_owner_of_a_directory_creates_is_what_the_kernel_makes_for_her(
        shared, dir_mode, dir_group, mode):
    # ALICE creates a file through MetaFS, and with the kernel directly on a
    # twin of the directory: the same answer, and the same owner, group and
    # mode (a setgid directory hands its group down; a chmod by someone
    # outside the file's group drops setgid).
    env, tmp, _ = shared
    fs = env.fs
    made = {}
    for twin in ("nfs", "kernel"):
        d = fs.mkdir(tmp, twin.encode(), ROOT, SetAttr(mode=0o755))[0]
        path = env.root / "tmp" / twin
        os.chown(path, ALICE.uid, dir_group)
        os.chmod(path, dir_mode)
        made[twin] = d, path
    d, path = made["kernel"]
    dfd = os.open(path, os.O_PATH)
    try:
        with as_caller(ALICE.uid, ALICE.gid, ALICE.gids):
            fd = os.open("new", os.O_CREAT | os.O_EXCL | os.O_RDWR, mode, dir_fd=dfd)
            os.fchmod(fd, mode)  # (past the umask, as MetaFS does)
            os.close(fd)
        expected = None
    except PermissionError:
        expected = nfsstat3.NFS3ERR_ACCES
    finally:
        os.close(dfd)
    d, nfs = made["nfs"]
    try:
        fs.create(d, b"new", ALICE, UNCHECKED, SetAttr(mode=mode))
        got = None
    except FsError as e:
        got = e.status
    assert got == expected
    assert (expected is None) == (dir_mode & 0o300 == 0o300)
    if expected is None:
        kernel, ours = os.lstat(path / "new"), os.lstat(nfs / "new")
        assert (ours.st_uid, ours.st_gid, stat.S_IMODE(ours.st_mode)) == \
            (kernel.st_uid, kernel.st_gid, stat.S_IMODE(kernel.st_mode))
        assert ours.st_gid == (dir_group if dir_mode & stat.S_ISGID else ALICE.gid)


def test_the_owner_of_a_directory_creates_a_file_in_it_without_a_switch(shared, monkeypatch):
    # Made as root and given to her before it has a name: no switch, except
    # for a setuid or setgid file, or in a directory of root's group.
    env, tmp, proj = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"mine", ALICE, SetAttr(mode=0o755))[0]
    root_group = fs.mkdir(tmp, b"root-group", ALICE, SetAttr(mode=0o755))[0]
    os.chown(env.root / "tmp" / "root-group", ALICE.uid, 0)
    assert _switches(monkeypatch, fs.create, d, b"a", ALICE, UNCHECKED,
                     SetAttr(mode=0o644)) == 0
    assert _switches(monkeypatch, fs.create, d, b"s", ALICE, UNCHECKED,
                     SetAttr(mode=0o4755)) == 1
    assert _switches(monkeypatch, fs.create, root_group, b"a", ALICE, UNCHECKED,
                     SetAttr(mode=0o644)) == 1
    st = os.lstat(env.root / "tmp" / "mine" / "a")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ALICE.uid, ALICE.gid, 0o644)
    # Root acting as itself needs neither a switch nor a chown.
    chowns = []
    monkeypatch.setattr(os, "fchown", lambda *a: chowns.append(a))
    env.create(b"roots", caller=ROOT, d=proj)  # (root's directory, of group 500)
    monkeypatch.undo()
    assert chowns == [] and os.lstat(env.root / "proj" / "roots").st_uid == 0
    # Not even for a moment under another name or owner: made before its name.
    assert sorted(os.listdir(env.root / "tmp" / "mine")) == ["a", "s"]
    # Without O_TMPFILE the name would exist as root's: made as her, then.
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, *args, **kw)
    monkeypatch.setattr(os, "open", no_tmpfile)
    assert _switches(monkeypatch, fs.create, d, b"b", ALICE, UNCHECKED,
                     SetAttr(mode=0o644)) == 1
    st = os.lstat(env.root / "tmp" / "mine" / "b")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ALICE.uid, ALICE.gid, 0o644)


@pytest.mark.parametrize("dir_mode", (0o700, 0o755, 0o100, 0o600, 0o070, 0o007))
def test_a_lookup_by_the_owner_of_a_directory_gets_the_kernels_answer_without_a_switch(
        shared, monkeypatch, dir_mode):
    # Her search permission is her owner bits, whatever the rest: where she
    # has x no switch is needed, and where she has not she is refused, as the
    # kernel refuses her (a twin looked up by the kernel, as her).
    env, tmp, _ = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"home", ALICE, SetAttr(mode=0o755))[0]
    fs.mkdir(d, b"sub", ALICE, SetAttr(mode=0o755))
    os.chmod(env.root / "tmp" / "home", dir_mode)
    dfd = os.open(env.root / "tmp" / "home", os.O_PATH)
    try:
        with as_caller(ALICE.uid, ALICE.gid, ALICE.gids):
            os.stat("sub", dir_fd=dfd, follow_symlinks=False)
        expected = None
    except PermissionError:
        expected = nfsstat3.NFS3ERR_ACCES
    finally:
        os.close(dfd)
    assert (expected is None) == bool(dir_mode & 0o100)
    if expected is None:
        assert _switches(monkeypatch, fs.lookup, d, b"sub", ALICE) == 0
        if dir_mode & 0o400:  # (listing it needs r)
            assert _switches(monkeypatch, fs.readdirplus, d, 0, None, ALICE, 100) == 0
    else:
        assert status_of(fs.lookup, d, b"sub", ALICE) == expected


def test_an_ordinary_users_mkdir_symlink_and_mknod_switch_credentials_once(shared, monkeypatch):
    # What is made is opened for its handle in the same switch that made it.
    env, tmp, _ = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"made", ALICE, SetAttr(mode=0o755))[0]
    assert _switches(monkeypatch, fs.mkdir, d, b"sub", ALICE, SetAttr(mode=0o755)) == 1
    assert _switches(monkeypatch, fs.symlink, d, b"link", ALICE, b"sub", SetAttr()) == 1
    assert _switches(monkeypatch, fs.mknod, d, b"fifo", ALICE, FileType.FIFO,
                     SetAttr(mode=0o644)) == 1
    made = env.root / "tmp" / "made"
    assert sorted(os.listdir(made)) == ["fifo", "link", "sub"]
    assert {os.lstat(made / n).st_uid for n in ("fifo", "link", "sub")} == {ALICE.uid}
    # Made where the caller may not: refused, and nothing opened.
    assert status_of(fs.mkdir, d, b"no", BOB, SetAttr(mode=0o755)) == nfsstat3.NFS3ERR_ACCES


def test_who_may_not_search_a_directory_learns_nothing_of_its_names_from_remove_or_rename(
        shared):
    # The names are looked up as root: what those lookups find must not show
    # through to a caller the kernel would refuse (a missing name, a directory).
    env, tmp, _ = shared
    fs = env.fs
    private = fs.mkdir(tmp, b"private", ALICE, SetAttr(mode=0o700))[0]
    fs.mkdir(private, b"sub", ALICE, SetAttr(mode=0o755))
    for name in (b"missing", b"sub"):
        assert status_of(fs.remove, private, name, BOB) == nfsstat3.NFS3ERR_ACCES
        assert status_of(fs.rename, private, name, private, b"r", BOB) == nfsstat3.NFS3ERR_ACCES
    # Its owner is told what is there.
    assert status_of(fs.remove, private, b"missing", ALICE) == nfsstat3.NFS3ERR_NOENT
    assert status_of(fs.remove, private, b"sub", ALICE) == nfsstat3.NFS3ERR_ISDIR
    assert status_of(fs.rename, private, b"missing", private, b"r", ALICE) == \
        nfsstat3.NFS3ERR_NOENT


def test_an_acl_refusing_the_search_refuses_remove_and_rename(shared):
    env, tmp, _ = shared
    fs = env.fs
    d = fs.mkdir(tmp, b"open", ALICE, SetAttr(mode=0o777))[0]
    env.create(b"inner", caller=ALICE, d=d)
    path = env.root / "tmp" / "open"
    _refuse_by_acl(path, BOB.uid)
    assert status_of(fs.remove, d, b"inner", BOB) == nfsstat3.NFS3ERR_ACCES
    assert status_of(fs.rename, d, b"inner", d, b"moved", BOB) == nfsstat3.NFS3ERR_ACCES
    os.removexattr(path, "system.posix_acl_access")
    os.chmod(path, 0o777)
    fs.rename(d, b"inner", d, b"moved", BOB)
    fs.remove(d, b"moved", BOB)
    assert os.listdir(path) == []


def test_readonly_caller_modifies_nothing(shared):
    env, tmp, proj = shared
    fs = env.fs
    ro = Caller(0, 0, readonly=True)
    fh = env.create(b"f", d=tmp)
    before = snapshot(env.root)
    for call in (lambda: fs.create(tmp, b"n", ro, UNCHECKED, SetAttr()),
                 lambda: fs.mkdir(tmp, b"n", ro, SetAttr()),
                 lambda: fs.symlink(tmp, b"n", ro, b"t", SetAttr()),
                 lambda: fs.mknod(tmp, b"n", ro, FileType.FIFO, SetAttr()),
                 lambda: fs.remove(tmp, b"f", ro),
                 lambda: fs.rmdir(fs.root_fh, b"proj", ro),
                 lambda: fs.rename(tmp, b"f", tmp, b"g", ro),
                 lambda: fs.link(fh, tmp, b"g", ro),
                 lambda: fs.setattr(fh, ro, SetAttr(mode=0)),
                 lambda: run(fs.write, fh, ro, 0, b"x", 2)):
        assert status_of(call) == nfsstat3.NFS3ERR_ROFS
    assert snapshot(env.root) == before
    assert fs.lookup(tmp, b"f", ro)[0] == fh


def test_guarded_setattr(env):
    fh = env.create(b"f")
    ctime = env.fs.getattr(fh).ctime_ns
    assert status_of(env.fs.setattr, fh, ROOT, SetAttr(mode=0o600), guard_ctime_ns=ctime + 1) == \
        nfsstat3.NFS3ERR_NOT_SYNC
    wcc = env.fs.setattr(fh, ROOT, SetAttr(mode=0o600), guard_ctime_ns=ctime)
    assert wcc.post.mode == 0o600 and wcc.pre.ctime_ns == ctime


# --- readdir ----------------------------------------------------------------------------


def list_all(fs, d, page, caller=ROOT, between=None, bits=64):
    seen, cookie, verf = [], 0, None
    while True:
        entries, eof, verf, _ = fs.readdir(d, cookie, verf, caller, page, cookie_bits=bits)
        seen.extend(entries)
        if eof:
            return seen
        assert entries, "no progress without eof"
        cookie = entries[-1].cookie
        if between:
            between()


def test_readdir_small(env):
    fs = env.fs
    env.create(b"a")
    fs.mkdir(fs.root_fh, b"b", ROOT, SetAttr())
    entries = list_all(fs, fs.root_fh, 1)
    assert [e.name for e in entries[:2]] == [b".", b".."]
    assert [e.cookie for e in entries[:2]] == [1, 2]
    assert sorted(e.name for e in entries[2:]) == [b"a", b"b"]
    assert all(e.cookie > 2 for e in entries[2:])
    by_name = {e.name: e.fileid for e in entries}
    assert by_name[b"a"] == os.stat(env.root / "a").st_ino


def test_readdir_cookie_verifier(env):
    fs = env.fs
    d = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())[0]
    for i in range(5):
        env.create(b"f%d" % i, d=d)
    entries, eof, verf, _ = fs.readdir(d, 0, None, ROOT, 3)
    assert not eof
    env.create(b"new", d=d)
    # A changed directory keeps its verifier: the client carries on.
    more, _, verf2, _ = fs.readdir(d, entries[-1].cookie, verf, ROOT, 100)
    assert verf2 == verf and more
    assert status_of(fs.readdir, d, entries[-1].cookie, b"forged!!", ROOT, 100) == \
        nfsstat3.NFS3ERR_BAD_COOKIE
    assert fs.readdir(d, 0, b"forged!!", ROOT, 100)[0]  # cookie 0 starts afresh
    # A restarted server accepts what it issued before.
    env.fs.close()
    env.fs = env.make()
    d2 = env.fs.lookup(env.fs.root_fh, b"d", ROOT)[0]
    assert env.fs.readdir(d2, entries[-1].cookie, verf, ROOT, 100)[2] == verf


def test_readdir_32_bit_cookies_with_colliding_hashes(env, monkeypatch):
    fs = env.fs
    names = [b"n%03d" % i for i in range(300)]
    for n in names:
        (env.root / n.decode()).write_bytes(b"")
    # Squeeze the hash into 5 bits: ~10 names per cookie value.
    real = fs._listings.cookie
    monkeypatch.setattr(fs._listings, "cookie", lambda name, bits: 3 + real(name, bits) % 32)
    for page in (1, 2, 7, 50):
        seen = list_all(fs, fs.root_fh, page, bits=32)
        got = [e.name for e in seen[2:]]
        assert sorted(got) == names and len(got) == len(set(got))
        assert all(e.cookie < 2**32 for e in seen)


def test_readdir_real_32_bit_cookies(env):
    for i in range(1000):
        (env.root / f"f{i}").write_bytes(b"")
    seen = list_all(env.fs, env.fs.root_fh, 100, bits=32)
    assert all(0 < e.cookie < 2**32 for e in seen)
    assert len({e.name for e in seen}) == len(seen) == 1002


def test_readdir_byte_budget_cuts_between_entries(env):
    for i in range(20):
        env.create(b"file%02d" % i)
    entries, eof, _, _ = env.fs.readdir(env.fs.root_fh, 0, None, ROOT, 1000,
                                        budget=100, entry_size=lambda n: 24 + len(n))
    assert not eof and sum(24 + len(e.name) for e in entries) <= 100
    assert status_of(env.fs.readdir, env.fs.root_fh, 0, None, ROOT, 1000, budget=10,
                     entry_size=lambda n: 24 + len(n)) == nfsstat3.NFS3ERR_TOOSMALL


def test_readdir_of_100000_entries_with_changes_between_pages(tmp_path):
    env = Env(tmp_path, sync=False)
    fs = env.fs
    big = env.root / "big"
    big.mkdir()
    n = 100_000
    names = [f"e{i:06d}" for i in range(n)]
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)
    d = fs.lookup(fs.root_fh, b"big", ROOT)[0]
    rng = random.Random(7)
    alive = set(names)
    removed, added = set(), set()
    counter = [0]

    def change():
        # Through MetaFS and behind its back, both adding and removing.
        counter[0] += 1
        for _ in range(5):
            victim = rng.choice(names)
            if victim in alive:
                if counter[0] % 5:
                    fs.remove(d, victim.encode(), ROOT)
                else:
                    os.unlink(big / victim)
                alive.discard(victim)
                removed.add(victim)
        for _ in range(3):
            new = f"new{counter[0]}_{_}"
            if counter[0] % 7:
                env.create(new.encode(), d=d)
            else:
                (big / new).write_bytes(b"")
            added.add(new)

    seen = list_all(fs, d, 997, between=change)
    got = [e.name.decode() for e in seen if e.name not in (b".", b"..")]
    assert len(got) == len(set(got)), "an entry was listed twice"
    gotset = set(got)
    survivors = alive - added
    missing = survivors - gotset
    assert not missing, f"{len(missing)} surviving entries were skipped"
    assert gotset <= set(names) | added
    assert counter[0] >= 100


# --- misc -------------------------------------------------------------------------------


def test_fsstat(env):
    s = env.fs.fsstat(env.fs.root_fh)
    assert s.tbytes >= s.fbytes >= 0 and s.tfiles >= s.ffiles >= 0


def test_access_reports_attributes(env):
    fh = env.create(b"f", mode=0o600)
    granted, attr = env.fs.access(fh, ALICE, ACCESS3_ALL)
    assert granted == 0 and attr.mode == 0o600


# --- credentials and the local data path ----------------------------------------------


def test_caller_credentials_apply_to_this_thread_only_and_are_always_restored(tmp_path):
    import threading
    from nfspd.fs import creds
    os.chmod(tmp_path, 0o777)
    dfd = os.open(tmp_path, os.O_RDONLY)  # the parents of tmp_path are root's 0700
    other_thread = []
    go, done = threading.Event(), threading.Event()

    def other():
        go.wait()
        other_thread.append(creds.current())
        done.set()

    # Started before the switch: a thread started inside would inherit it.
    t = threading.Thread(target=other)
    t.start()
    with pytest.raises(RuntimeError):
        with creds.as_caller(1234, 4321, (77,)):
            assert creds.current() == (1234, 4321)
            os.close(os.open("made", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=dfd))
            go.set()
            done.wait()
            raise RuntimeError("boom")
    t.join()
    assert creds.current() == (0, 0)
    assert other_thread == [(0, 0)]
    st = os.stat(tmp_path / "made")
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert 77 not in os.getgroups()
    os.close(dfd)


def test_ids_with_the_high_bit_set_work_and_minus_one_is_refused():
    # A switch to such an id once aborted the daemon on the way back (a
    # signed/unsigned mix-up), so it runs in a process of its own.
    code = ("from nfspd.fs import creds\n"
            "with creds.as_caller(0x80000000, 0xFA0003E8, (0xFFFFFFF0,)):\n"
            "    assert creds.current() == (0x80000000, 0xFA0003E8), creds.current()\n"
            "assert creds.current() == (0, 0)\n"
            "for ids in ((0xFFFFFFFF, 5), (5, 0xFFFFFFFF)):\n"
            "    try:\n"
            "        with creds.as_caller(*ids):\n"
            "            raise AssertionError('acted as -1')\n"
            "    except PermissionError:\n"
            "        pass\n"
            "assert creds.current() == (0, 0)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def group_only(tmp_path):
    """A directory fd holding "g", a file only group 77 may read (0040)."""
    secret = tmp_path / "g"
    secret.write_bytes(b"x")
    os.chown(secret, 0, 77)
    os.chmod(secret, 0o040)
    os.chmod(tmp_path, 0o755)
    dfd = os.open(tmp_path, os.O_RDONLY)
    yield dfd
    os.close(dfd)


def test_supplementary_groups_are_the_callers(group_only):
    from nfspd.fs import creds
    dfd = group_only
    with creds.as_caller(1234, 1234, (77,)):
        os.close(os.open("g", os.O_RDONLY, dir_fd=dfd))
    with creds.as_caller(1234, 1234, ()):
        with pytest.raises(PermissionError):
            os.open("g", os.O_RDONLY, dir_fd=dfd)


def _thread_groups():
    with open("/proc/thread-self/status") as f:
        line = next(ln for ln in f if ln.startswith("Groups:"))
    return sorted(int(g) for g in line.split()[1:])


def test_a_callers_primary_group_in_its_list_sets_no_supplementary_group(group_only):
    # Linux clients list the primary group among the supplementary ones; the
    # kernel checks the fsgid first, so the switch leaves the list out (and
    # its two setgroups calls) while the group's files stay reachable.
    from nfspd.fs import creds
    dfd = group_only
    with creds.as_caller(1234, 77, (77,)):
        assert _thread_groups() == []
        os.close(os.open("g", os.O_RDONLY, dir_fd=dfd))
    with creds.as_caller(1234, 1234, (1234, 77, 1234)):
        assert _thread_groups() == [77]
        os.close(os.open("g", os.O_RDONLY, dir_fd=dfd))
    with creds.as_caller(1234, 1234, (1234,)), pytest.raises(PermissionError):
        os.open("g", os.O_RDONLY, dir_fd=dfd)
    assert _thread_groups() == []


def test_local_data_path_verifier_changes_per_start(tmp_path):
    a = LocalDataPath(str(tmp_path / "d"))
    b = LocalDataPath(str(tmp_path / "d"))
    assert len(a.verifier) == 8 and a.verifier != b.verifier
    assert a.verifier == a.verifier


def test_no_space_is_nospc(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=256k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        env = Env(tmp_path)
        env.dp = LocalDataPath(str(mnt))
        env.fs.close()
        env.fs = env.make()
        fh = env.create(b"f")
        assert status_of(run, env.fs.write, fh, ROOT, 0, b"x" * (1 << 20), 2) == \
            nfsstat3.NFS3ERR_NOSPC
        env.fs.close()
        env.dp.store.close()
    finally:
        # Lazily: a purge thread of the data path may still hold a descriptor in it.
        os.system(f"umount -l {mnt}")


# --- the layers -------------------------------------------------------------------------


def test_each_file_system_layer_imports_only_the_layers_below_it():
    import ast
    import re
    import nfspd.fs
    order = re.findall(r"^    (\w+)\.py ", nfspd.fs.__doc__, re.M)
    package = os.path.dirname(nfspd.fs.__file__)
    assert sorted(order) == sorted(f[:-3] for f in os.listdir(package)
                                   if f.endswith(".py") and f != "__init__.py")
    for i, module in enumerate(order):
        with open(os.path.join(package, module + ".py")) as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "nfspd.fs":
                imported.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nfspd."):
                imported.add(node.module.split(".")[2] if node.module.startswith("nfspd.fs.")
                             else node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.startswith("nfspd"))
        assert imported <= set(order[:i]), f"{module} imports {imported - set(order[:i])}"


# --- atime (issue 16, case 3): READ advances it as a local read would ------------------

DAY_NS = 24 * 3600 * 10**9


def test_read_advances_atime_under_relatime_and_the_reply_shows_it(env):
    if not os.statvfs(str(env.root)).f_flag & os.ST_RELATIME:
        pytest.skip("the test directory is not on a relatime mount")
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"x" * 100, True)
    path = env.root / "f"
    old = os.stat(path).st_mtime_ns - 3 * DAY_NS
    os.utime(path, ns=(old, os.stat(path).st_mtime_ns))   # atime before mtime: relatime moves it
    data, _, attr = run(env.fs.read, fh, ROOT, 0, 10)
    assert data == b"x" * 10
    moved = os.stat(path).st_atime_ns
    assert moved > old and attr.atime_ns == moved
    # Now atime is after mtime and ctime, and younger than a day: relatime leaves it.
    run(env.fs.read, fh, ROOT, 0, 10)
    assert os.stat(path).st_atime_ns == moved


def test_the_metaservers_own_reads_leave_atime_alone(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"y" * 100, True)
    path = env.root / "f"
    old = os.stat(path).st_mtime_ns - 3 * DAY_NS
    os.utime(path, ns=(old, os.stat(path).st_mtime_ns))
    env.fs.close()
    env.fs = env.make()       # a restarted metaserver: its metafile cache is cold
    fh2, attr, _ = env.fs.lookup(env.fs.root_fh, b"f", ROOT)
    env.fs.getattr(fh2)
    run(env.fs.write, fh2, ROOT, 100, b"z", True)    # reads the metafile, writes it
    assert os.stat(path).st_atime_ns == old and attr.atime_ns == old


# --- a WRITE whose data did not land (issue 16, case 2) ---------------------------------


def test_a_failed_extending_write_gives_back_the_size_it_took(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"a" * 100, True)
    w1 = env.fs.write_plan_now(fh, ROOT, 100, 100, 2)
    assert env.fs.getattr(fh).size == 200
    env.fs.write_failed(w1)
    assert env.fs.getattr(fh).size == 100


def test_a_write_planned_after_the_failed_one_keeps_what_it_wrote(env):
    fh = env.create(b"f")
    run(env.fs.write, fh, ROOT, 0, b"a" * 100, True)
    w1 = env.fs.write_plan_now(fh, ROOT, 100, 100, 2)      # grows to 200, will fail
    w2 = env.fs.write_plan_now(fh, ROOT, 120, 10, 2)       # inside it, may have landed
    env.fs.write_failed(w1)
    assert env.fs.getattr(fh).size == 130
    assert w2.wcc.post.size == 200


def test_a_failed_write_leaves_a_size_grown_further_since(env):
    fh = env.create(b"f")
    w1 = env.fs.write_plan_now(fh, ROOT, 0, 100, 2)
    w2 = env.fs.write_plan_now(fh, ROOT, 100, 100, 2)      # grows to 200...
    env.fs.write_landed(w2)                                # ...and its data is in
    env.fs.write_failed(w1)
    assert env.fs.getattr(fh).size == 200
    env.fs.setattr(fh, ROOT, SetAttr(size=50))
    w3 = run(env.fs.write_plan, fh, ROOT, 50, 10, 2)     # (carries out the truncation)
    env.fs.setattr(fh, ROOT, SetAttr(size=500))            # a SETATTR set it since
    env.fs.write_failed(w3)
    assert env.fs.getattr(fh).size == 500


# --- a WRITE racing a truncation (issue 16, case 1) -------------------------------------


class GatedDataPath(LocalDataPath):
    """A local data path whose writes wait for ``gate`` (a data server slow to
    take them), logging what reaches the data in the order it does."""

    def __init__(self, directory):
        super().__init__(directory)
        self.gate = trio.Event()
        self.log = []

    async def write(self, meta, ino, offset, data, stable):
        await self.gate.wait()
        await super().write(meta, ino, offset, data, stable)
        self.log.append(("write", offset))

    async def truncate(self, meta, ino, size):
        self.log.append(("truncate", size))
        await super().truncate(meta, ino, size)


def test_a_truncation_waits_for_a_relayed_write_planned_before_it(tmp_path):
    env = Env(tmp_path)
    env.fs.close()
    env.dp = GatedDataPath(str(tmp_path / "data"))
    env.fs = env.make()
    fh = env.create(b"f")
    other = env.create(b"other")
    dp = env.dp

    async def main():
        plan = env.fs.write_plan_now(fh, ROOT, 100, 5, 2)
        async with trio.open_nursery() as n:
            n.start_soon(env.fs.write_data, plan, b"AAAAA")   # on its way, slowly
            await trio.testing.wait_all_tasks_blocked()
            env.fs.setattr(fh, ROOT, SetAttr(size=0))           # answered at once
            env.fs.setattr(other, ROOT, SetAttr(size=50))
            env.fs.setattr(other, ROOT, SetAttr(size=0))
            n.start_soon(env.fs.read, fh, ROOT, 0, 10)          # carries the cut out...
            await trio.testing.wait_all_tasks_blocked()
            assert dp.log == []                                  # ...not before the write
            await env.fs.read(other, ROOT, 0, 10)               # another file: no waiting
            assert dp.log == [("truncate", 0)]
            dp.gate.set()
        assert dp.log == [("truncate", 0), ("write", 100), ("truncate", 0)]
        # Grown again: the bytes of the write planned before the cut stay cut.
        env.fs.setattr(fh, ROOT, SetAttr(size=200))
        data, _, _ = await env.fs.read(fh, ROOT, 0, 200)
        assert data == bytes(200)
        # A WRITE planned after the cut is not held back by it, and stays.
        env.fs.setattr(fh, ROOT, SetAttr(size=0))
        await env.fs.write(fh, ROOT, 0, b"late", 2)
        data, _, _ = await env.fs.read(fh, ROOT, 0, 200)
        assert data == b"late"
    try:
        trio.run(main)
    finally:
        env.fs.close()


# --- group commit (issue 15) --------------------------------------------------------------


class CommitEnv(Env):
    def __init__(self, tmp_path):
        from nfspd.fs.commit import GroupCommit
        self.commit = GroupCommit()
        super().__init__(tmp_path)

    def make(self):
        return MetaFS(str(self.root), 42, KEY, self.dp,
                      purge=lambda ino, seed: self.purged.append((ino, seed)),
                      commit=self.commit)


@pytest.fixture
def cenv(tmp_path):
    e = CommitEnv(tmp_path)
    yield e
    e.fs.close()


def test_a_namespace_change_waits_for_a_flush_and_the_purge_for_the_removal_to_be_durable(cenv):
    fs = cenv.fs
    assert fs.stable_ticket() is None
    fh = cenv.create(b"f")
    run(fs.write, fh, ROOT, 0, b"x", True)
    ticket = fs.stable_ticket()
    assert ticket is not None
    run(fs.stable, ticket)
    assert fs.stable_ticket() is None and cenv.commit.batches == 1
    ino = os.stat(cenv.root / "f").st_ino
    fs.remove(fs.root_fh, b"f", ROOT)
    assert cenv.purged == []            # not before the removal is on disk
    run(fs.stable, fs.stable_ticket())
    assert [i for i, _ in cenv.purged] == [ino]


def test_one_flush_covers_the_changes_of_every_call_received_meanwhile(cenv):
    fs = cenv.fs
    d, _, _ = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())

    async def call(i):
        # What a front-end does: the change, then its reply once durable.
        fs.create(d, b"f%d" % i, ROOT, UNCHECKED, SetAttr())
        fs.rename(d, b"f%d" % i, fs.root_fh, b"g%d" % i, ROOT)
        await fs.stable(fs.stable_ticket())

    async def main():
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(call, i)
    run(main)
    assert cenv.commit.batches == 1 and fs.stable_ticket() is None
    assert sorted(os.listdir(cenv.root)) == sorted(["d"] + ["g%d" % i for i in range(20)])
    # What `nfsp status` reports of it: one flush for the 20 calls that waited.
    assert cenv.commit.waits == 20 and cenv.commit.seconds > 0


def test_an_async_callers_changes_wait_for_nothing_and_purge_at_once(cenv):
    fs = cenv.fs
    lazy = Caller(0, 0, sync=False)
    fh, _, _ = fs.create(fs.root_fh, b"f", lazy, UNCHECKED, SetAttr())
    run(fs.write, fh, lazy, 0, b"x", True)
    fs.rename(fs.root_fh, b"f", fs.root_fh, b"g", lazy)
    fs.remove(fs.root_fh, b"g", lazy)
    assert fs.stable_ticket() is None and len(cenv.purged) == 1
    assert cenv.commit.waits == 0 and cenv.commit.batches == 0


def test_a_flushed_directory_stays_open_for_the_next_flush_until_it_is_removed(cenv):
    fs = cenv.fs
    d, _, _ = fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())
    run(fs.stable, fs.stable_ticket())
    ino = os.stat(cenv.root / "d").st_ino

    def kept():
        return {os.fstat(fd).st_ino for fd in cenv.commit._kept.values()}
    for i in range(3):
        fs.create(d, b"f%d" % i, ROOT, UNCHECKED, SetAttr())
        run(fs.stable, fs.stable_ticket())
    assert ino in kept()
    for i in range(3):
        fs.remove(d, b"f%d" % i, ROOT)
    fs.rmdir(fs.root_fh, b"d", ROOT)
    run(fs.stable, fs.stable_ticket())
    # Kept open, a removed directory's inode could not be freed.
    assert ino not in kept()


class JournalSink:
    """A purge sink like nfspd's: a journal, and a reader to wake."""

    def __init__(self):
        self.journal, self.wakes = [], 0

    def __call__(self, ino, seed):
        self.journal.append(ino)
        self.wakes += 1

    def append_unsynced(self, ino, seed):
        self.journal.append(ino)

    def wake(self):
        self.wakes += 1


def test_an_async_removal_is_in_the_journal_at_once_and_its_reader_woken_once_for_many(
        tmp_path):
    from nfspd.fs.commit import DEFER, GroupCommit
    env = Env(tmp_path)
    sink = JournalSink()
    env.fs.close()
    env.fs = fs = MetaFS(str(env.root), 42, KEY, env.dp, purge=sink, commit=GroupCommit())
    lazy = Caller(0, 0, sync=False)
    try:
        for i in range(6):
            env.written(fs.create(fs.root_fh, b"f%d" % i, lazy, UNCHECKED, SetAttr())[0], lazy)
        inos = [os.stat(env.root / ("f%d" % i)).st_ino for i in range(6)]
        fs.remove(fs.root_fh, b"f0", lazy)   # no event loop: woken at once
        assert (sink.journal, sink.wakes) == (inos[:1], 1)

        async def main():
            fs.remove(fs.root_fh, b"f1", lazy)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(2, 6):  # later calls, within DEFER of the first
                fs.remove(fs.root_fh, b"f%d" % i, lazy)
            # In the journal before the REMOVEs are answered (kill -9 keeps it).
            assert sink.journal == inos and sink.wakes == 1
            await trio.sleep(DEFER)
            await trio.testing.wait_all_tasks_blocked()
            assert sink.wakes == 2      # one wake-up for the five, DEFER after the first
            await trio.sleep(DEFER * 2)
            assert sink.wakes == 2
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        fs.close()


def test_concurrent_creates_renames_and_removes_never_leave_a_torn_namespace(cenv):
    """Many callers in two directories, each call answered once durable
    (their changes interleave at every flush): every name leads to a live
    file, each new file has one name, and exactly the data of the removed
    files that were written to is purged (what `nfsp scrub` would find
    leaked or lost: nothing; a file never written has no data anywhere)."""
    fs = cenv.fs
    dirs = [fs.mkdir(fs.root_fh, b"d%d" % i, ROOT, SetAttr())[0] for i in range(2)]
    rng = random.Random(15)
    plans = [[(rng.randrange(2), rng.randrange(2), rng.random()) for _ in range(12)]
             for _ in range(8)]
    made = set()  # (ino, seed) of every file created (ext4 reuses inode numbers)
    written = set()  # of those, the ones written to

    async def caller(c, plan):
        for k, (here, there, roll) in enumerate(plan):
            name = b"n%d" % rng.randrange(6)  # names shared between callers
            try:
                if roll < 0.5:
                    fh, attr, _ = fs.create(dirs[here], name, ROOT, GUARDED, SetAttr())
                    path = cenv.root / ("d%d" % here) / os.fsdecode(name)
                    made.add((attr.fileid, metarecord.of_path(path).seed))
                    if roll < 0.3:
                        written.add((attr.fileid, metarecord.of_path(path).seed))
                        await fs.write(fh, ROOT, 0, b"d", False)
                elif roll < 0.75:
                    fs.rename(dirs[here], name, dirs[there], b"n%d" % rng.randrange(6), ROOT)
                else:
                    fs.remove(dirs[here], name, ROOT)
            except FsError as e:
                assert e.status in (nfsstat3.NFS3ERR_EXIST, nfsstat3.NFS3ERR_NOENT)
            ticket = fs.stable_ticket()
            if ticket is not None:
                await fs.stable(ticket)
            else:
                await trio.sleep(0)

    async def main():
        async with trio.open_nursery() as nursery:
            for c, plan in enumerate(plans):
                nursery.start_soon(caller, c, plan)
    run(main)
    assert cenv.commit.batches < sum(len(p) for p in plans)  # they did share flushes

    live = set()
    for i, d in enumerate(dirs):
        path = cenv.root / ("d%d" % i)
        listed = sorted(e.name for e in fs.readdir(d, 0, None, ROOT, 1000)[0]
                        if e.name not in (b".", b".."))
        assert listed == sorted(os.fsencode(n) for n in os.listdir(path))
        for name in listed:
            fh, attr, _ = fs.lookup(d, name, ROOT)        # no name pointing at nothing
            assert attr.nlink == 1                        # one name per file
            live.add((attr.fileid, metarecord.of_path(path / os.fsdecode(name)).seed))
    assert len(live) == sum(len(os.listdir(cenv.root / ("d%d" % i))) for i in range(2))
    purged = set(cenv.purged)
    assert len(purged) == len(cenv.purged)                # each purged once
    assert not purged & live                              # no live file's data
    assert purged == written - live                       # every removed file's data
    assert made - written - live                          # (files never written went too)


def test_a_flush_lets_others_go_first_only_when_something_else_could_run(cenv, monkeypatch):
    # The two yields before a flush let other receive loops note their
    # changes; when nothing else could run (common/runtime/idlewait.py's
    # quiet()) they are two passes through trio for nothing.
    import nfspd.fs.commit as commit_module
    slept = []
    real_sleep = trio.sleep

    async def sleep(seconds):
        slept.append(seconds)
        await real_sleep(seconds)
    monkeypatch.setattr(commit_module.trio, "sleep", sleep)
    fs = cenv.fs
    for quiet in (True, False):
        monkeypatch.setattr(commit_module.idlewait, "quiet", lambda: quiet)
        cenv.create(b"q%d" % quiet)
        run(fs.stable, fs.stable_ticket())
        assert fs.stable_ticket() is None
    assert slept == [0, 0]  # (the second flush's, not the first's)


@pytest.mark.parametrize("commits_all", [False, True])
def test_a_new_directory_is_flushed_with_its_parent_unless_that_commit_carries_it(
        cenv, monkeypatch, commits_all):
    # Linux nfsd commits the object MKDIR made and its parent; without a
    # journal the parent's fsync alone leaves the new directory unwritten.
    # On ext3/ext4 with one that fsync commits the new directory too: it
    # alone is made.
    import nfspd.fs.commit
    fsynced = []
    real = os.fsync

    def fsync(fd):
        fsynced.append(os.fstat(fd).st_ino)
        real(fd)
    monkeypatch.setattr(nfspd.fs.commit.os, "fsync", fsync)
    fs = cenv.fs
    fs._objects.dir_fsync_commits_all = commits_all
    fs.mkdir(fs.root_fh, b"d", ROOT, SetAttr())
    run(fs.stable, fs.stable_ticket())
    made = [] if commits_all else [os.stat(cenv.root / "d").st_ino]
    assert sorted(fsynced) == sorted([os.stat(cenv.root).st_ino, *made])


@pytest.mark.parametrize("commits_all", [False, True])
def test_new_metafiles_are_fsynced_unless_the_directorys_fsync_commits_them(
        cenv, monkeypatch, commits_all):
    # On ext3/ext4 with a journal the directory's fsync commits the whole
    # transaction, the metafiles' records (attributes: metadata) included.
    # Elsewhere each is fsynced: an fdatasync need not write an attribute.
    import nfspd.fs.commit
    calls = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    monkeypatch.setattr(nfspd.fs.commit.os, "fsync", lambda fd: (
        calls.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd)))
    monkeypatch.setattr(nfspd.fs.commit.os, "fdatasync", lambda fd: (
        calls.append(("fdatasync", os.fstat(fd).st_ino)), real_fdatasync(fd)))
    fs = cenv.fs
    fs._objects.dir_fsync_commits_all = commits_all
    for name in (b"a", b"b", b"c"):
        cenv.create(name)
    run(fs.stable, fs.stable_ticket())
    files = sorted(os.stat(cenv.root / n).st_ino for n in ("a", "b", "c"))
    # The directory first, once, whatever follows.
    assert calls[0] == ("fsync", os.stat(cenv.root).st_ino)
    assert sorted(ino for _, ino in calls[1:]) == ([] if commits_all else files)
    assert {what for what, _ in calls} == {"fsync"}


def written_out(cenv, monkeypatch):
    """The inodes whose pages the group commit writes out before its flush."""
    import nfspd.fs.commit
    inos = []
    real = nfspd.fs.commit.start_writeback
    monkeypatch.setattr(nfspd.fs.commit, "start_writeback", lambda fd: (
        inos.append(os.fstat(fd).st_ino), real(fd)))
    return inos


def test_a_new_metafiles_record_is_an_attribute_that_the_journal_commit_takes(cenv, monkeypatch):
    # Metadata: no block to allocate and write out before the commit. Set
    # as the caller (an ordinary user), which a trusted attribute allows:
    # the switch to a caller's file-system ids keeps CAP_SYS_ADMIN.
    inos = written_out(cenv, monkeypatch)
    cenv.fs._objects.dir_fsync_commits_all = True
    os.chmod(cenv.root, 0o777)
    cenv.create(b"a", ALICE)
    run(cenv.fs.stable, cenv.fs.stable_ticket())
    assert inos == []
    path = cenv.root / "a"
    assert os.stat(path).st_uid == ALICE.uid and os.stat(path).st_blocks == 0
    assert os.getxattr(path, metarecord.XATTR) == metarecord.of_path(path).encode()


def test_without_trusted_attributes_a_new_metafiles_record_is_written_out_as_data(
        cenv, monkeypatch):
    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, "no trusted attributes")
    monkeypatch.setattr(metarecord.os, "setxattr", unsupported)
    inos = written_out(cenv, monkeypatch)
    cenv.fs._objects.dir_fsync_commits_all = True
    cenv.create(b"a")
    run(cenv.fs.stable, cenv.fs.stable_ticket())
    assert inos == [os.stat(cenv.root / "a").st_ino]
    data = (cenv.root / "a").read_bytes()
    assert Metafile.decode(data[:META_SIZE]) == metarecord.of_path(cenv.root / "a")
    assert len(data) == META_HEADER


class AppendingSink:
    """A purge sink whose journal grows on device ``appended_on`` (or None:
    preallocated), as nfspd/purgequeue.py's; it notes when it is flushed."""

    def __init__(self, calls, device):
        self.calls, self.device = calls, device

    def __call__(self, ino, seed):
        raise AssertionError("a sync export's purge goes through the group commit")

    def append_batch(self, records):
        self.calls.append(("journal", [ino for ino, _ in records]))

    def appended_on(self):
        return self.device


@pytest.mark.parametrize("journal_on, commits_all, first", [
    ("export", True, True),       # an ext4 with its journal, shared with the export
    ("export", False, False),     # xfs, btrfs: a fsync commits what it syncs
    ("elsewhere", True, False),   # the journal on another file system
    (None, True, False),          # a preallocated journal: its fdatasync commits nothing
])
def test_a_removals_purge_is_flushed_first_only_where_its_journals_commit_carries_the_removal(
        tmp_path, monkeypatch, journal_on, commits_all, first):
    # One commit instead of two (nfspd/fs/commit.py, step 5); anywhere else
    # the removal must be durable before its purge is.
    import nfspd.fs.commit
    from nfspd.fs.commit import GroupCommit
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(nfspd.fs.commit.os, "fsync", lambda fd: (
        calls.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd)))
    env = Env(tmp_path)
    env.fs.close()
    dev = os.stat(env.root).st_dev
    sink = AppendingSink(calls, {"export": dev, "elsewhere": dev + 1, None: None}[journal_on])
    env.fs = fs = MetaFS(str(env.root), 42, KEY, env.dp, purge=sink, commit=GroupCommit())
    try:
        fs._objects.dir_fsync_commits_all = commits_all
        env.written(env.create(b"f"))
        run(fs.stable, fs.stable_ticket())
        ino = os.stat(env.root / "f").st_ino
        calls.clear()
        fs.remove(fs.root_fh, b"f", ROOT)
        run(fs.stable, fs.stable_ticket())
        purge, dir_sync = ("journal", [ino]), ("fsync", os.stat(env.root).st_ino)
        assert calls == ([purge, dir_sync] if first else [dir_sync, purge])
    finally:
        fs.close()


@pytest.mark.parametrize("journalled", [False, True])
def test_symlinks_and_device_nodes_are_flushed_by_syncing_a_file_system_without_a_journal(
        cenv, monkeypatch, journalled):
    # A symlink or a fifo cannot be fsynced from user space, and without a
    # journal its parent's fsync does not write its inode: the flush syncs
    # the file system, once for every such change in it (nfspd/fs/journal.py).
    import nfspd.fs.commit
    synced = []
    monkeypatch.setattr(nfspd.fs.commit, "syncfs", lambda fd: synced.append(os.fstat(fd).st_dev))
    fs = cenv.fs
    fs._objects.parent_fsync_suffices = journalled
    fs.symlink(fs.root_fh, b"l", ROOT, b"target", SetAttr())
    fs.mknod(fs.root_fh, b"p", ROOT, FileType.FIFO, SetAttr())
    run(fs.stable, fs.stable_ticket())
    assert synced == ([] if journalled else [os.stat(cenv.root).st_dev])
    fs.symlink(fs.root_fh, b"l2", Caller(0, 0, sync=False), b"target", SetAttr())
    assert fs.stable_ticket() is None and len(synced) == (0 if journalled else 1)  # async: no


def test_without_a_group_commit_a_symlink_syncs_the_file_system_at_once(env, monkeypatch):
    import nfspd.fs.objects
    synced = []
    monkeypatch.setattr(nfspd.fs.objects, "syncfs", lambda fd: synced.append(os.fstat(fd).st_ino))
    env.fs._objects.parent_fsync_suffices = False
    env.fs.symlink(env.fs.root_fh, b"l", ROOT, b"target", SetAttr())
    assert synced == [os.stat(env.root).st_ino]


def test_a_created_file_has_the_mode_asked_whatever_the_daemons_umask(env):
    fs = env.fs
    old = os.umask(0o077)
    try:
        for name, mode in ((b"open", 0o666), (b"kept", 0o600), (b"group", 0o664)):
            _, attr, _ = fs.create(fs.root_fh, name, ROOT, UNCHECKED, SetAttr(mode=mode))
            assert attr.mode == mode
            assert stat.S_IMODE(os.stat(env.root / name.decode()).st_mode) == mode
    finally:
        os.umask(old)


@pytest.mark.parametrize("sync", [True, False])
def test_a_removed_files_last_descriptor_is_closed_after_the_replies_of_its_time(cenv, sync):
    # That close frees the inode (a discard on some mounts): not in REMOVE's
    # latency, but in the closing thread, with the closes of the next DEFER.
    from nfspd.fs.commit import DEFER
    fs = cenv.fs
    caller = ROOT if sync else Caller(0, 0, sync=False)
    fs.create(fs.root_fh, b"f", caller, UNCHECKED, SetAttr())
    run(fs.stable, fs.stable_ticket() or 0)
    ino = os.stat(cenv.root / "f").st_ino
    fd = fs._objects.codec.cached_inode(ino)[0]

    def is_open():
        try:
            return os.fstat(fd).st_ino == ino
        except OSError:
            return False

    async def main():
        fs.remove(fs.root_fh, b"f", caller)
        assert is_open()  # the reply goes first
        ticket = fs.stable_ticket()
        if sync:
            assert ticket is not None
            await fs.stable(ticket)
        await trio.sleep(0)
        assert is_open() and cenv.commit._closer is None  # not at the next turn yet
        await trio.sleep(DEFER)
        await trio.testing.wait_all_tasks_blocked()
    run(main)
    # Handed to the closing thread: closed once it has run.
    closer = cenv.commit._closer
    assert closer is not None
    deadline = time.monotonic() + 30
    while is_open() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not is_open()
