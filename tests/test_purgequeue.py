"""The metaserver's purge sink (nfspd/purgequeue.py) under the real MetaFS:
what REMOVE and RENAME journal, and the wake-ups unlinkd gets."""

import os
import pathlib
import socket

import pytest
import trio

from common.runtime import metarecord, purgejournal, purgewaker
from nfspd.datapath import LocalDataPath
from nfspd.fs.metafs import MetaFS
from nfspd.fs.types import Caller, CreateHow, SetAttr
from nfspd.purgequeue import PURGE_DIR, open_purge_queue
from tools.dev import loopfs

KEY = b"export secret key 0123456789abcd"
ROOT = Caller(0, 0)


class Env:
    def __init__(self, tmp_path):
        self.root = tmp_path / "export"
        self.root.mkdir()
        self.state = tmp_path / "state"
        self.queue = open_purge_queue(str(self.state))
        self.dp = LocalDataPath(str(tmp_path / "data"))
        self.fs = MetaFS(str(self.root), 7, KEY, self.dp, purge=self.queue)

    def create(self, name, d=None, data=b"d"):
        """A new file, ``data`` written to it (a file never written has no
        data to purge: see the tests of that)."""
        fh, _, _ = self.fs.create(d or self.fs.root_fh, name, ROOT, CreateHow.UNCHECKED,
                                  SetAttr(mode=0o644))
        if data:
            trio.run(self.fs.write, fh, ROOT, 0, data, 2)
        return fh

    def identity(self, name):
        path = self.root / os.fsdecode(name)
        return os.stat(path).st_ino, metarecord.of_path(path).seed

    def journaled(self):
        return purgejournal.JournalReader(self.queue.directory).pending()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.fs.close()
    e.queue.close()


def test_the_journal_lives_in_the_state_directory(env):
    assert env.queue.directory == str(env.state / PURGE_DIR)
    env.create(b"f")
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    assert purgejournal.list_segments(env.queue.directory)


def test_removing_the_last_link_journals_inode_and_seed(env):
    env.create(b"f")
    ident = env.identity(b"f")
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    assert env.journaled() == [ident]


def test_with_a_group_commit_removals_journal_once_durable_or_at_once_for_async(env):
    from nfspd.fs.commit import GroupCommit
    env.fs.close()
    env.fs = MetaFS(str(env.root), 7, KEY, env.dp, purge=env.queue, commit=GroupCommit())
    env.create(b"f")
    env.create(b"g")
    f, g = env.identity(b"f"), env.identity(b"g")
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    assert env.journaled() == []          # waits for the removal's flush
    trio.run(env.fs.stable, env.fs.stable_ticket())
    assert env.journaled() == [f]
    env.fs.remove(env.fs.root_fh, b"g", Caller(0, 0, sync=False))
    assert env.journaled() == [f, g]      # async: journaled at once, unflushed


def test_removing_one_of_several_hard_links_journals_nothing(env):
    fh = env.create(b"f")
    ident = env.identity(b"f")
    env.fs.link(fh, env.fs.root_fh, b"g", ROOT)
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    assert env.journaled() == []
    env.fs.remove(env.fs.root_fh, b"g", ROOT)
    assert env.journaled() == [ident]


def test_rename_over_a_file_journals_exactly_the_replaced_one(env):
    env.create(b"a")
    env.create(b"b")
    replaced = env.identity(b"b")
    env.fs.rename(env.fs.root_fh, b"a", env.fs.root_fh, b"b", ROOT)
    assert env.journaled() == [replaced]


def test_rename_over_a_hard_linked_file_or_onto_itself_journals_nothing(env):
    env.create(b"a")
    fh_b = env.create(b"b")
    env.fs.link(fh_b, env.fs.root_fh, b"b2", ROOT)
    env.fs.rename(env.fs.root_fh, b"a", env.fs.root_fh, b"b", ROOT)  # b2 keeps it alive
    env.fs.link(env.fs.lookup(env.fs.root_fh, b"b", ROOT)[0], env.fs.root_fh, b"c", ROOT)
    env.fs.rename(env.fs.root_fh, b"b", env.fs.root_fh, b"c", ROOT)  # same file: no-op
    assert env.journaled() == []


def test_a_file_never_written_to_journals_nothing(env):
    # Nothing ever reached a data server: there is nothing to purge, and
    # unlinkd and the iods are spared the work (issue 15: a CREATE+REMOVE
    # of empty files, over TCP, 8 clients: sync +11-17% pairs/s).
    env.create(b"empty", data=b"")
    trio.run(env.fs.write, env.fs.lookup(env.fs.root_fh, b"empty", ROOT)[0], ROOT, 5, b"", 2)
    env.fs.setattr(env.fs.lookup(env.fs.root_fh, b"empty", ROOT)[0], ROOT, SetAttr(size=4096))
    assert metarecord.of_path(env.root / "empty").no_data  # a size, but still no data
    env.fs.remove(env.fs.root_fh, b"empty", ROOT)
    env.create(b"a", data=b"")
    env.create(b"b", data=b"")
    env.fs.rename(env.fs.root_fh, b"a", env.fs.root_fh, b"b", ROOT)
    env.fs.remove(env.fs.root_fh, b"b", ROOT)
    assert env.journaled() == []


def test_a_file_written_once_journals_even_when_emptied_again(env):
    fh = env.create(b"f", data=b"")
    trio.run(env.fs.write, fh, ROOT, 0, b"x", 0)  # UNSTABLE: the flag's change too
    assert not metarecord.of_path(env.root / "f").no_data
    env.fs.setattr(fh, ROOT, SetAttr(size=0))
    # Written within a size a SETATTR gave it: data all the same.
    g = env.create(b"g", data=b"")
    env.fs.setattr(g, ROOT, SetAttr(size=4096))
    trio.run(env.fs.write, g, ROOT, 0, b"x", 2)
    idents = [env.identity(b"f"), env.identity(b"g")]
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    env.fs.remove(env.fs.root_fh, b"g", ROOT)
    assert env.journaled() == idents


def test_a_layout_for_writing_makes_a_file_one_to_purge_before_the_client_writes(env):
    # pNFS: the client's data goes straight to the data servers, never
    # through WRITE here: LAYOUTGET's settled(write=True) clears the flag.
    fh = env.create(b"r", data=b"")
    trio.run(env.fs.settled, fh)                       # a layout for reading
    assert metarecord.of_path(env.root / "r").no_data
    trio.run(env.fs.settled, fh, True)                 # for writing
    assert not metarecord.of_path(env.root / "r").no_data
    ident = env.identity(b"r")
    env.fs.remove(env.fs.root_fh, b"r", ROOT)
    assert env.journaled() == [ident]


def test_directories_and_symlinks_journal_nothing(env):
    env.fs.mkdir(env.fs.root_fh, b"d", ROOT, SetAttr(mode=0o755))
    env.fs.symlink(env.fs.root_fh, b"s", ROOT, b"target", SetAttr())
    env.fs.remove(env.fs.root_fh, b"s", ROOT)
    env.fs.rmdir(env.fs.root_fh, b"d", ROOT)
    assert env.journaled() == []


@pytest.fixture(params=[True, False], ids=["journal", "no-journal"])
def ext4(request, tmp_path):
    """A real ext4 on a loop device, made as mke2fs makes it, and without its
    journal: (mount point, whether it journals)."""
    with loopfs.ext4(str(tmp_path), journal=request.param) as mnt:
        yield pathlib.Path(mnt), request.param


def test_on_a_journalled_ext4_shared_with_an_export_one_commit_makes_purge_and_removal_durable(
        ext4, tmp_path, monkeypatch):
    from nfspd.fs.commit import GroupCommit
    mnt, journalled = ext4
    root = mnt / "export"
    root.mkdir()
    queue = open_purge_queue(str(mnt / "state"))
    dp = LocalDataPath(str(tmp_path / "data"))  # (keeps its directory open)
    commit = GroupCommit()
    fs = MetaFS(str(root), 7, KEY, dp, purge=queue, commit=commit)
    try:
        assert fs.dir_fsync_commits_all is journalled
        queue.export_on(fs.dev + 1, True)  # (another file system's export changes nothing)
        assert queue.appended_on() is None
        queue.export_on(fs.dev, fs.dir_fsync_commits_all)  # as nfspd does for each export
        assert queue.appended_on() == (fs.dev if journalled else None)
        for name in (b"e", b"f"):
            fh, _, _ = fs.create(fs.root_fh, name, ROOT, CreateHow.UNCHECKED, SetAttr(mode=0o644))
            trio.run(fs.write, fh, ROOT, 0, b"d", 2)
        e = os.stat(root / "e").st_ino, metarecord.of_path(root / "e").seed
        fs.remove(fs.root_fh, b"e", ROOT)  # (the journal's first record makes its segment)
        trio.run(fs.stable, fs.stable_ticket())
        ino, seed = os.stat(root / "f").st_ino, metarecord.of_path(root / "f").seed
        calls = []
        real_fsync, real_fdatasync = os.fsync, os.fdatasync
        monkeypatch.setattr(os, "fsync", lambda fd: (
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
        monkeypatch.setattr(os, "fdatasync", lambda fd: (
            calls.append(("fdatasync", os.readlink(f"/proc/self/fd/{fd}"))), real_fdatasync(fd)))
        fs.remove(fs.root_fh, b"f", ROOT)
        trio.run(fs.stable, fs.stable_ticket())
        segment = purgejournal.list_segments(queue.directory)[-1][1]
        purge, dir_sync = ("fdatasync", segment), ("fsync", str(root))
        if journalled:
            # The record appended: its fdatasync commits jbd2's transaction,
            # the removal in it; the directory's fsync finds it done.
            assert calls == [purge, dir_sync]
            assert os.path.getsize(segment) == 2 * purgejournal.RECORD.size
        else:
            assert calls == [dir_sync, purge]
        assert purgejournal.JournalReader(queue.directory, durable=True).pending() == [
            e, (ino, seed)]
    finally:
        fs.close()
        commit.close()
        queue.close()


def test_journal_survives_a_metaserver_restart(env, tmp_path):
    env.create(b"f")
    ident = env.identity(b"f")
    env.fs.remove(env.fs.root_fh, b"f", ROOT)
    env.queue.close()
    env.queue = open_purge_queue(str(env.state))  # the restarted metaserver
    env.fs.close()
    env.fs = MetaFS(str(env.root), 7, KEY, env.dp, purge=env.queue)
    env.create(b"g")
    ident2 = env.identity(b"g")
    env.fs.remove(env.fs.root_fh, b"g", ROOT)
    assert env.journaled() == [ident, ident2]


def test_each_append_wakes_unlinkd_and_a_missing_unlinkd_costs_nothing(env):
    env.queue(1, 2)  # nobody listening yet: dropped, not an error
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(purgewaker.socket_path(env.queue.directory))
    sock.settimeout(5)
    try:
        env.queue(3, 4)
        assert sock.recv(16) == purgewaker.WAKE
    finally:
        sock.close()
    assert env.queue.appended == 2


def test_long_journal_paths_still_reach_the_socket(tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    q = open_purge_queue(str(deep))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with purgewaker.ShortPath(purgewaker.socket_path(q.directory)) as addr:
        sock.bind(addr)
    sock.settimeout(5)
    try:
        q(5, 6)
        assert sock.recv(16) == purgewaker.WAKE
    finally:
        sock.close()
        q.close()


# --- the supervised unlinkd child ------------------------------------------------------


def _cluster_files(tmp_path):
    from common import keyfile
    key = str(tmp_path / "key")
    keyfile.generate(key)
    iods = tmp_path / "iods.conf"
    iods.write_text("127.0.0.1:9\n")  # nothing listens: unlinkd keeps the purges and retries
    return key, str(iods)


def test_spawned_unlinkd_is_restarted_after_a_crash_and_stopped_with_the_server(tmp_path):
    import signal

    import trio

    from nfspd.purgequeue import spawn_unlinkd
    key, iods = _cluster_files(tmp_path)
    queue = open_purge_queue(str(tmp_path / "state"))
    child = spawn_unlinkd(queue.directory, iods, key, log_level="warning")
    pids = []

    async def scenario():
        async with trio.open_nursery() as nursery:
            await nursery.start(child.run)
            first = child.process
            pids.append(first.pid)
            first.send_signal(signal.SIGKILL)
            with trio.fail_after(30):
                while child.starts < 2:
                    await trio.sleep(0.05)
            pids.append(child.process.pid)
            nursery.cancel_scope.cancel()
        return child.process

    last = trio.run(scenario)
    queue.close()
    assert pids[0] != pids[1]
    assert last.returncode is not None  # stopped with its nursery, not left behind
    assert "--parent-pid" in child.argv()


def test_unlinkd_refuses_a_readable_key_and_a_second_instance(tmp_path):
    import subprocess
    import sys

    from tools.dev import REPO
    key, iods = _cluster_files(tmp_path)
    journal_dir = str(tmp_path / "state" / PURGE_DIR)
    argv = [sys.executable, "-m", "unlinkd.cli", "--journal", journal_dir, "--iods", iods,
            "--key", key]
    env = dict(os.environ, PYTHONPATH=REPO)
    os.chmod(key, 0o644)
    bad = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "chmod 600" in bad.stderr
    os.chmod(key, 0o600)
    first = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        from tools.dev.netns import wait_until
        wait_until(lambda: os.path.exists(purgewaker.socket_path(journal_dir)), 20,
                   what="unlinkd bound its socket", abort=lambda: first.poll() is not None
                   and f"unlinkd exited: {first.stderr.read()}")
        second = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "another unlinkd" in second.stderr
    finally:
        first.terminate()
        assert first.wait(timeout=20) == 0
